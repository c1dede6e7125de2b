"""The performance harness's short form runs end to end: real servers, real batch commands.

Only completeness is asserted — every figure measured, no failed request, no error — never
a timing: absolute numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from model.data import PROJECT_ROOT
from testbed.processes import process_env

pytestmark = pytest.mark.integration

# Every figure the short form must report (1-k rows, `mlflow models serve --workers 1` and the V2 runtime,
# the compiled trees against the LightGBM path).
EXPECTED = [
    *(f"engine.{engine}.{rows}" for engine in ("lightgbm", "compiled") for rows in (1, 100, 10000)),
    *(f"engine.{figure}" for figure in ("build.seconds", "build.bytes", "load.wall", "load.cpu", "load.rss")),
    "inprocess.compiled.100.rows_per_s",
    "inprocess.compiled.10000.rows_per_s",
    "inprocess.pyfunc.1row.p50",
    "inprocess.python_model.1row.p50",
    "inprocess.regressor.1row.p50",
    "inprocess.pyfunc.1000",
    "inprocess.regressor.1000",
    *(f"intervals.{variant}" for variant in ("before.1row", "off.1row", "on.1row", "off.batch", "on.batch")),
    "client.noop.rps",
    "client.cpu.max",
    *(
        f"{prefix}.{server}.{figure}"
        for server in ("mlflow_serve.w1", "mlflowserver")
        for prefix, figure in [
            ("server", "1row.p50"),
            ("server", "1row.p99"),
            ("server", "rps"),
            ("server", "trivial.rps"),
            ("load", "errors"),
            ("load", "p50"),
            ("load", "p99"),
            ("load", "rss"),
        ]
    ),
    *(f"capture.{figure}" for figure in ("1row.p50", "rps", "rows", "dropped")),
    *(
        f"batch.{tool}.1000.{figure}"
        for tool in ("mlflow_predict", "batch_predict", "batch_predict_lightgbm")
        for figure in ("rows_per_s", "peak_rss")
    ),
    "batch.batch_predict.1000.vs_lightgbm",
    *(f"served.v2_vs_mlflow.{figure}" for figure in ("rows_per_s", "1row.p50", "1row.p99")),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory, raw_data_path) -> dict:
    out = tmp_path_factory.mktemp("bench") / "short.json"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--short", "--json", str(out), "--data", str(raw_data_path)],
        cwd=PROJECT_ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=840,
    )
    print(completed.stdout[-6000:])
    assert out.exists(), completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads(out.read_text())
    result["returncode"] = completed.returncode
    return result


def test_short_form_completes_without_errors(report):
    assert report["errors"] == [], report["errors"]
    assert report["missing"] == []
    assert report["returncode"] == 0


def test_short_form_reports_every_figure(report):
    figures = {figure["key"]: figure for figure in report["figures"]}
    assert [key for key in EXPECTED if key not in figures] == []
    for key in EXPECTED:
        assert figures[key]["value"] is not None, key
    held = [figure for figure in report["figures"] if figure["op"]]
    assert held and all(figure["status"] in ("PASS", "MISS") for figure in held)
    assert all(
        figures[f"load.{server}.errors"]["value"] == 0 for server in ("mlflow_serve.w1", "mlflowserver")
    )
