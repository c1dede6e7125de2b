"""projects.preflight's checks on real files, sockets and a real SQLite registry: each refusal is
one line naming the problem; a refused check opens nothing it should not (no store is created).
The make targets that run it are tested in tests/integration/test_make_targets.py."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflowserver import MLFLOW_HTTP_DEFAULTS
from model.data import PROJECT_ROOT
from model.registry import model_metadata
from projects import preflight
from projects.preflight import Refusal
from testbed.processes import LOOPBACK, free_port, process_env
from tests.integration.servers import write_tiny_pyfunc


def refusal(check, *args) -> str:
    with pytest.raises(Refusal) as refused:
        check(*args)
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_an_input_file_must_exist_and_be_a_file(tmp_path):
    assert (
        refusal(preflight.check_input, tmp_path / "in.csv")
        == f"input file {tmp_path / 'in.csv'} does not exist"
    )
    assert refusal(preflight.check_input, tmp_path) == f"input {tmp_path} is not a file"
    (tmp_path / "in.csv").write_text("longitude\n")
    preflight.check_input(tmp_path / "in.csv")


def test_an_output_needs_an_existing_folder_and_is_not_one(tmp_path):
    missing = tmp_path / "nowhere" / "out.json"
    assert (
        refusal(preflight.check_output, missing)
        == f"output {missing}: folder {missing.parent} does not exist"
    )
    assert refusal(preflight.check_output, tmp_path) == f"output {tmp_path} is a folder"
    preflight.check_output(tmp_path / "out.json")


def test_a_port_someone_listens_on_is_refused_naming_the_variable_that_moves_it():
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert refusal(preflight.check_port_free, LOOPBACK, port, "PORT") == (
            f"port {port} on {LOOPBACK} is already in use: stop what listens there,"
            f" or choose another port, e.g. PORT={port + 1}"
        )
    preflight.check_port_free(LOOPBACK, port, "PORT")  # free again once the listener closed


def test_a_host_that_is_not_this_machine_is_refused():
    # 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
    assert refusal(preflight.check_port_free, "192.0.2.1", free_port()).startswith(
        "cannot listen on 192.0.2.1:"
    )


@contextlib.contextmanager
def tracking_uri(uri: str):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(previous)


def test_a_missing_sqlite_store_is_refused_and_not_created(tmp_path):
    database = tmp_path / "mlflow.db"
    with tracking_uri(f"sqlite:///{database}"):
        assert refusal(preflight.check_model, "models:/CaliforniaHousingRegressor@champion") == (
            "model models:/CaliforniaHousingRegressor@champion:"
            f" there is no MLflow store at {database} yet (`make train` makes one)"
        )
    assert not database.exists()


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    """A real SQLite registry: model ``Housing`` version 1 (a tiny pyfunc) with alias ``champion``."""
    root = tmp_path_factory.mktemp("registry")
    with tracking_uri(f"sqlite:///{root / 'mlflow.db'}") as uri:
        client = MlflowClient()
        client.create_registered_model("Housing")
        version = client.create_model_version("Housing", source=str(write_tiny_pyfunc(root / "tiny")))
        client.set_registered_model_alias("Housing", "champion", version.version)
        yield uri


def test_a_model_uri_that_resolves_passes(registry):
    for uri in ("models:/Housing@champion", "models:/Housing/1", "models:/Housing/latest"):
        preflight.check_model(uri)


@pytest.mark.parametrize(
    "uri, problem",
    [
        ("models:/Housng@champion", "Registered Model with name=Housng not found"),
        ("models:/Housing@champoin", "Registered model alias champoin not found"),
        ("models:/Housing/7", "Model Version (name=Housing, version=7) not found"),
    ],
)
def test_a_misspelt_model_alias_or_version_is_refused_with_what_the_registry_holds(registry, uri, problem):
    assert refusal(preflight.check_model, uri) == (
        f"model {uri}: {problem}; {registry} holds Housing (@champion = version 1)"
    )


class Identity(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_a_model_directory_copied_out_of_its_store_passes(tmp_path):
    with tracking_uri(f"sqlite:///{tmp_path / 'trained.db'}"):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=Identity())
        copy = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "copy"))
    with tracking_uri(f"sqlite:///{tmp_path / 'other.db'}"):
        # Why the check reads the MLmodel itself: MLflow 3's get_model_info also fetches the
        # logged model it names from the current store, which does not hold it.
        with pytest.raises(MlflowException, match="Logged model with ID .* not found"):
            mlflow.models.get_model_info(copy)
        preflight.check_model(copy)
        assert model_metadata(copy).model_id == info.model_id


def test_a_missing_local_model_directory_is_refused(tmp_path):
    assert refusal(preflight.check_model, str(tmp_path)).startswith(f"model {tmp_path}: ")


def test_an_unreachable_registry_is_named(monkeypatch):
    # The check sets mlflowserver's retry settings where unset: set each here, so they are undone.
    for key, value in {**MLFLOW_HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}.items():
        monkeypatch.setenv(key, value)
    dead = f"http://{LOOPBACK}:{free_port()}"
    with tracking_uri(dead):
        message = refusal(preflight.check_model, "models:/Housing@champion")
    assert message.startswith(
        f"model models:/Housing@champion: the model registry at {dead} is unreachable: "
    )
    assert "Connection refused" in message


def run_preflight(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "projects.preflight", *args],
        cwd=PROJECT_ROOT,
        env=env or process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_refusal_is_one_line_and_exit_status_1_and_the_command_does_not_run(tmp_path):
    marker = tmp_path / "ran"
    completed = run_preflight("--input", str(tmp_path / "in.csv"), "--", "touch", str(marker))
    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [f"error: input file {tmp_path / 'in.csv'} does not exist"]
    assert not marker.exists()


def test_the_command_runs_with_mlflowserver_http_defaults_unless_the_caller_set_them():
    env = process_env()
    for key in MLFLOW_HTTP_DEFAULTS:
        env.pop(key, None)
    env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "3"  # the caller's own value wins
    keys = sorted(MLFLOW_HTTP_DEFAULTS)
    show = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {keys!r}}}))"
    completed = run_preflight("--port", str(free_port()), "--", sys.executable, "-c", show, env=env)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {**MLFLOW_HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


def test_a_command_is_required():
    completed = run_preflight("--port", "5001")
    assert completed.returncode == 2 and "no command to run after the checks" in completed.stderr


def test_the_storage_initializer_bounds_mlflows_http_retries_as_the_runtime_does():
    """k8s/base/kserve-storage.yaml cannot import MLFLOW_HTTP_DEFAULTS: it states them, held equal here."""
    storage = yaml.safe_load((PROJECT_ROOT / "k8s" / "base" / "kserve-storage.yaml").read_text())
    env = {item["name"]: item.get("value") for item in storage["spec"]["container"]["env"]}
    assert {key: env.get(key) for key in MLFLOW_HTTP_DEFAULTS} == MLFLOW_HTTP_DEFAULTS
