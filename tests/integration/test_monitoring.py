"""Monitoring for real: capture from the running V2 runtime, `make monitor`, its run and version tags
in a temp SQLite store, bad input, `fail_on`, and the path from `degraded` to a judged challenger.

* Capture fidelity: the runtime (the ClusterServingRuntime's command, gRPC on) with capture on;
  REST JSON, V1 and gRPC requests, single rows and batches, with and without intervals; after
  the server stops, every captured row equals what its client sent and got, by request id.
* `make serve-v2` with capture on serves 1,000 held-out test blocks; `make monitor` on the
  captured directory with their true values prints `ok`, logs the run (report, summary, metrics)
  and tags the champion; the champion's version page and the run's report in `mlflow ui`, in a
  headless Chromium.
* A batch_predict output with its ids and input is a window too.
* Bad input: one-line errors, no run, no tag moved. `fail_on=degraded` exits non-zero on prices
  × 1.3 and writes the labelled rows; `make retrain` on them registers a challenger that the
  promotion gates judge.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import grpc
import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from mlflow import MlflowClient

from mlflowserver.capture import DIR_ENV, ENV_PREFIX, capture_files
from model.batch import BatchJob
from model.batch import run as batch_run
from model.data import CATEGORICAL_COLUMN, FEATURE_COLUMNS, PROJECT_ROOT, TARGET
from model.intervals import LOWER_COLUMN, UPPER_COLUMN
from model.monitoring.monitor import CHECKED_TAG, REPORT, RUN_TAG, SUMMARY, VERDICT_TAG, MonitorJob
from model.monitoring.monitor import run as monitor_run
from model.monitoring.window import MonitorError
from model.registry import CHALLENGER, CHAMPION, MODEL_NAME
from testbed.mlflow_cli import mlflow_run, mlflowserver
from testbed.processes import free_port, process_env, running_server
from tests.integration.browser import SCREENSHOTS, mlflow_ui_in_chromium

pytestmark = pytest.mark.integration

TRAIN_EXPERIMENT, MONITOR_EXPERIMENT = "integration", "monitoring"
# Small models, quick to fit (twice: the champion, then the retrained challenger); the verdicts
# compare a version with its own test figures, whatever its quality.
QUICK_TRAINING = ["n_estimators=40", "num_leaves=31", "n_models=1", "cv_folds=0"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, raw_data_path):
    """A fresh SQLite registry with a champion trained through `mlflow run`."""
    root = tmp_path_factory.mktemp("store")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    env = process_env({"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_EXPERIMENT_NAME": MONITOR_EXPERIMENT})
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    # Artifacts go to the temp dir, not to the repo's ./mlruns the entry points run in.
    for name in (TRAIN_EXPERIMENT, MONITOR_EXPERIMENT):
        client.create_experiment(name, artifact_location=(root / name).as_uri())
    # In-process runs (the batch job, the monitor) go there too, as `mlflow run` would send them.
    previous_experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    os.environ["MLFLOW_EXPERIMENT_NAME"] = MONITOR_EXPERIMENT
    completed = subprocess.run(
        mlflow_run(PROJECT_ROOT, "train", TRAIN_EXPERIMENT, f"data_path={raw_data_path}", *QUICK_TRAINING),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    yield {"env": env, "root": root, "tracking_uri": tracking_uri}
    mlflow.set_tracking_uri(previous_uri)
    if previous_experiment is None:
        os.environ.pop("MLFLOW_EXPERIMENT_NAME")
    else:
        os.environ["MLFLOW_EXPERIMENT_NAME"] = previous_experiment


@pytest.fixture(scope="module")
def test_blocks(split) -> pd.DataFrame:
    blocks = split[1].reset_index(drop=True)
    blocks.loc[3, "total_bedrooms"] = np.nan
    return blocks


def champion() -> str:
    return str(MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION).version)


def capture_env(store, directory: Path) -> dict:
    return {**store["env"], DIR_ENV: str(directory), f"{ENV_PREFIX}FLUSH_SECONDS": "0.2"}


def read_capture(directory: Path) -> pd.DataFrame:
    return pd.concat([pq.read_table(f).to_pandas() for f in capture_files(directory)], ignore_index=True)


# ------------------------------------------------------------------ capture fidelity


def v2_json(rows: pd.DataFrame, request_id: str | None, interval: float | None) -> dict:
    inputs = [
        {
            "name": c,
            "shape": [len(rows)],
            "datatype": "BYTES" if c == CATEGORICAL_COLUMN else "FP64",
            "data": [None if pd.isna(v) else v for v in rows[c].tolist()],
        }
        for c in FEATURE_COLUMNS
    ]
    body = {"inputs": inputs} | ({"id": request_id} if request_id else {})
    return body | ({"parameters": {"interval": interval}} if interval else {})


def grpc_request(rows: pd.DataFrame, request_id: str, interval: float | None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="california-housing", id=request_id)
    for c in FEATURE_COLUMNS:
        tensor = request.inputs.add(name=c, shape=[len(rows)])
        if c == CATEGORICAL_COLUMN:
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.extend(v.encode() for v in rows[c])
        else:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.extend(rows[c].astype(float).tolist())
    if interval:
        # kserve's protobuf has no double_param: the bytes tritonclient.grpc sends for one (field 4, fixed64).
        request.parameters["interval"].CopyFrom(
            pb.InferParameter.FromString(b"\x21" + struct.pack("<d", interval))
        )
    return request


@pytest.fixture(scope="module")
def fidelity(store, test_blocks, tmp_path_factory):
    """Requests of every kind to the runtime with capture on; (what clients got, the capture)."""
    directory = tmp_path_factory.mktemp("capture-fidelity")
    port, grpc_port = free_port(), free_port()
    command = mlflowserver(f"models:/{MODEL_NAME}@{CHAMPION}", "california-housing", port, grpc_port)
    sent: dict[str, tuple[pd.DataFrame, dict[str, list], float | None]] = {}
    rows = test_blocks.head(60)[list(FEATURE_COLUMNS)]
    with running_server(
        command, port, "/v2/health/ready", env=capture_env(store, directory), timeout=180
    ) as srv:
        url = f"{srv.base_url}/v2/models/california-housing/infer"
        cases = [("rest-one-0", rows.iloc[[3]], None), ("rest-one-1", rows.iloc[[4]], 0.8)]
        cases += [("rest-batch", rows.iloc[5:30], 0.9), (None, rows.iloc[30:33], None)]
        for request_id, chunk, interval in cases:
            answer = requests.post(url, json=v2_json(chunk, request_id, interval), timeout=60)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            sent[body["id"]] = (chunk, {o["name"]: o["data"] for o in body["outputs"]}, interval)
        v1 = requests.post(
            f"{srv.base_url}/v1/models/california-housing:predict",
            json={"instances": json.loads(rows.iloc[33:36].to_json(orient="records"))},
            headers={"x-request-id": "v1-batch"},
            timeout=60,
        )
        assert v1.status_code == 200, v1.text
        sent["v1-batch"] = (rows.iloc[33:36], {TARGET: v1.json()["predictions"]}, None)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = GRPCInferenceServiceStub(channel)
            for request_id, chunk, interval in [
                ("grpc-one", rows.iloc[[40]], 0.8),
                ("grpc-batch", rows.iloc[41:60], None),
            ]:
                answer = stub.ModelInfer(grpc_request(chunk, request_id, interval))
                outputs = {o.name: list(o.contents.fp64_contents) for o in answer.outputs}
                if not any(outputs.values()):  # raw_output_contents: little-endian float64
                    outputs = {
                        o.name: np.frombuffer(raw, dtype="<f8").tolist()
                        for o, raw in zip(answer.outputs, answer.raw_output_contents, strict=True)
                    }
                sent[answer.id] = (chunk, outputs, interval)
    return sent, read_capture(directory)


def test_the_capture_holds_what_every_client_sent_and_got(fidelity):
    sent, captured = fidelity
    assert sorted(captured["request_id"].unique()) == sorted(sent)
    assert len(captured) == sum(len(chunk) for chunk, _, _ in sent.values())
    for request_id, (chunk, outputs, interval) in sent.items():
        got = captured[captured["request_id"] == request_id].sort_values("row")
        assert got["row"].tolist() == list(range(len(chunk))), request_id
        for column in FEATURE_COLUMNS:
            expected = chunk[column].tolist()
            if column == CATEGORICAL_COLUMN:
                assert got[column].tolist() == expected, (request_id, column)
            else:
                np.testing.assert_array_equal(
                    got[column].to_numpy(float), np.array(expected, float), err_msg=request_id
                )
        for name, values in outputs.items():
            np.testing.assert_array_equal(
                got[name].to_numpy(float), np.array(values, float), err_msg=f"{request_id} {name}"
            )
        if interval is None:
            assert got["param_interval"].isna().all(), request_id
            if LOWER_COLUMN in got:
                assert got[LOWER_COLUMN].isna().all() and got[UPPER_COLUMN].isna().all(), request_id
        else:
            assert (got["param_interval"] == interval).all(), request_id
            assert set(outputs) == {TARGET, LOWER_COLUMN, UPPER_COLUMN}, request_id
    assert captured["model_run_id"].nunique() == 1


# ------------------------------------------------------------------ make serve-v2 → make monitor


@pytest.fixture(scope="module")
def window(store, test_blocks, tmp_path_factory) -> Path:
    """1,000 held-out test blocks served by `make serve-v2` with capture on, in batches and single rows."""
    directory = tmp_path_factory.mktemp("capture-window")
    port = free_port()
    blocks = test_blocks.head(1000)
    command = ["make", "-s", "-C", str(PROJECT_ROOT), "serve-v2", f"V2_PORT={port}"]
    with running_server(
        command, port, "/v2/health/ready", env=capture_env(store, directory), timeout=180
    ) as srv:
        url = f"{srv.base_url}/v2/models/california-housing/infer"
        for start in range(0, 1000, 100):
            chunk = blocks.iloc[start : start + 100]
            for request_id, rows in [
                (f"b{start}", chunk.iloc[:-2]),
                (f"s{start}-0", chunk.iloc[[-2]]),
                (f"s{start}-1", chunk.iloc[[-1]]),
            ]:
                answer = requests.post(url, json=v2_json(rows, request_id, 0.8), timeout=60)
                assert answer.status_code == 200, answer.text
    labels = []
    for start in range(0, 1000, 100):
        chunk = blocks.iloc[start : start + 100][TARGET].tolist()
        labels += [(f"b{start}", i, v) for i, v in enumerate(chunk[:-2])]
        labels += [(f"s{start}-0", 0, chunk[-2]), (f"s{start}-1", 0, chunk[-1])]
    frame = pd.DataFrame(labels, columns=["request_id", "row", TARGET])
    frame.to_csv(directory.parent / "labels.csv", index=False)
    frame.assign(**{TARGET: frame[TARGET] * 1.3}).to_csv(directory.parent / "labels-moved.csv", index=False)
    return directory


def make_monitor(store, window: Path, *params: str) -> subprocess.CompletedProcess:
    settings = " ".join(f"-P {p}" for p in params)
    command = ["make", "-s", "-C", str(PROJECT_ROOT), "monitor", f"WINDOW={window}"]
    command += [f"MONITOR_EXPERIMENT={MONITOR_EXPERIMENT}", f"MLFLOW_PARAMS={settings}"]
    return subprocess.run(command, env=store["env"], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def monitored(store, window):
    """`make monitor` on the served window with its true values."""
    completed = make_monitor(store, window, f"labels={window.parent / 'labels.csv'}")
    assert completed.returncode == 0, completed.stderr[-5000:]
    return completed


def test_make_monitor_prints_its_verdict_logs_the_run_and_tags_the_champion(store, monitored):
    assert "Verdict: OK for CaliforniaHousingRegressor version 1 on 1,000 rows" in monitored.stdout
    assert "On 1,000 rows with true values, live RMSE" in monitored.stdout
    version = MlflowClient().get_model_version(MODEL_NAME, champion())
    assert version.tags[VERDICT_TAG] == "ok"
    run = MlflowClient().get_run(version.tags[RUN_TAG])
    assert version.tags[CHECKED_TAG]
    assert run.data.tags["model_version"] == str(version.version) and run.data.tags["verdict"] == "ok"
    metrics = run.data.metrics
    assert metrics["rows"] == 1000 and metrics["labelled_rows"] == 1000 and metrics["interval_rows"] == 1000
    assert metrics["served_level"] == 0.8
    assert abs(metrics["live_coverage"] - metrics["test_coverage"]) <= 0.03
    assert metrics["drifted_columns"] == 0
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "monitoring")}
    assert {REPORT, SUMMARY, "monitoring/columns.json"} <= artifacts
    html = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=REPORT)).read_text()
    assert "median_income" in html and len(html) > 100_000


def test_the_verdict_shows_in_mlflow_ui_on_the_champion_and_its_run(store, monitored, tmp_path):
    version = MlflowClient().get_model_version(MODEL_NAME, champion())
    run = MlflowClient().get_run(version.tags[RUN_TAG])
    with mlflow_ui_in_chromium(store, tmp_path, height=2400) as (ui_url, page):
        page.navigate(f"{ui_url}/#/models/{MODEL_NAME}/versions/{version.version}")
        shown = page.wait_for(f"document.body && document.body.innerText.includes('{run.info.run_id}')")
        page.screenshot(SCREENSHOTS / "monitoring-version.png")
        text = page.evaluate("document.body.innerText")
        assert shown and re.search(rf"{re.escape(VERDICT_TAG)}\s+ok\b", text), text[:3000]  # the tag's row
        page.navigate("about:blank")
        page.navigate(f"{ui_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
        assert page.wait_for("document.body && document.body.innerText.includes('Verdict: OK')", timeout=90)
        page.screenshot(SCREENSHOTS / "monitoring-run.png")
        page.navigate("about:blank")
        page.navigate(
            f"{ui_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts/{REPORT}"
        )
        # MLflow shows an HTML artifact in a sandboxed iframe (no access to its document from
        # here) loaded from a blob URL of this page: read what it shows from that URL.
        assert page.wait_for("!!document.querySelector('iframe.mlflow-html-iframe')", timeout=90)
        shown = page.evaluate(
            "fetch(document.querySelector('iframe.mlflow-html-iframe').src).then(r => r.text())"
            ".then(t => t.includes(\"Drift in column 'median_income'\"))"
        )
        time.sleep(5)  # the report's own scripts draw its charts
        page.screenshot(SCREENSHOTS / "monitoring-report.png")
        assert shown
    assert (SCREENSHOTS / "monitoring-report.png").stat().st_size > 30_000


def test_a_batch_predict_output_with_its_input_is_a_window(store, test_blocks, tmp_path):
    blocks = test_blocks.head(1000).assign(block_id=lambda f: [f"blk-{i}" for i in range(len(f))])
    blocks.to_parquet(tmp_path / "blocks.parquet")
    job = BatchJob(
        input=str(tmp_path / "blocks.parquet"),
        output=str(tmp_path / "scored.parquet"),
        id_column="block_id",
        interval=0.8,
    )
    batch_run(job)
    blocks[["block_id", TARGET]].to_csv(tmp_path / "labels.csv", index=False)
    outcome, failed = monitor_run(
        MonitorJob(
            window=tmp_path / "scored.parquet",
            inputs=tmp_path / "blocks.parquet",
            id_column="block_id",
            interval=0.8,
            labels=tmp_path / "labels.csv",
            model_version=CHAMPION,
        )
    )
    assert outcome.assessment.verdict == "ok" and not failed
    assert outcome.assessment.quality.rows == 1000 and outcome.assessment.quality.level == 0.8


# ------------------------------------------------------------------ bad input: one line, nothing logged


def runs_and_tags() -> tuple[int, dict]:
    experiment = MlflowClient().get_experiment_by_name(MONITOR_EXPERIMENT)
    runs = MlflowClient().search_runs([experiment.experiment_id])
    return len(runs), MlflowClient().get_model_version(MODEL_NAME, champion()).tags


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w, t: {"window": t / "empty"}, "no capture files"),
        (lambda w, t: {"since": "2999-01-01T00:00:00Z"}, "no rows in the window"),
        (lambda w, t: {"model_version": "99"}, "has no version or alias '99'"),
        (lambda w, t: {"labels": t / "unrelated.csv"}, "join none of the window's 1,000 rows"),
        (lambda w, t: {"window": t / "no-income.parquet"}, "lacks column 'median_income'"),
    ],
    ids=["no-capture", "empty-range", "unknown-version", "labels-join-nothing", "missing-column"],
)
def test_bad_input_is_one_line_and_logs_nothing(store, window, monitored, tmp_path, change, message):
    (tmp_path / "empty").mkdir()
    pd.DataFrame({"request_id": ["nope"], "row": [0], TARGET: [1.0]}).to_csv(
        tmp_path / "unrelated.csv", index=False
    )
    read_capture(window).drop(columns=["median_income"]).to_parquet(tmp_path / "no-income.parquet")
    before = runs_and_tags()
    with pytest.raises(MonitorError, match=message) as raised:
        monitor_run(MonitorJob(**{"window": window, **change(window, tmp_path)}))
    assert "\n" not in str(raised.value)
    assert runs_and_tags() == before


def test_the_command_says_a_bad_input_in_one_line(store, tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "projects.monitor", "--window", str(tmp_path)],
        env=store["env"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 1
    assert completed.stderr.strip() == f"monitor: no capture files (capture-*.parquet) in {tmp_path}"


# ------------------------------------------------------------------ degraded → retrain → the gates


def test_a_moved_market_fails_the_pipeline_and_retraining_is_judged_by_the_gates(
    store, window, monitored, tmp_path
):
    labelled = tmp_path / "labelled.csv"
    completed = make_monitor(
        store,
        window,
        f"labels={window.parent / 'labels-moved.csv'}",
        "fail_on=degraded",
        f"labelled_output={labelled}",
    )
    assert completed.returncode != 0
    assert "Verdict: DEGRADED" in completed.stdout and "live RMSE" in completed.stdout
    assert "monitor: verdict degraded (fail_on=degraded)" in completed.stderr
    before = MlflowClient().get_model_version(MODEL_NAME, champion())
    assert before.tags[VERDICT_TAG] == "degraded"
    assert len(pd.read_csv(labelled)) == 1000

    retrain = subprocess.run(
        ["make", "-s", "-C", str(PROJECT_ROOT), "retrain", f"NEW_DATA={labelled}"]
        + [f"RETRAIN_DATA={tmp_path / 'combined.csv'}", f"EXPERIMENT={TRAIN_EXPERIMENT}"]
        + ["TRAIN_PARAMS=" + " ".join(f"-P {p}" for p in QUICK_TRAINING)],
        env=store["env"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    client = MlflowClient()
    newest = max(client.search_model_versions(f"name='{MODEL_NAME}'"), key=lambda v: int(v.version))
    assert newest.version != before.version, retrain.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "combined.csv")) == 20_640 + 1000
    decision = newest.tags["promotion.decision"]
    # The champion moved only if the gates let it, and make retrain says which.
    if decision == "promoted":
        assert retrain.returncode == 0 and champion() == str(newest.version)
    else:
        assert decision == "refused" and retrain.returncode != 0, retrain.stderr[-3000:]
        assert champion() == str(before.version)
        assert client.get_model_version_by_alias(MODEL_NAME, CHALLENGER).version == newest.version
