"""The core chain for real: `mlflow run . -e train` into a temp store, then MLflow's own serving CLIs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from model.data import FEATURE_COLUMNS, PROJECT_ROOT, TARGET, file_md5, split_train_test
from model.packaging import locked_versions
from model.registry import CHAMPION, MODEL_NAME
from testbed.processes import free_port, process_env, running_server

pytestmark = pytest.mark.integration

CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION}"
EXPERIMENT = "integration"
# Small enough to train in seconds; the full default is exercised by the model tests.
QUICK_TRAINING = ["-P", "n_estimators=150", "-P", "cv_folds=2"]


def mlflow_run_train(env: dict, data_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mlflow", "run", str(PROJECT_ROOT), "-e", "train", "--env-manager", "local",
         "--experiment-name", EXPERIMENT, "-P", f"data_path={data_path}", *QUICK_TRAINING, *extra],
        env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory, raw_data_path):
    """A fresh SQLite registry with one `train` run registered through `mlflow run`."""
    root = tmp_path_factory.mktemp("store")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    env = process_env({"MLFLOW_TRACKING_URI": tracking_uri})
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    # Artifacts go to the temp dir, not to the repo's ./mlruns the entry point runs in.
    MlflowClient().create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    completed = mlflow_run_train(env, raw_data_path)
    assert completed.returncode == 0, completed.stderr[-5000:]
    yield {"env": env, "root": root, "tracking_uri": tracking_uri}
    mlflow.set_tracking_uri(previous_uri)


@pytest.fixture(scope="module")
def rows(raw_frame) -> pd.DataFrame:
    test = split_train_test(raw_frame)[1]
    sample = test.head(40)[list(FEATURE_COLUMNS)].copy()
    sample.iloc[3, sample.columns.get_loc("total_bedrooms")] = np.nan
    return sample.reset_index(drop=True)


@pytest.fixture(scope="module")
def in_process(store, rows) -> np.ndarray:
    return mlflow.pyfunc.load_model(CHAMPION_URI).predict(rows)[TARGET].to_numpy()


def test_train_registers_a_champion_with_its_lineage(store, raw_data_path):
    client = MlflowClient()
    version = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    run = client.get_run(version.run_id)
    for metric in ("test_rmse", "test_mae", "test_r2", "cv_rmse_mean", "cv_rmse_std", "training_seconds"):
        assert np.isfinite(run.data.metrics[metric]), metric
    assert run.data.params["n_estimators"] == "150"
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == file_md5(raw_data_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert run.data.tags["mlflow.source.git.commit"] == head.stdout.strip()


def test_logged_requirements_are_the_lock(store):
    requirements = Path(mlflow.artifacts.download_artifacts(f"{CHAMPION_URI}/requirements.txt")).read_text()
    pins = locked_versions()
    logged = [line for line in requirements.splitlines() if line and not line.startswith("#")]
    assert logged and all(line == f"{line.split('==')[0]}=={pins[line.split('==')[0]]}" for line in logged)


def test_a_second_run_registers_a_challenger_and_leaves_the_champion(store, raw_data_path):
    completed = mlflow_run_train(store["env"], raw_data_path, "-P", "seed=7")
    assert completed.returncode == 0, completed.stderr[-5000:]
    client = MlflowClient()
    assert client.get_model_version_by_alias(MODEL_NAME, "challenger").version == 2
    assert client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version == 1


def test_artifact_loads_in_a_fresh_process_outside_the_repo(store, rows, in_process, tmp_path):
    rows.to_csv(tmp_path / "rows.csv", index=False)
    script = (
        "import importlib.util, json, sys, mlflow, pandas as pd\n"
        "assert importlib.util.find_spec('model') is None, 'the repo must not be importable here'\n"
        f"frame = pd.read_csv('rows.csv')\n"
        f"print(json.dumps(mlflow.pyfunc.load_model('{CHAMPION_URI}').predict(frame)['{TARGET}'].tolist()))\n"
    )
    env = {key: value for key, value in store["env"].items() if key != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    np.testing.assert_allclose(json.loads(completed.stdout.strip().splitlines()[-1]), in_process, rtol=0, atol=1e-9)


def served_predictions(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([row[TARGET] for row in response.json()["predictions"]])


def test_served_predictions_equal_in_process_ones_in_every_request_form(store, rows, in_process):
    port = free_port()
    command = ["mlflow", "models", "serve", "-m", CHAMPION_URI, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port)]
    with running_server(command, port, "/ping", env=store["env"], timeout=180) as server:
        url = f"{server.base_url}/invocations"
        records = json.loads(rows.to_json(orient="records"))
        bodies = {
            "dataframe_split": {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))},
            "dataframe_records": {"dataframe_records": records},
            "inputs": {"inputs": {column: json.loads(rows[column].to_json(orient="values")) for column in rows}},
        }
        for form, body in bodies.items():
            np.testing.assert_allclose(
                served_predictions(requests.post(url, json=body, timeout=30)), in_process, rtol=0, atol=1e-9,
                err_msg=form,
            )
        csv_response = requests.post(url, data=rows.to_csv(index=False), headers={"Content-Type": "text/csv"}, timeout=30)
        np.testing.assert_allclose(served_predictions(csv_response), in_process, rtol=0, atol=1e-9)
        one_row = requests.post(url, json={"dataframe_records": records[:1]}, timeout=30)
        np.testing.assert_allclose(served_predictions(one_row), in_process[:1], rtol=0, atol=1e-9)

        broken = requests.post(url, json={"dataframe_records": [records[0], {**records[1], "households": 0}]}, timeout=30)
        assert broken.status_code == 400
        assert "column 'households', row 1: must be greater than 0" in broken.json()["message"]
        assert "Traceback" not in broken.text
        after = requests.post(url, json={"dataframe_records": records[:1]}, timeout=30)
        np.testing.assert_allclose(served_predictions(after), in_process[:1], rtol=0, atol=1e-9)


def test_batch_predict_writes_one_prediction_per_row_in_order(store, rows, in_process, tmp_path):
    input_path, output_path = tmp_path / "in.csv", tmp_path / "out.json"
    rows.to_csv(input_path, index=False)
    completed = subprocess.run(
        ["mlflow", "models", "predict", "-m", CHAMPION_URI, "-i", str(input_path), "-o", str(output_path),
         "-t", "csv", "--env-manager", "local"],
        env=store["env"], capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    predictions = [row[TARGET] for row in json.loads(output_path.read_text())["predictions"]]
    assert len(predictions) == len(rows)
    np.testing.assert_allclose(predictions, in_process, rtol=0, atol=1e-9)
