"""The core chain for real: `mlflow run . -e train` into a temp store, then MLflow's own serving CLIs
(with and without the `interval` parameter) and the champion's pages in `mlflow ui` in a real browser."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from model.data import FEATURE_COLUMNS, PROJECT_ROOT, TARGET, file_md5, split_train_test
from model.intervals import LOWER_COLUMN, UPPER_COLUMN
from model.packaging import locked_versions
from model.registry import CHAMPION, MODEL_NAME
from model.report import PLOTS
from testbed.mlflow_cli import mlflow_models_predict, mlflow_models_serve, mlflow_run
from testbed.processes import Server, free_port, process_env, running_server
from tests.integration.browser import SCREENSHOTS, mlflow_ui_in_chromium

pytestmark = pytest.mark.integration

CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION}"
EXPERIMENT = "integration"
# Small enough to train in seconds; the full default is exercised by the model tests.
QUICK_TRAINING = ["n_estimators=150", "cv_folds=2"]


def mlflow_run_train(env: dict, data_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        mlflow_run(PROJECT_ROOT, "train", EXPERIMENT, f"data_path={data_path}", *QUICK_TRAINING, *extra),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
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
    for metric in (
        "test_rmse",
        "test_mae",
        "test_r2",
        "cv_rmse_mean",
        "cv_rmse_std",
        "training_seconds",
        "test_interval_coverage_50",
        "test_interval_coverage_90",
        "test_interval_width_median_80",
    ):
        assert np.isfinite(run.data.metrics[metric]), metric
    # The calibration target, logged with the test metrics by the registering run.
    assert 0.78 <= run.data.metrics["test_interval_coverage_80"] <= 0.82
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
    completed = mlflow_run_train(store["env"], raw_data_path, "seed=7")
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
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    np.testing.assert_allclose(
        json.loads(completed.stdout.strip().splitlines()[-1]), in_process, rtol=0, atol=1e-9
    )


def served_predictions(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([row[TARGET] for row in response.json()["predictions"]])


@contextmanager
def serving_the_champion(store) -> Iterator[Server]:
    """`mlflow models serve` on the champion, on a free loopback port, stopped on exit."""
    port = free_port()
    with running_server(
        mlflow_models_serve(CHAMPION_URI, port), port, "/ping", env=store["env"], timeout=180
    ) as server:
        yield server


def test_served_predictions_equal_in_process_ones_in_every_request_form(store, rows, in_process):
    with serving_the_champion(store) as server:
        url = f"{server.base_url}/invocations"
        records = json.loads(rows.to_json(orient="records"))
        bodies = {
            "dataframe_split": {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))},
            "dataframe_records": {"dataframe_records": records},
            "inputs": {
                "inputs": {column: json.loads(rows[column].to_json(orient="values")) for column in rows}
            },
        }
        for form, body in bodies.items():
            np.testing.assert_allclose(
                served_predictions(requests.post(url, json=body, timeout=30)),
                in_process,
                rtol=0,
                atol=1e-9,
                err_msg=form,
            )
        csv_response = requests.post(
            url, data=rows.to_csv(index=False), headers={"Content-Type": "text/csv"}, timeout=30
        )
        np.testing.assert_allclose(served_predictions(csv_response), in_process, rtol=0, atol=1e-9)
        one_row = requests.post(url, json={"dataframe_records": records[:1]}, timeout=30)
        np.testing.assert_allclose(served_predictions(one_row), in_process[:1], rtol=0, atol=1e-9)

        broken = requests.post(
            url, json={"dataframe_records": [records[0], {**records[1], "households": 0}]}, timeout=30
        )
        assert broken.status_code == 400
        assert "column 'households', row 1: must be greater than 0" in broken.json()["message"]
        assert "Traceback" not in broken.text
        after = requests.post(url, json={"dataframe_records": records[:1]}, timeout=30)
        np.testing.assert_allclose(served_predictions(after), in_process[:1], rtol=0, atol=1e-9)


def test_batch_predict_writes_one_prediction_per_row_in_order(store, rows, in_process, tmp_path):
    input_path, output_path = tmp_path / "in.csv", tmp_path / "out.json"
    rows.to_csv(input_path, index=False)
    completed = subprocess.run(
        mlflow_models_predict(CHAMPION_URI, input_path, output_path, "csv"),
        env=store["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    predictions = [row[TARGET] for row in json.loads(output_path.read_text())["predictions"]]
    assert len(predictions) == len(rows)
    np.testing.assert_allclose(predictions, in_process, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Intervals on request: the `interval` inference parameter through MLflow's own CLIs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def in_process_interval(store, rows) -> pd.DataFrame:
    return mlflow.pyfunc.load_model(CHAMPION_URI).predict(rows, params={"interval": 0.8})


def assert_intervals(predictions: list[dict], expected: pd.DataFrame) -> None:
    assert [list(row) for row in predictions] == [[TARGET, LOWER_COLUMN, UPPER_COLUMN]] * len(expected)
    served = pd.DataFrame(predictions)
    np.testing.assert_allclose(served.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)
    assert (served[LOWER_COLUMN] <= served[TARGET]).all() and (served[TARGET] <= served[UPPER_COLUMN]).all()


def test_served_intervals_on_request_and_the_plain_answer_without(
    store, rows, in_process, in_process_interval
):
    with serving_the_champion(store) as server:
        url = f"{server.base_url}/invocations"
        split_body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        plain = requests.post(url, json=split_body, timeout=30)
        assert [list(row) for row in plain.json()["predictions"]] == [[TARGET]] * len(rows)
        np.testing.assert_allclose(served_predictions(plain), in_process, rtol=0, atol=1e-9)
        with_interval = requests.post(url, json={**split_body, "params": {"interval": 0.8}}, timeout=30)
        assert with_interval.status_code == 200, with_interval.text
        assert_intervals(with_interval.json()["predictions"], in_process_interval)
        records = {
            "dataframe_records": json.loads(rows.head(1).to_json(orient="records")),
            "params": {"interval": 0.8},
        }
        assert_intervals(
            requests.post(url, json=records, timeout=30).json()["predictions"], in_process_interval.head(1)
        )
        assert [
            list(row)
            for row in requests.post(
                url, json={**split_body, "params": {"interval": None}}, timeout=30
            ).json()["predictions"]
        ] == [[TARGET]] * len(rows)

        out_of_range = requests.post(url, json={**split_body, "params": {"interval": 1.5}}, timeout=30)
        assert out_of_range.status_code == 400
        assert out_of_range.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert out_of_range.json()["message"] == (
            "invalid parameter 'interval': must be a coverage level from 0.5 to 0.99 (e.g. 0.8), or null for no interval"
        )
        not_a_number = requests.post(url, json={**split_body, "params": {"interval": "wide"}}, timeout=30)
        assert (
            not_a_number.status_code == 400 and not_a_number.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        )
        assert "interval" in not_a_number.json()["message"]


def test_mlflow_models_predict_takes_the_interval_from_a_json_input(
    store, rows, in_process_interval, tmp_path
):
    """`mlflow models predict` has no params option: with `-t json` it reads the same body the
    server takes, `params` included (pyfunc/scoring_server `_predict`); a CSV input has none."""
    input_path, output_path = tmp_path / "in.json", tmp_path / "out.json"
    body = {
        "dataframe_split": json.loads(rows.to_json(orient="split", index=False)),
        "params": {"interval": 0.8},
    }
    input_path.write_text(json.dumps(body))
    completed = subprocess.run(
        mlflow_models_predict(CHAMPION_URI, input_path, output_path, "json"),
        env=store["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert_intervals(json.loads(output_path.read_text())["predictions"], in_process_interval)


# ---------------------------------------------------------------------------------------------
# The evaluation where users look: the champion's pages in `mlflow ui`, in a real browser
# ---------------------------------------------------------------------------------------------

# Where the screenshots stay for a human to look at (the test's own temp dir is removed).
# Every artifact image of the page: whether it loaded, its size, and the share of its height
# not clipped away by an ancestor that hides overflow (a collapsed description, say).
IMAGES = """Array.from(document.images).filter(i => i.src.includes('get-artifact')).map(i => {
  const r = i.getBoundingClientRect(); let top = r.top, bottom = r.bottom;
  for (let e = i.parentElement; e; e = e.parentElement) {
    if (['hidden', 'clip'].includes(getComputedStyle(e).overflowY)) {
      const c = e.getBoundingClientRect(); top = Math.max(top, c.top); bottom = Math.min(bottom, c.bottom); } }
  return {src: decodeURIComponent(i.src), loaded: i.complete && i.naturalWidth > 0, width: r.width,
          height: r.height, shown: r.height ? Math.max(0, bottom - top) / r.height : 0} })"""
ALL_LOADED = f"(() => {{ const images = {IMAGES}; return images.length >= 5 && images.every(i => i.loaded) ? images : null }})()"
# The run page collapses a long description behind "Show more".
EXPAND = """(() => { const toggle = Array.from(document.querySelectorAll('button')).find(b => /^Show (more|less)$/.test(b.innerText.trim()));
  if (toggle && toggle.innerText.trim() === 'Show more') { toggle.click(); } return Boolean(toggle) })()"""
EXPANDED = "Array.from(document.querySelectorAll('button')).some(b => b.innerText.trim() === 'Show less')"


def shown_plots(page, url: str, screenshot: Path) -> dict[str, dict]:
    """The page's plots, loaded and (after "Show more", where the description is collapsed) drawn."""
    page.navigate("about:blank")  # a hash change alone would keep the previous page's DOM
    page.navigate(url)
    images = page.wait_for(ALL_LOADED, timeout=120)
    assert images, f"{url}: the plots never loaded; images: {page.evaluate(IMAGES)}"
    if min(image["shown"] for image in images) < 0.95:
        assert page.evaluate(EXPAND) and page.wait_for(EXPANDED, timeout=30), (
            f"{url}: description not expanded"
        )
    page.wait_for(
        f"(() => {{ const images = {IMAGES}; return images.every(i => i.shown > 0.95) }})()", timeout=30
    )
    page.screenshot(screenshot)
    images = page.evaluate(IMAGES)  # as the screenshot shows them
    return {Path(image["src"].split("path=")[1].split("&")[0]).name: image for image in images}


def test_the_champions_version_and_run_pages_show_the_evaluation_plots(store, tmp_path):
    version = MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION)
    run = MlflowClient().get_run(version.run_id)
    with mlflow_ui_in_chromium(store, tmp_path, height=5200) as (ui_url, page):
        pages = {
            "version": f"{ui_url}/#/models/{MODEL_NAME}/versions/{version.version}",
            "run": f"{ui_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}",
        }
        for name, url in pages.items():
            plots = shown_plots(page, url, SCREENSHOTS / f"champion-{name}.png")
            assert set(plots) == set(PLOTS), (name, sorted(plots))
            for plot, image in plots.items():
                assert f"run_uuid={run.info.run_id}" in image["src"], (name, plot)
                assert image["width"] > 200 and image["height"] > 150, (name, plot, image)  # drawn…
                assert image["shown"] > 0.95, (name, plot, image)  # …and not clipped away
            assert (SCREENSHOTS / f"champion-{name}.png").stat().st_size > 50_000
    assert "## Evaluation on the frozen test split" in version.description
    assert run.data.tags["mlflow.note.content"] == version.description
