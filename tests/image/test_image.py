"""The production path, for real: the image `make image` built runs every role the manifests start,
each as uid 1000 with a read-only root filesystem, no capability and no privilege escalation.

1. the tracking server with the command, args and env of k8s/base/mlflow.yaml (basic auth,
   proxied artifacts in a volume), on a fresh PostgreSQL database of this machine;
2. the trainer with the command of k8s/train/job.yaml (fewer trees), registering a champion;
3. the storage initializer with the command and env of the ClusterStorageContainer and the args
   KServe gives it, downloading the InferenceService's storageUri into a volume;
4. the runtime with the command and args of the ClusterServingRuntime, serving that volume
   read-only: V2 predictions through the kserve SDK equal in-process ones, bad input gets a 4xx.

What differs from a cluster, and only that: servers bind 127.0.0.1 instead of 0.0.0.0 (host
networking must not expose them); the backend store URI (and the basic-auth config's copy of it)
names the fresh database; the cluster's service names resolve to 127.0.0.1; Secrets hold this
test's credentials; volumes are Podman volumes; the trainer reads the raw file where Compose mounts it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from model.data import FEATURE_COLUMNS, PROJECT_ROOT, TARGET
from model.registry import CHAMPION, MODEL_NAME
from testbed.processes import listening_addresses
from tests.image.podman import SUMMARY, image_size, podman, run_role, serving, volume, volume_path
from tests.integration.servers import k8s_object, kserve_sdk_infer, temporary_database

pytestmark = pytest.mark.integration

IMAGE = os.environ.get("IMAGE", "california-housing:dev")
# The budget for the image the InferenceService runs (bytes, as Podman counts them).
SERVING_IMAGE_BUDGET = 1_000_000_000
ISVC = k8s_object("InferenceService")
ISVC_NAME = ISVC["metadata"]["name"]
STORAGE_URI = ISVC["spec"]["predictor"]["model"]["storageUri"]
# Where KServe mounts the model volume: writable for the storage initializer, read-only for the runtime.
MODEL_MOUNT = "/mnt/models"
REDUCED_TRAINING = ["-P", "n_estimators=150", "-P", "cv_folds=0"]

# Every module a role loads; imported in the image as uid 1000, the first failure exits with
# one line: `import <module>: <error>`.
ROLE_MODULES = {
    "tracking-server": [
        "mlflow.cli",
        "mlflow.server",
        "mlflow.server.auth",
        "psycopg",
        "sqlalchemy.dialects.postgresql.psycopg",
    ],
    "trainer": ["mlflow.cli", "mlflow.projects", "projects.train", "model.plots", "lightgbm"],
    "storage-initializer": ["mlflow.cli", "mlflow.store.artifact.cli"],
    # LightGBM serves an artifact without compiled trees (logged before them); ONNX Runtime the others.
    "runtime": ["lightgbm", "sklearn", "kserve", "mlflowserver.__main__", "model.pyfunc", "onnxruntime"],
}
IMPORT_CHECK = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as error:
        sys.exit(f"import {name}: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}")
"""


def import_check(image: str, modules: list[str]) -> subprocess.CompletedProcess:
    return run_role(image, ["python", "-W", "ignore", "-c", IMPORT_CHECK, *modules], timeout=300)


def on_loopback(args: list[str]) -> list[str]:
    """The one argument changed from the manifests: a 0.0.0.0 bind address becomes 127.0.0.1."""
    changed = [arg.replace("=0.0.0.0", "=127.0.0.1") for arg in args]
    assert changed != args, f"no 0.0.0.0 bind address in {args}: host networking would expose the server"
    return changed


def option(args: list[str], name: str) -> str:
    [value] = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{name}=")]
    return value


def resolved_env(container: dict, credentials: dict) -> dict[str, str]:
    """The container's env, each secretKeyRef replaced by this test's value for that Secret key."""
    env = {}
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        env[variable["name"]] = credentials[ref["name"], ref["key"]] if ref else variable["value"]
    return env


def service_hosts(env: dict[str, str]) -> list[str]:
    """The cluster service the tracking URI names (mlflow, mlflow.<namespace>.svc...), for --add-host."""
    return [urlparse(env["MLFLOW_TRACKING_URI"]).hostname]


@pytest.fixture(scope="module")
def credentials() -> dict[tuple[str, str], str]:
    """The Secrets of k8s/secrets.example.yaml; PostgreSQL's password goes unused (trust auth here)."""
    admin, client = ("admin", secrets.token_urlsafe(24)), ("trainer", secrets.token_urlsafe(24))
    return {
        ("postgres-credentials", "password"): secrets.token_urlsafe(24),
        ("mlflow-admin", "username"): admin[0], ("mlflow-admin", "password"): admin[1],
        ("mlflow-admin", "flask-secret-key"): secrets.token_hex(32),
        ("mlflow-client", "username"): client[0], ("mlflow-client", "password"): client[1],
    }  # fmt: skip


