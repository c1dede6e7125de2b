"""`make up` and the Compose stack for real, from nothing, on a Docker Engine, with the committed
docker-compose.yml and only its documented variables set: this test's own project name and env
file, free host ports (MLFLOW_HOST_PORT, V2_HOST_PORT), PostgreSQL's local stand-in where no
registry answers (POSTGRES_IMAGE, as `make up` records it) and a shorter training (TRAIN_PARAMS).
Every stack command is `python -m containers.stack`, exactly what the Makefile's targets run.

1. the stack comes up in the order docker-compose.yml declares, read from the engine's event times;
2. the trainer registers a champion in PostgreSQL through the basic-auth tracking server; the
   runtime's V2 infer equals in-process predictions of that version, with and without an interval;
3. the MLflow UI, in a real headless Chromium, logs in and shows the run, its metrics and plots;
4. bad credentials get 401; the runtime cannot reach PostgreSQL, which has no way out; every
   container runs as its declared non-root uid on a read-only root; only 127.0.0.1 listens;
5. restarts of PostgreSQL and the tracking server, `make up` again, `make down` then `make up`:
   runs, versions, aliases and artifacts all stay, no training runs again, the UI shows them;
6. a second training registers a challenger; promotion through the tracking server (the gates)
   and the rollout make the runtime serve it; a rollback serves the previous champion again;
7. `make down-volumes` leaves no container, volume, network or listener of the stack.
Seeded mistakes: the runtime without its depends_on, the db network not internal; each check
that catches one answers one line.
"""

from __future__ import annotations

import os
import shlex
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from unittest import mock

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from containers.compose_project import Stack, read_env_file, write_env_file
from containers.stack_steps import TRACKING, wait_healthy
from model.data import FEATURE_COLUMNS, PROJECT_ROOT, split_train_test
from model.registry import CHALLENGER, CHAMPION, MODEL_NAME
from model.report import PLOTS
from testbed.processes import free_port, listening_addresses
from tests.compose.conftest import PHASES, SUMMARY
from tests.compose.engine import (
    declared_order,
    docker,
    order_violation,
    project_leftovers,
    recorded_events,
    seeded_copy,
    timeline,
    way_out,
)
from tests.integration.browser import SCREENSHOTS, chromium_path, headless_chromium
from tests.integration.servers import kserve_sdk_infer
from tests.integration.test_train_serve_predict import shown_plots

# The first `make up` trains; on a busy machine that alone has taken 11 minutes.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

# A weak champion first, then a better challenger: the promotion gates have a reason to pass.
FIRST_TRAINING = "-P n_estimators=60 -P learning_rate=0.02 -P cv_folds=0 -P n_models=1"
SECOND_TRAINING = ("-P", "n_estimators=150", "-P", "cv_folds=0", "-P", "n_models=1")
INTERVAL = {"interval": 0.8}
EXPERIMENT = "california-housing"
NOTHING = {"containers": [], "volumes": [], "networks": []}
# Connects to host:5432 from inside a container; prints why it could not.
CONNECT = """import socket, sys
try:
    socket.create_connection((sys.argv[1], 5432), timeout=5).close()
except OSError as error:
    sys.exit(f"{type(error).__name__}: {error}")"""


def phase(name: str, started: float) -> None:
    seconds = time.monotonic() - started
    PHASES.append((name, seconds))
    SUMMARY.append(f"phase {name}: {seconds:.0f} s")


