"""Unit tests of mlflowserver.capture: settings, what a row holds, rotation, and drops under overload.

In process, against the tiny pyfunc of tests/integration/servers.py served by the real
MLflowModel (inputs a: double, s: string, b: optional double; output y) and real Parquet files.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest

from mlflowserver import capture
from mlflowserver.capture import Capture, CaptureConfigError, CaptureSettings, capture_files
from mlflowserver.model import MLflowModel
from tests.integration.servers import write_tiny_pyfunc


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_pyfunc(tmp_path_factory.mktemp("tiny") / "model")


def served(model_dir, monkeypatch, directory, **settings) -> MLflowModel:
    monkeypatch.setenv(capture.DIR_ENV, str(directory))
    monkeypatch.setenv(f"{capture.ENV_PREFIX}FLUSH_SECONDS", "0.05")
    for name, value in settings.items():
        monkeypatch.setenv(f"{capture.ENV_PREFIX}{name}", str(value))
    model = MLflowModel("tiny", str(model_dir))
    model.load()
    return model


def v2_request(a: list[float], s: list[str], request_id: str) -> InferRequest:
    inputs = [InferInput("a", [len(a)], "FP64"), InferInput("s", [len(s)], "BYTES")]
    inputs[0].set_data_from_numpy(np.array(a))
    inputs[1].set_data_from_numpy(np.array(s, dtype=object))
    return InferRequest("tiny", inputs, request_id=request_id)


def read_all(directory) -> pd.DataFrame:
    return pd.concat([pq.read_table(f).to_pandas() for f in capture_files(directory)], ignore_index=True)


def test_capture_is_off_without_its_directory(model_dir, monkeypatch):
    monkeypatch.delenv(capture.DIR_ENV, raising=False)
    model = MLflowModel("tiny", str(model_dir))
    model.load()
    assert model.capture is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("MAX_FILE_MB", "lots", "must be a number"), ("BUFFER", "0", "must be positive")],
)
def test_bad_settings_are_refused_naming_the_variable(tmp_path, name, value, message):
    environ = {capture.DIR_ENV: str(tmp_path), f"{capture.ENV_PREFIX}{name}": value}
    with pytest.raises(CaptureConfigError, match=f"{capture.ENV_PREFIX}{name} {message}"):
        CaptureSettings.from_environment(environ)


def test_a_model_whose_inputs_are_tensors_is_not_captured(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(capture.DIR_ENV, str(tmp_path))
    assert capture.from_environment("run", input_names=[], param_names=[]) is None
    assert "the model's inputs are tensors" in caplog.text


def test_an_unwritable_directory_is_refused_at_load(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CaptureConfigError, match="is not writable"):
        Capture(CaptureSettings(blocker / "capture"), "run", ["a"])


def test_each_row_holds_ids_time_run_inputs_outputs_and_parameters(model_dir, monkeypatch, tmp_path):
    model = served(model_dir, monkeypatch, tmp_path)
    before = pd.Timestamp.now(tz="UTC")
    asyncio.run(model.predict(v2_request([1.0, 2.0], ["ab", "c"], "batch-1")))
    asyncio.run(
        model.predict({"instances": [{"a": 3.0, "s": "xyz", "b": 1.5}]}, headers={"x-request-id": "v1-7"})
    )
    model.capture.close()
    rows = read_all(tmp_path).sort_values(["request_id", "row"]).reset_index(drop=True)
    assert rows[["request_id", "row"]].values.tolist() == [["batch-1", 0], ["batch-1", 1], ["v1-7", 0]]
    assert rows["a"].tolist() == [1.0, 2.0, 3.0]
    assert rows["s"].tolist() == ["ab", "c", "xyz"]
    assert rows["y"].tolist() == [4.0, 5.0, 10.5]
    assert rows["b"].isna().tolist() == [True, True, False]
    assert (rows["model_run_id"] == (model._pyfunc.metadata.run_id or "")).all()
    assert ((rows["timestamp"] >= before) & (rows["timestamp"] <= pd.Timestamp.now(tz="UTC"))).all()


def test_only_complete_files_are_visible_and_files_rotate_by_size_and_age(model_dir, monkeypatch, tmp_path):
    model = served(model_dir, monkeypatch, tmp_path, MAX_FILE_SECONDS=0.3)
    asyncio.run(model.predict(v2_request([1.0], ["a"], "first")))
    time.sleep(0.2)
    assert capture_files(tmp_path) == []  # still open, under a hidden name
    assert len(list(tmp_path.glob(".capture-*.partial"))) == 1
    time.sleep(0.4)
    asyncio.run(model.predict(v2_request([2.0], ["b"], "second")))  # the next record rotates the old file
    model.capture.close()
    files = capture_files(tmp_path)
    assert len(files) == 2
    assert [pq.read_table(f).column("request_id").to_pylist() for f in files] == [["first"], ["second"]]
    assert list(tmp_path.glob(".*")) == []

    small = tmp_path / "small"
    model = served(model_dir, monkeypatch, small, MAX_FILE_MB=1e-6)
    for i in range(3):
        asyncio.run(model.predict(v2_request([float(i)], ["a"], f"r{i}")))
        time.sleep(0.15)
    model.capture.close()
    assert len(capture_files(small)) == 3


class SlowDisk(Capture):
    """A capture whose writes wait until ``release`` is set: a disk slower than the traffic."""

    release = threading.Event()

    def _flush(self, records):
        self.release.wait(30)
        super()._flush(records)


def test_a_full_buffer_drops_and_counts_instead_of_waiting(tmp_path):
    recorder = SlowDisk(CaptureSettings(tmp_path, buffer=5, flush_seconds=0.01), "run", ["a"])
    columns = {"a": np.array([1.0, 2.0])}
    started = time.perf_counter()
    for i in range(50):
        recorder.record(f"r{i}", 2, columns, [("y", np.array([1.0, 2.0]))], {})
    assert time.perf_counter() - started < 5  # never waited for the writer (30 s per flush)
    assert 0 < recorder.dropped_rows < 100
    assert recorder.dropped_rows % 2 == 0  # counted in rows: two per request
    SlowDisk.release.set()
    recorder.close()
    assert len(read_all(tmp_path)) == 100 - recorder.dropped_rows


def test_columns_that_come_and_go_share_one_file_with_nulls(tmp_path):
    recorder = Capture(CaptureSettings(tmp_path, flush_seconds=0.05), "run", ["a"], ["interval"])
    columns = {"a": np.array([1.0])}
    for i in range(4):  # one request per flush, the bounds only in every other one
        outputs = [("y", np.array([1.0]))] + ([("y_lower", np.array([0.5]))] if i % 2 else [])
        recorder.record(f"r{i}", 1, columns, outputs, {"interval": 0.8} if i % 2 else {})
        time.sleep(0.2)
    recorder.close()
    files = capture_files(tmp_path)
    assert len(files) == 2  # the first bounds open a file with their column; then no more rotation
    rows = read_all(tmp_path).sort_values("request_id")
    assert rows["y_lower"].isna().tolist() == [True, False, True, False]
    assert rows["param_interval"].tolist()[1::2] == [0.8, 0.8]