@pytest.fixture(scope="module")
def tracking_server(credentials, tmp_path_factory):
    """k8s/base/mlflow.yaml's container; the client user created as docs/environments/k8s.md says."""
    [container] = k8s_object("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    env = resolved_env(container, credentials)
    with temporary_database("mlflow_image") as database, volume("artifacts") as artifacts:
        args = [
            f"--backend-store-uri={database}" if arg.startswith("--backend-store-uri=") else arg
            for arg in on_loopback(container["args"])
        ]
        auth_config = tmp_path_factory.mktemp("auth") / "basic_auth.ini"
        ini = (PROJECT_ROOT / "k8s" / "base" / "mlflow-basic-auth.ini").read_text()
        auth_config.write_text(
            ini.replace(
                f"database_uri = {option(container['args'], '--backend-store-uri')}",
                f"database_uri = {database}",
            )
        )
        auth_config.chmod(0o644)
        mounts = [
            f"{artifacts}:{option(args, '--artifacts-destination')}",
            f"{auth_config}:{env['MLFLOW_AUTH_CONFIG_PATH']}:ro",
        ]
        port = int(option(args, "--port"))
        with serving(
            IMAGE, [*container["command"], *args], port, "/health", env=env, mounts=mounts
        ) as server:
            response = requests.post(
                f"{server.base_url}/api/2.0/mlflow/users/create",
                timeout=30,
                auth=(credentials["mlflow-admin", "username"], credentials["mlflow-admin", "password"]),
                json={
                    "username": credentials["mlflow-client", "username"],
                    "password": credentials["mlflow-client", "password"],
                },
            )
            assert response.status_code == 200, response.text
            yield server.base_url, artifacts


@pytest.fixture(scope="module")
def champion(tracking_server, credentials, raw_data_path) -> str:
    """k8s/train/job.yaml's train container; the raw file where docker-compose.yml's trainer mounts it."""
    job = k8s_object("Job", "train")["spec"]["template"]["spec"]
    [container] = [c for c in job["containers"] if c["name"] == "train"]
    env = resolved_env(container, credentials)
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    [data] = compose["services"]["trainer"]["volumes"]
    completed = run_role(
        IMAGE,
        [*container["command"], *REDUCED_TRAINING],
        env=env,
        timeout=1800,
        mounts=[f"{raw_data_path}:{data['target']}:ro"],
        hosts=service_hosts(env),
        workdir=container["workingDir"],
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    return completed.stdout


@pytest.fixture(scope="module")
def models(champion, credentials):
    """The ClusterStorageContainer's container given KServe's args, writing into a volume."""
    container = k8s_object("ClusterStorageContainer")["spec"]["container"]
    env = resolved_env(container, credentials)
    with volume("models") as name:
        completed = run_role(
            IMAGE,
            [*container["command"], STORAGE_URI, MODEL_MOUNT],
            env=env,
            timeout=600,
            mounts=[f"{name}:{MODEL_MOUNT}"],
            hosts=service_hosts(env),
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        yield name


@pytest.fixture(scope="module")
def runtime(models):
    """The ClusterServingRuntime's container as KServe renders it: {{.Name}} is the InferenceService's
    name (its metadata fills the container as a Go template) and the predictor's env is merged in."""
    [container] = k8s_object("ClusterServingRuntime")["spec"]["containers"]
    args = on_loopback([arg.replace("{{.Name}}", ISVC_NAME) for arg in container["args"]])
    assert "{{" not in " ".join(args), args
    env = {**resolved_env(container, {}), **resolved_env(ISVC["spec"]["predictor"]["model"], {})}
    port = int(option(args, "--http_port"))
    with serving(
        IMAGE,
        [*container["command"], *args],
        port,
        "/v2/health/ready",
        env=env,
        mounts=[f"{models}:{MODEL_MOUNT}:ro"],
    ) as server:
        yield server.base_url


def test_the_serving_image_is_within_its_size_budget():
    size = image_size(IMAGE)
    assert size <= SERVING_IMAGE_BUDGET, (
        f"{IMAGE} is {size / 1e9:.3f} GB, over {SERVING_IMAGE_BUDGET / 1e9:.1f} GB"
    )


@pytest.mark.parametrize("role", ROLE_MODULES)
def test_every_module_a_role_loads_imports_as_uid_1000(role):
    completed = import_check(IMAGE, ROLE_MODULES[role])
    assert completed.returncode == 0, completed.stderr


def test_the_seeded_mistake_an_image_without_libgomp1_fails_the_import_check_in_one_line():
    variant = f"{IMAGE.rsplit(':', 1)[0]}:no-libgomp1"
    build = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "image",
            f"IMAGE={variant}",
            "IMAGE_BUILD_ARGS=--build-arg RUNTIME_PACKAGES=",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    try:
        assert build.returncode == 0, build.stderr[-3000:]
        image_size(variant)
        completed = import_check(variant, ROLE_MODULES["runtime"])
    finally:
        podman("rmi", "--force", "--ignore", variant)
    reason = completed.stderr.strip()
    SUMMARY.append(f"seeded mistake (no libgomp1): exit {completed.returncode}, {reason}")
    assert completed.returncode != 0
    assert reason.startswith("import lightgbm: OSError: libgomp.so.1") and "\n" not in reason, reason


def test_the_tracking_server_demands_basic_auth(tracking_server, credentials):
    url = f"{tracking_server[0]}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(url, timeout=30).status_code == 401
    client = (credentials["mlflow-client", "username"], credentials["mlflow-client", "password"])
    assert requests.get(url, auth=client, timeout=30).status_code == 200


def test_the_trainer_registers_a_champion_whose_files_the_server_keeps(
    tracking_server, champion, credentials
):
    base_url, artifacts = tracking_server
    assert f"registered {MODEL_NAME} version 1 as {CHAMPION}" in champion
    response = requests.get(
        f"{base_url}/api/2.0/mlflow/registered-models/alias",
        timeout=30,
        params={"name": MODEL_NAME, "alias": CHAMPION},
        auth=(credentials["mlflow-client", "username"], credentials["mlflow-client", "password"]),
    )
    assert response.status_code == 200, response.text
    assert response.json()["model_version"]["version"] == "1"
    assert list(Path(volume_path(artifacts)).rglob("MLmodel")), (
        "no model in the tracking server's artifact volume"
    )


def test_the_storage_initializer_puts_the_model_at_the_mount_root(models):
    assert (Path(volume_path(models)) / "MLmodel").is_file()


def test_v2_predictions_through_the_kserve_client_equal_in_process_ones(runtime, models, rows):
    expected = mlflow.pyfunc.load_model(volume_path(models)).predict(rows)[TARGET].to_numpy()
    response = kserve_sdk_infer(runtime, ISVC_NAME, rows)
    np.testing.assert_allclose(response.get_output_by_name(TARGET).as_numpy(), expected, rtol=0, atol=1e-9)


# Run in the image as uid 1000 on the read-only model volume, as the runtime loads it.
COMPILED_TREES_CHECK = """
import io, sys
import mlflow.pyfunc, numpy as np, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = pd.read_json(io.StringIO(sys.argv[2]), orient="split")
rows = rows.astype({column: float for column in rows.columns if column != "ocean_proximity"})
served = model.predict(rows)["median_house_value"].to_numpy()
python_model = model.unwrap_python_model()
engines = {name: type(e.compiled).__name__ for name, e in python_model.tree_ensembles().items()}
assert set(engines.values()) == {"CompiledTrees"}, engines
assert "lightgbm" not in sys.modules, "loading and calling the model imported LightGBM"
from model.contract import validate_input
from model.pyfunc import AveragedBoosters
X = python_model.features.transform(validate_input(rows))
lightgbm_path = AveragedBoosters(python_model.regressor.boosters).predict(X)
assert np.array_equal(served, lightgbm_path), np.abs(served - lightgbm_path).max()
print(f"compiled trees {sorted(engines)}: {len(rows)} rows equal to LightGBM's")
"""


def test_the_champion_carries_its_compiled_trees_and_serves_them_in_the_image(models, rows):
    """Built by the trainer in the image (no compiler there), loaded from the read-only volume as
    uid 1000 without LightGBM, and equal to LightGBM's predictions, bit for bit."""
    artifacts = Path(volume_path(models)) / "artifacts"
    assert sorted(p.name for p in artifacts.iterdir()) == ["regressor_trees.onnx", "spread_trees.onnx"]
    completed = run_role(
        IMAGE,
        ["python", "-W", "ignore", "-c", COMPILED_TREES_CHECK, MODEL_MOUNT, rows.to_json(orient="split")],
        timeout=300,
        mounts=[f"{models}:{MODEL_MOUNT}:ro"],
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    SUMMARY.append(completed.stdout.strip())


def test_a_request_without_an_input_gets_a_400_naming_it(runtime, rows):
    tensors = [
        {
            "name": column,
            "shape": [1],
            "datatype": "BYTES" if column == "ocean_proximity" else "FP64",
            "data": [None if pd.isna(value) else value for value in rows[column].head(1)],
        }
        for column in FEATURE_COLUMNS
        if column != "median_income"
    ]
    response = requests.post(f"{runtime}/v2/models/{ISVC_NAME}/infer", json={"inputs": tensors}, timeout=60)
    assert response.status_code == 400, response.text
    assert "median_income" in response.json()["error"]


def test_the_servers_listen_on_loopback_only(tracking_server, runtime):
    for url in (tracking_server[0], runtime):
        port = urlparse(url).port
        assert set(listening_addresses(port)) == {"127.0.0.1"}, (port, listening_addresses(port))
