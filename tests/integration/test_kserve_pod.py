"""What the cluster does, with real processes on loopback.

A tracking server on PostgreSQL with proxied artifacts plays the in-cluster MLflow; `train`
registers a champion there; the ClusterStorageContainer's own command (read from k8s/)
downloads `models:/CaliforniaHousingRegressor@champion` into a temp `/mnt/models`; the
ClusterServingRuntime's command serves that directory; V2 calls through raw HTTP and the
kserve SDK's REST client must equal `mlflow models serve`'s answers for the same rows.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests

from model.data import FEATURE_COLUMNS, NUMERIC_COLUMNS, PROJECT_ROOT, TARGET
from model.intervals import LOWER_COLUMN, UPPER_COLUMN
from model.registry import CHAMPION, MODEL_NAME
from testbed import mlflow_cli
from testbed.processes import free_port, process_env, running_server
from tests.integration.servers import k8s_object, kserve_sdk_infer, temporary_database

pytestmark = pytest.mark.integration

STORAGE_URI = f"models:/{MODEL_NAME}@{CHAMPION}"
ISVC_NAME = "california-housing"


@pytest.fixture(scope="module")
def database():
    with temporary_database("mlflow_pod") as uri:
        yield uri


@pytest.fixture(scope="module")
def tracking_server(database, tmp_path_factory):
    port = free_port()
    artifacts = tmp_path_factory.mktemp("artifacts")
    command = mlflow_cli.mlflow_server(database, artifacts, port)
    with running_server(command, port, "/health", timeout=180) as server:
        yield server.base_url


@pytest.fixture(scope="module")
def env(tracking_server) -> dict:
    return process_env({"MLFLOW_TRACKING_URI": tracking_server})


@pytest.fixture(scope="module")
def champion(env, raw_data_path):
    completed = subprocess.run(
        mlflow_cli.mlflow_run(
            PROJECT_ROOT, "train", "pod", f"data_path={raw_data_path}", "n_estimators=150", "cv_folds=0"
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]


@pytest.fixture(scope="module")
def mnt_models(champion, env, tmp_path_factory) -> Path:
    """The storage initializer: the ClusterStorageContainer's command with KServe's args."""
    container = k8s_object("ClusterStorageContainer")["spec"]["container"]
    destination = tmp_path_factory.mktemp("mnt") / "models"
    completed = subprocess.run(
        [*container["command"], STORAGE_URI, str(destination)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (destination / "MLmodel").exists(), sorted(p.name for p in destination.iterdir())
    return destination


@pytest.fixture(scope="module")
def v2_server(mnt_models, env):
    """The ClusterServingRuntime's container command, on loopback instead of 0.0.0.0."""
    container = k8s_object("ClusterServingRuntime")["spec"]["containers"][0]
    port = free_port()
    args = [arg.replace("{{.Name}}", ISVC_NAME) for arg in container["args"]]
    args = [arg for arg in args if not arg.startswith(("--http_port", "--http_host"))]
    args = [arg if not arg.startswith("--model_dir") else f"--model_dir={mnt_models}" for arg in args]
    command = [*container["command"], *args, f"--http_port={port}", "--http_host=127.0.0.1"]
    with running_server(command, port, "/v2/health/ready", env=env, timeout=180) as server:
        yield server.base_url


@pytest.fixture(scope="module")
def mlflow_server(champion, env):
    port = free_port()
    command = mlflow_cli.mlflow_models_serve(STORAGE_URI, port)
    with running_server(command, port, "/ping", env=env, timeout=180) as server:
        yield server.base_url