def stack_command(
    stack: Stack, *args: str, phase_name: str, timeout: float = 1500
) -> subprocess.CompletedProcess:
    """`python -m containers.stack ARGS` for this test's project, as the Makefile runs it; its
    wall time is the phase ``phase_name`` (docs/figures/compose.json's key: name each once)."""
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "containers.stack", "--env-file", str(stack.env_file),
         "--project-name", stack.project, *args],
        cwd=PROJECT_ROOT, env=stack.environment(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    phase(phase_name, started)
    return completed


def succeeded(completed: subprocess.CompletedProcess) -> str:
    assert completed.returncode == 0, f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
    return completed.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stack")
    stack = Stack(
        env_file=directory / ".env",
        project=f"california-housing-test-{uuid.uuid4().hex[:8]}",
        variables={
            "MLFLOW_HOST_PORT": str(free_port()),
            "V2_HOST_PORT": str(free_port()),
            "TRAIN_PARAMS": FIRST_TRAINING,
        },
    )
    assert project_leftovers(stack.project) == NOTHING
    try:
        yield stack
    finally:
        subprocess.run(stack.command("down", "--volumes", "--remove-orphans"), env=stack.environment())


@pytest.fixture(scope="module")
def brought_up(stack) -> dict:
    """`make up` from nothing: its output and the engine's events meanwhile."""
    with recorded_events(stack.project) as events:
        output = succeeded(
            stack_command(stack, "up", phase_name="`make up` from nothing (trains the champion)")
        )
    return {"output": output, "events": events}


@pytest.fixture(scope="module")
def rows(raw_frame) -> pd.DataFrame:
    frame = split_train_test(raw_frame)[1].head(25)[list(FEATURE_COLUMNS)].reset_index(drop=True)
    frame.loc[2, "total_bedrooms"] = np.nan
    return frame


def tracking_env(stack: Stack) -> dict[str, str]:
    user, password = stack.auth()
    return {
        "MLFLOW_TRACKING_URI": stack.url("mlflow"),
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": password,
    }


# (project, version) → the registered version loaded in this process: a version never changes.
LOADED: dict[tuple[str, str], mlflow.pyfunc.PyFuncModel] = {}


def registered_prediction(
    stack: Stack, version: str, rows: pd.DataFrame, params: dict | None
) -> pd.DataFrame:
    """The registered version's prediction, loaded in this process through the tracking server."""
    key = (stack.name, version)
    if key not in LOADED:
        with mock.patch.dict(os.environ, tracking_env(stack)):
            LOADED[key] = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    return LOADED[key].predict(rows, params=params)


def assert_runtime_serves(stack: Stack, version: str, rows: pd.DataFrame, params: dict | None = None):
    expected = registered_prediction(stack, version, rows, params)
    response = kserve_sdk_infer(stack.url("runtime"), stack.v2_model_name(), rows, params)
    served = {output.name: output.as_numpy() for output in response.outputs}
    assert set(served) == set(expected.columns)
    for column in expected.columns:
        np.testing.assert_allclose(served[column], expected[column].to_numpy(), rtol=0, atol=1e-9)
    return expected


def rest(stack: Stack, path: str, **params) -> dict:
    response = requests.get(
        f"{stack.url('mlflow')}/api/2.0/mlflow/{path}", params=params, auth=stack.auth(), timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def artifact_files(uri: str, prefix: str = "") -> list[tuple[str, int | None]]:
    """Every file below an artifact URI, with its size as the artifact store reports it."""
    files = []
    for info in mlflow.artifacts.list_artifacts(artifact_uri=uri):
        name = info.path.rsplit("/", 1)[-1]
        if info.is_dir:
            files += artifact_files(f"{uri.rstrip('/')}/{name}", f"{prefix}{name}/")
        else:
            files.append((f"{prefix}{name}", info.file_size))
    return sorted(files)


def registry_state(stack: Stack) -> dict:
    """Runs, versions, aliases and every artifact file with its size, as the tracking server reports them."""
    experiment = rest(stack, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    runs = requests.post(
        f"{stack.url('mlflow')}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [experiment["experiment_id"]]},
        auth=stack.auth(),
        timeout=30,
    ).json()["runs"]
    model = rest(stack, "registered-models/get", name=MODEL_NAME)["registered_model"]
    versions = rest(stack, "model-versions/search", filter=f"name='{MODEL_NAME}'")["model_versions"]
    with mock.patch.dict(os.environ, tracking_env(stack)):
        client = MlflowClient()
        artifacts = {
            **{run["info"]["run_id"]: artifact_files(run["info"]["artifact_uri"]) for run in runs},
            **{
                v["version"]: artifact_files(client.get_model_version_download_uri(MODEL_NAME, v["version"]))
                for v in versions
            },
        }
    return {
        "runs": sorted((run["info"]["run_id"], run["info"]["status"]) for run in runs),
        "versions": sorted((v["version"], v["run_id"]) for v in versions),
        "aliases": sorted((a["alias"], a["version"]) for a in model.get("aliases", [])),
        "artifacts": artifacts,
    }


def psql(stack: Stack, query: str) -> list[str]:
    """A query on the stack's PostgreSQL, over its own socket, inside its container."""
    return stack.compose(
        "exec", "-T", "postgres", "psql", "--username=mlflow", "--dbname=mlflow",
        "--tuples-only", "--no-align", "--command", query,
    ).stdout.split()  # fmt: skip


def ui_shows_the_champions_run(stack: Stack, directory: Path, name: str, pages=("run", "version")) -> None:
    """Logged in as a browser does with basic auth (a page that demands it, opened with the
    credentials: the browser keeps them for the server and sends them with the app's own requests),
    the champion's run page shows its metrics and plots, and its version page its plots."""
    if chromium_path() is None:
        pytest.fail("no chromium: `apt-get install chromium` (.ci/run does)")
    version = stack.champion()
    run = rest(stack, "runs/get", run_id=version["run_id"])["run"]
    user, password = stack.auth()
    base = stack.url("mlflow")
    login = (
        base.replace("http://", f"http://{user}:{password}@")
        + "/api/2.0/mlflow/experiments/search?max_results=1"
    )
    urls = {
        "run": f"{base}/#/experiments/{run['info']['experiment_id']}/runs/{version['run_id']}",
        "version": f"{base}/#/models/{MODEL_NAME}/versions/{version['version']}",
    }
    metrics = sorted(metric["key"] for metric in run["data"]["metrics"])
    all_metrics_shown = f"{metrics!r}.every(m => document.body.innerText.includes(m))"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with headless_chromium(directory, height=5200) as page:
        page.navigate(login)
        assert page.wait_for("document.body?.innerText.includes('experiments')", timeout=60), "login refused"
        for page_name in pages:
            url = urls[page_name]
            plots = shown_plots(page, url, SCREENSHOTS / f"compose-{name}-{page_name}.png")
            assert set(plots) == set(PLOTS), (page_name, sorted(plots))
            assert all(f"run_uuid={version['run_id']}" in image["src"] for image in plots.values())
            if page_name == "run":
                assert page.wait_for(all_metrics_shown, timeout=60), (
                    f"the run page lacks some of {metrics}: {page.evaluate('document.body.innerText')[:1000]}"
                )


# ---------------------------------------------------------------------------------------------
# 0. `make up` refused before anything starts, in one line
# ---------------------------------------------------------------------------------------------


def last_line(completed: subprocess.CompletedProcess) -> str:
    assert completed.returncode == 1, f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    return completed.stderr.strip().splitlines()[-1]


def test_0_make_up_without_an_engine_fails_in_one_line(stack):
    nowhere = "unix:///nonexistent/docker.sock"
    line = last_line(
        stack_command(
            stack.with_variables(DOCKER_HOST=nowhere), "up", phase_name="`make up` without an engine"
        )
    )
    SUMMARY.append(f"make up without an engine: {line}")
    assert line.startswith(f"error: no Docker engine answers at {nowhere}: start it"), line


def test_0_make_up_on_a_taken_port_fails_in_one_line_before_starting_anything(stack):
    port = stack.variables["MLFLOW_HOST_PORT"]
    with socket.create_server(("127.0.0.1", int(port))):
        line = last_line(stack_command(stack, "up", phase_name="`make up` on a taken port"))
    SUMMARY.append(f"make up on a taken port: {line}")
    assert line == (
        f"error: port {port} on 127.0.0.1, which the mlflow service publishes, is taken by another "
        "program: stop it or set MLFLOW_HOST_PORT in .env"
    ), line
    assert project_leftovers(stack.project) == NOTHING


# ---------------------------------------------------------------------------------------------
# 1. `make up` from nothing, in the declared order
# ---------------------------------------------------------------------------------------------


def test_1_the_stack_comes_up_in_the_declared_order(stack, brought_up):
    declared = declared_order(stack.config)
    SUMMARY.append(f"events of the first make up: {timeline(brought_up['events'])}")
    assert ("trainer", "mlflow", "health_status: healthy") in declared
    assert ("runtime", "storage", "die 0") in declared
    started = {event.service for event in brought_up["events"] if event.action == "start"}
    assert started == set(stack.config["services"]), started
    assert order_violation(declared, brought_up["events"]) is None


def test_1_make_up_writes_private_credentials_and_prints_where_to_go(stack, brought_up):
    output = brought_up["output"]
    assert stat.S_IMODE(stack.env_file.stat().st_mode) == 0o600
    assert subprocess.run(["git", "check-ignore", "--quiet", ".env"], cwd=PROJECT_ROOT).returncode == 0
    for name, value in read_env_file(stack.env_file).items():
        if name.endswith(("PASSWORD", "SECRET_KEY")):
            assert value not in output, f"make up printed {name}"
    assert f"{MODEL_NAME} version 1 is {CHAMPION}" in output
    assert stack.url("mlflow") in output and "log in as admin" in output
    [curl] = [line.strip() for line in output.splitlines() if line.strip().startswith("curl ")]
    command = shlex.split(curl)
    response = requests.post(
        command[-3], data=command[-1], headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert [output["name"] for output in response.json()["outputs"]] == ["median_house_value"]


# ---------------------------------------------------------------------------------------------
# 2. the champion, registered in PostgreSQL through the basic-auth server, served by V2
# ---------------------------------------------------------------------------------------------


def test_2_the_trainer_registered_the_champion_in_postgresql(stack, brought_up):
    assert stack.champion()["version"] == "1"
    aliases = "SELECT alias || '=' || version FROM registered_model_aliases WHERE name = 'CaliforniaHousingRegressor'"
    assert psql(stack, aliases) == [f"{CHAMPION}=1"]
    # The users the basic-auth app keeps live in the same database.
    assert psql(stack, "SELECT username FROM users WHERE is_admin") == ["admin"]


@pytest.mark.parametrize("params", [None, INTERVAL], ids=["point", "interval"])
def test_2_v2_infer_equals_in_process_predictions_of_the_registered_version(stack, brought_up, rows, params):
    predicted = assert_runtime_serves(stack, "1", rows, params)
    assert len(predicted.columns) == (3 if params else 1)


# ---------------------------------------------------------------------------------------------
# 3. the MLflow UI in a real browser
# ---------------------------------------------------------------------------------------------


def test_3_the_mlflow_ui_logs_in_and_shows_the_run_with_its_metrics_and_plots(stack, brought_up, tmp_path):
    ui_shows_the_champions_run(stack, tmp_path, "first-up")


# ---------------------------------------------------------------------------------------------
# 4. authentication, networks, users, listeners
# ---------------------------------------------------------------------------------------------


def test_4_bad_credentials_get_401(stack, brought_up):
    url = f"{stack.url('mlflow')}/api/2.0/mlflow/experiments/search?max_results=1"
    user, password = stack.auth()
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, auth=(user, password + "x"), timeout=30).status_code == 401
    assert requests.get(url, auth=("nobody", password), timeout=30).status_code == 401
    assert requests.get(url, auth=(user, password), timeout=30).status_code == 200


def connect(stack: Stack, service: str, host: str) -> str:
    """Why ``service``'s container could not open host:5432 ("" when it could)."""
    completed = stack.compose("exec", "-T", service, "python", "-c", CONNECT, host, check=False)
    return completed.stderr.strip().splitlines()[-1] if completed.returncode else ""


def test_4_the_runtime_cannot_reach_postgresql_and_postgresql_has_no_way_out(stack, brought_up):
    assert connect(stack, "mlflow", "postgres") == ""  # the one service meant to reach it
    assert connect(stack, "runtime", "postgres").startswith("gaierror")
    [container] = stack.compose("ps", "--quiet", "postgres").stdout.split()
    address = docker(
        "inspect",
        "--format",
        f'{{{{(index .NetworkSettings.Networks "{stack.project}_db").IPAddress}}}}',
        container,
    ).strip()
    assert address and connect(stack, "runtime", address), f"the runtime reached PostgreSQL at {address}"
    assert docker("network", "inspect", "--format", "{{.Internal}}", f"{stack.project}_db").strip() == "true"
    assert way_out(stack, "postgres") is None
    assert way_out(stack, "mlflow"), "the check sees no way out of a network that has one"


def test_4_every_container_runs_as_its_declared_non_root_uid_on_a_read_only_root(stack, brought_up):
    states = stack.states()
    for service, declared in stack.config["services"].items():
        uid = declared["user"].split(":")[0]
        assert uid != "0" and declared["read_only"] is True, service
        [container] = stack.compose("ps", "--all", "--quiet", service).stdout.split()
        user, read_only = docker(
            "inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}", container
        ).split()
        assert (user, read_only) == (declared["user"], "true"), service
        probe = ("sh", "-c", "id -u; touch /probe 2>&1; true")
        if states[service]["State"] == "running":
            seen = stack.compose("exec", "-T", service, *probe).stdout
        else:
            seen = stack.compose(
                "run", "--rm", "--no-deps", "--entrypoint", probe[0], service, *probe[1:]
            ).stdout
        assert seen.split()[0] == uid and "Read-only file system" in seen, (service, seen)


def test_4_nothing_listens_beyond_loopback(stack, brought_up):
    containers = stack.compose("ps", "--all", "--quiet").stdout.split()
    bindings = docker(
        "inspect", "--format", "{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}{{.HostIp}} {{end}}{{end}}",
        *containers,
    ).split()  # fmt: skip
    assert bindings and set(bindings) == {"127.0.0.1"}, bindings
    for service in ("mlflow", "runtime"):
        port = stack.published_port(service)
        assert set(listening_addresses(port)) == {"127.0.0.1"}, (service, listening_addresses(port))


# ---------------------------------------------------------------------------------------------
# 5. persistence
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_state(stack, brought_up) -> dict:
    state = registry_state(stack)
    assert state["aliases"] == [(CHAMPION, "1")] and len(state["runs"]) == 1
    return state


def test_5_restarting_postgresql_and_the_tracking_server_loses_nothing(stack, first_state, tmp_path):
    started = time.monotonic()
    stack.compose("restart", *TRACKING)
    wait_healthy(stack, TRACKING)
    phase("`docker compose restart postgres mlflow`, until both are healthy", started)
    assert registry_state(stack) == first_state
    ui_shows_the_champions_run(stack, tmp_path, "after-restart", pages=("version",))


def test_5_make_up_on_the_running_stack_trains_nothing_and_keeps_everything(
    stack, first_state, rows, tmp_path
):
    with recorded_events(stack.project) as events:
        output = succeeded(stack_command(stack, "up", phase_name="`make up` on the running stack"))
    assert f"{MODEL_NAME} version 1 is {CHAMPION}" in output
    assert "trainer" not in {event.service for event in events}
    assert registry_state(stack) == first_state
    assert_runtime_serves(stack, "1", rows)


def test_5_make_down_then_make_up_keeps_runs_versions_aliases_and_artifacts(
    stack, first_state, rows, tmp_path
):
    succeeded(stack_command(stack, "down", phase_name="`make down`"))
    left = project_leftovers(stack.project)
    assert left["containers"] == [] and len(left["volumes"]) == len(stack.config["volumes"]), left
    with recorded_events(stack.project) as events:
        output = succeeded(stack_command(stack, "up", phase_name="`make up` after `make down`"))
    assert f"{MODEL_NAME} version 1 is {CHAMPION}" in output
    assert "trainer" not in {event.service for event in events}
    assert registry_state(stack) == first_state
    assert_runtime_serves(stack, "1", rows, INTERVAL)
    ui_shows_the_champions_run(stack, tmp_path, "after-down-up", pages=("version",))


# ---------------------------------------------------------------------------------------------
# 6. the rollout: challenger, promotion with the gates, storage + runtime, rollback
# ---------------------------------------------------------------------------------------------


def test_6_a_second_training_registers_a_challenger_and_leaves_the_champion(stack, first_state, rows):
    output = succeeded(stack_command(stack, "train", *SECOND_TRAINING, phase_name="`make stack-train`"))
    assert f"registered {MODEL_NAME} version 2 as {CHALLENGER}" in output
    assert stack.champion()["version"] == "1"
    assert_runtime_serves(stack, "1", rows)


def rolled_out(stack: Stack, command: str, version: str, rows: pd.DataFrame) -> str:
    """The stack command moved the champion to ``version``; the storage step then the runtime's
    restart followed, in that order; the runtime serves ``version``."""
    with recorded_events(stack.project) as rollout:
        output = succeeded(stack_command(stack, command, phase_name=f"`make stack-{command}`"))
    assert stack.champion()["version"] == version
    assert [e.action for e in rollout if e.service == "storage"][-1:] == ["die 0"]
    assert order_violation([("runtime", "storage", "die 0")], rollout) is None
    assert "start" in [e.action for e in rollout if e.service == "runtime"]
    assert_runtime_serves(stack, version, rows, INTERVAL)
    return output


def test_6_promotion_through_the_tracking_server_rolls_the_challenger_out(stack, first_state, rows):
    output = rolled_out(stack, "promote", "2", rows)
    assert "promoted: version 2" in output
    first, second = (registered_prediction(stack, v, rows, None).iloc[:, 0] for v in ("1", "2"))
    assert not np.allclose(first, second), (
        "versions 1 and 2 predict alike: the check could not tell them apart"
    )


def test_6_a_rollback_rolls_the_previous_champion_out(stack, first_state, rows):
    rolled_out(stack, "rollback", "1", rows)


# ---------------------------------------------------------------------------------------------
# 7. make down-volumes
# ---------------------------------------------------------------------------------------------


def test_7_down_with_volumes_leaves_no_container_volume_network_or_listener(stack, first_state):
    ports = [stack.published_port(service) for service in ("mlflow", "runtime")]
    succeeded(stack_command(stack, "down", "--volumes", phase_name="`make down-volumes`"))
    assert project_leftovers(stack.project) == NOTHING
    assert [port for port in ports if listening_addresses(port)] == []


# ---------------------------------------------------------------------------------------------
# Seeded mistakes: each caught, in one line
# ---------------------------------------------------------------------------------------------


def seeded_stack(stack: Stack, directory: Path, old: str, new: str) -> Stack:
    return Stack(stack.env_file, f"{stack.project}-seeded", stack.variables, seeded_copy(directory, old, new))


def test_seeded_mistake_a_runtime_without_its_depends_on_breaks_the_declared_order(stack, tmp_path):
    seeded = seeded_stack(
        stack,
        tmp_path,
        "    depends_on:\n      storage:\n        condition: service_completed_successfully\n",
        "",
    )
    try:
        with recorded_events(seeded.project) as events:
            seeded.compose("up", "--detach", "runtime")
        reason = order_violation(declared_order(stack.config), events)
    finally:
        seeded.compose("down", "--volumes", "--remove-orphans", check=False)
    SUMMARY.append(f"seeded mistake (the runtime's depends_on removed): {reason}")
    assert reason and "\n" not in reason and reason.startswith("runtime started"), reason


def test_seeded_mistake_a_db_network_that_is_not_internal_gives_postgresql_a_way_out(stack, tmp_path):
    seeded = seeded_stack(stack, tmp_path, "  db:\n    internal: true\n", "  db:\n    internal: false\n")
    try:
        seeded.compose("up", "--detach", "--wait", "postgres")
        reason = way_out(seeded, "postgres")
    finally:
        seeded.compose("down", "--volumes", "--remove-orphans", check=False)
    SUMMARY.append(f"seeded mistake (the db network not internal): {reason}")
    assert reason and "\n" not in reason and reason.startswith("postgres resolves"), reason


def test_a_lost_env_file_fails_make_up_in_one_line_naming_the_tracking_server(stack, tmp_path):
    """PostgreSQL created with one .env, then `make up` with new credentials: the tracking server
    cannot log in to the database, which its log says at once (it would retry for minutes)."""
    lost = Stack(tmp_path / ".env", f"{stack.project}-lost", {**stack.variables})
    lost = (
        lost.with_variables(POSTGRES_IMAGE=stack.setting("POSTGRES_IMAGE"))
        if stack.setting("POSTGRES_IMAGE")
        else lost
    )
    write_env_file(lost.env_file)
    try:
        lost.compose("up", "--detach", "--wait", "postgres")
        lost.env_file.unlink()
        completed = stack_command(lost, "up", phase_name="`make up` after a lost `.env`, until it gives up")
    finally:
        lost.compose("down", "--volumes", "--remove-orphans", check=False)
    line = last_line(completed)
    SUMMARY.append(f"make up after a lost .env: {line}")
    assert (
        line.startswith("error: service mlflow cannot start: its log says 'password authentication failed'")
        and "PostgreSQL keeps the password" in line
    ), line
    assert "password authentication failed" in completed.stderr
