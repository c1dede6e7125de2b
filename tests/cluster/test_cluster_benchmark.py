"""The benchmark's cluster section runs end to end in its short form (``python -m benchmarks
--short --only cluster``: its own 2-worker cluster, 20 k rows): every figure measured, no
error, nothing left running — never a timing."""

from __future__ import annotations

import contextlib
import json
import sys

import psutil
import pytest

from model.data import PROJECT_ROOT
from testbed.processes import process_env, run_measured
from testbed.spark_cluster import MARKER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3000)]

CONFIGURATIONS = ("local_engine", "local2", "workers1", "workers2")
EXPECTED = [
    *(
        f"cluster.{key}.{figure}"
        for key in CONFIGURATIONS
        for figure in ("rows_per_s", "broadcast_s", "fixed_s")
    ),
    *(f"cluster.{key}.session_s" for key in CONFIGURATIONS if key != "local_engine"),
]
# From the marginal rates: a value, or why there is none (too few rows for the machine's noise,
# which the short form's may be; or a cluster no faster at the margin).
DERIVED = ["cluster.payoff_rows", "cluster.per_core_rows_per_s", "cluster.projected.32cores"]


def bench_spark_processes() -> list[psutil.Process]:
    """Processes of a cluster the harness started (under its ``benchmarks-…`` work directory)."""
    found = []
    for process in psutil.process_iter():
        try:
            if "/benchmarks-" in process.environ().get(MARKER, ""):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_short_cluster_section_reports_every_figure(tmp_path, raw_data_path):
    out = tmp_path / "cluster.json"
    command = [sys.executable, "-m", "benchmarks", "--short", "--only", "cluster", "--json", str(out)]
    try:
        # Its own process group, stopped whole on a timeout (run_measured).
        completed = run_measured(
            [*command, "--data", str(raw_data_path)], process_env(), timeout=2400, cwd=PROJECT_ROOT
        )
    finally:
        # A harness stopped that way cannot stop its cluster, whose daemons run in sessions of their own.
        left = bench_spark_processes()
        for process in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    assert out.exists(), completed.output_tail
    report = json.loads(out.read_text())
    assert (report["errors"], report["missing"], completed.returncode) == ([], [], 0), completed.output_tail
    figures = {figure["key"]: figure for figure in report["figures"]}
    assert [key for key in EXPECTED if figures.get(key, {}).get("value") is None] == []
    for key in DERIVED:
        assert figures[key]["value"] is not None or figures[key]["outcome"].startswith(
            ("no rate", "never")
        ), key
    assert figures["cluster.workers2.rows_per_s"]["ref_label"] == "cluster, 1 worker × 1 core"
    assert left == [], "the section left Spark processes running"