@pytest.fixture(scope="module")
def reference(mlflow_server, rows) -> np.ndarray:
    body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    response = requests.post(f"{mlflow_server}/invocations", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return np.array([row[TARGET] for row in response.json()["predictions"]])


def v2_body(rows: pd.DataFrame, shape_2d: bool = False) -> dict:
    def tensor(column):
        values = json.loads(rows[column].to_json(orient="values"))
        shape = [len(rows), 1] if shape_2d else [len(rows)]
        datatype = "BYTES" if column == "ocean_proximity" else "FP64"
        return {"name": column, "shape": shape, "datatype": datatype, "data": values}

    return {"inputs": [tensor(column) for column in FEATURE_COLUMNS]}


def test_health_and_metadata_come_from_the_signature(v2_server):
    assert requests.get(f"{v2_server}/v2/health/live", timeout=10).status_code == 200
    assert requests.get(f"{v2_server}/v2/models/{ISVC_NAME}/ready", timeout=10).status_code == 200
    metadata = requests.get(f"{v2_server}/v2/models/{ISVC_NAME}", timeout=10).json()
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        *((column, "FP64") for column in NUMERIC_COLUMNS),
        ("ocean_proximity", "BYTES"),
    ]
    # The interval bounds are optional outputs of the signature (present only with `interval`).
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [
        (TARGET, "FP64"),
        (LOWER_COLUMN, "FP64"),
        (UPPER_COLUMN, "FP64"),
    ]


@pytest.mark.parametrize("shape_2d", [False, True], ids=["shape-n", "shape-n-1"])
def test_raw_http_v2_predictions_equal_mlflow_models_serve(v2_server, rows, reference, shape_2d):
    response = requests.post(
        f"{v2_server}/v2/models/{ISVC_NAME}/infer", json=v2_body(rows, shape_2d), timeout=60
    )
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (TARGET, "FP64", [len(rows)])
    np.testing.assert_allclose(output["data"], reference, rtol=0, atol=1e-9)


def sdk_infer(v2_server: str, rows: pd.DataFrame, parameters: dict | None = None):
    return kserve_sdk_infer(v2_server, ISVC_NAME, rows, parameters)


def test_kserve_sdk_client_predictions_equal_mlflow_models_serve(v2_server, rows, reference):
    response = sdk_infer(v2_server, rows)
    np.testing.assert_allclose(response.get_output_by_name(TARGET).as_numpy(), reference, rtol=0, atol=1e-9)


# Intervals on request: the signature's `interval` parameter, sent as V2 request `parameters`

INTERVAL_OUTPUTS = (TARGET, LOWER_COLUMN, UPPER_COLUMN)


@pytest.fixture(scope="module")
def in_process_interval(mnt_models, rows) -> pd.DataFrame:
    """The served artifact's own answer, in process, at interval 0.8."""
    return mlflow.pyfunc.load_model(str(mnt_models)).predict(rows, params={"interval": 0.8})


def test_raw_http_v2_intervals_through_request_parameters(v2_server, rows, reference, in_process_interval):
    url = f"{v2_server}/v2/models/{ISVC_NAME}/infer"
    response = requests.post(url, json={**v2_body(rows), "parameters": {"interval": 0.8}}, timeout=60)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert [(o["name"], o["datatype"], o["shape"]) for o in outputs] == [
        (name, "FP64", [len(rows)]) for name in INTERVAL_OUTPUTS
    ]
    for output in outputs:
        np.testing.assert_allclose(output["data"], in_process_interval[output["name"]], rtol=0, atol=1e-9)
    # The point is the answer without the parameter; the bounds hold it between them.
    np.testing.assert_allclose(outputs[0]["data"], reference, rtol=0, atol=1e-9)
    assert (in_process_interval[LOWER_COLUMN] <= in_process_interval[TARGET]).all()
    assert (in_process_interval[TARGET] < in_process_interval[UPPER_COLUMN]).all()
    # Without the parameter: exactly today's single output.
    [plain] = requests.post(url, json=v2_body(rows), timeout=60).json()["outputs"]
    assert (plain["name"], plain["shape"]) == (TARGET, [len(rows)])
    np.testing.assert_allclose(plain["data"], reference, rtol=0, atol=1e-9)


def test_kserve_sdk_client_intervals_through_request_parameters(v2_server, rows, in_process_interval):
    response = sdk_infer(v2_server, rows, parameters={"interval": 0.8})
    assert [output.name for output in response.outputs] == list(INTERVAL_OUTPUTS)
    for name in INTERVAL_OUTPUTS:
        np.testing.assert_allclose(
            response.get_output_by_name(name).as_numpy(), in_process_interval[name], rtol=0, atol=1e-9
        )
    assert [output.name for output in sdk_infer(v2_server, rows.head(3)).outputs] == [TARGET]


BAD_INTERVALS = {
    "out of range": (
        1.5,
        "model rejected the input: invalid parameter 'interval': must be a coverage level "
        "from 0.5 to 0.99 (e.g. 0.8), or null for no interval",
    ),
    "not a number": ("wide", "parameter 'interval' must be a double, got a str"),
    "a boolean": (True, "parameter 'interval' must be a double, got a bool"),
    # kserve's request model takes no null parameter values: no interval is no parameter.
    "null": (
        None,
        "invalid request body: parameters.interval.float: Input should be a valid number; "
        "parameters.interval.int: Input should be a valid integer; parameters.interval.bool: "
        "Input should be a valid boolean; parameters.interval.str: Input should be a valid string",
    ),
}


@pytest.mark.parametrize("case", BAD_INTERVALS, ids=list(BAD_INTERVALS))
def test_a_bad_interval_gets_a_400_naming_it(v2_server, rows, case):
    value, message = BAD_INTERVALS[case]
    body = {**v2_body(rows.head(3)), "parameters": {"interval": value}}
    response = requests.post(f"{v2_server}/v2/models/{ISVC_NAME}/infer", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": message}


def test_an_int64_tensor_for_a_double_column_is_accepted(v2_server, rows, reference):
    body = v2_body(rows)
    households = body["inputs"][FEATURE_COLUMNS.index("households")]
    households.update(datatype="INT64", data=[int(value) for value in households["data"]])
    response = requests.post(f"{v2_server}/v2/models/{ISVC_NAME}/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], reference, rtol=0, atol=1e-9)


def _without(body: dict, name: str) -> dict:
    return {"inputs": [tensor for tensor in body["inputs"] if tensor["name"] != name]}


def _edit(body: dict, name: str, **changes) -> dict:
    edited = json.loads(json.dumps(body))
    next(tensor for tensor in edited["inputs"] if tensor["name"] == name).update(changes)
    return edited


BAD_REQUESTS = {
    "unknown input": (
        lambda b: {"inputs": [*b["inputs"], {**b["inputs"][0], "name": "garden_size"}]},
        "garden_size",
    ),
    "missing input": (lambda b: _without(b, "median_income"), "median_income"),
    "BYTES for a double": (lambda b: _edit(b, "latitude", datatype="BYTES", data=["37.9"] * 3), "latitude"),
    "FP64 for the string": (
        lambda b: _edit(b, "ocean_proximity", datatype="FP64", data=[1.0] * 3),
        "ocean_proximity",
    ),
    "data length not the shape": (lambda b: _edit(b, "population", shape=[4]), "population"),
    "inputs of different lengths": (
        lambda b: _edit(b, "households", shape=[2], data=[100.0, 200.0]),
        "households",
    ),
    "empty batch": (lambda b: {"inputs": [{**t, "shape": [0], "data": []} for t in b["inputs"]]}, "0 rows"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_v2_requests_get_a_400_naming_the_problem(v2_server, rows, reference, case):
    mutate, named = BAD_REQUESTS[case]
    response = requests.post(
        f"{v2_server}/v2/models/{ISVC_NAME}/infer", json=mutate(v2_body(rows.head(3))), timeout=60
    )
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]
    valid = requests.post(f"{v2_server}/v2/models/{ISVC_NAME}/infer", json=v2_body(rows), timeout=60)
    np.testing.assert_allclose(valid.json()["outputs"][0]["data"], reference, rtol=0, atol=1e-9)


def test_the_runtime_also_resolves_the_registry_uri_itself(env, champion, rows, reference):
    """`make serve-v2`: the same runtime given the models:/ URI instead of a downloaded directory."""
    port = free_port()
    command = [
        "python",
        "-m",
        "mlflowserver",
        f"--model_name={ISVC_NAME}",
        f"--model_dir={STORAGE_URI}",
        "--http_host=127.0.0.1",
        f"--http_port={port}",
    ]
    with running_server(command, port, "/v2/health/ready", env=env, timeout=180) as server:
        response = requests.post(
            f"{server.base_url}/v2/models/{ISVC_NAME}/infer", json=v2_body(rows), timeout=60
        )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], reference, rtol=0, atol=1e-9)


def test_an_unknown_model_is_a_404(v2_server, rows):
    response = requests.post(
        f"{v2_server}/v2/models/another-model/infer", json=v2_body(rows.head(1)), timeout=60
    )
    assert response.status_code == 404
