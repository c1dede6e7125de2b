"""Batch scoring with more executors: the local engine, Spark ``local[2]``, and a real Spark
standalone cluster (``testbed.spark_cluster``: a master and two workers of one core each on
loopback) with one worker's core (``spark.cores.max 1``) and with both.

Each configuration runs in a fresh process (``benchmarks.spark_worker``) on the same resampled
CSV files: it starts its Spark session (*session start*), scores ``cluster_small_rows`` rows
twice and then ``cluster_rows`` rows with that session. A run of N rows then costs about
``F + N / r``: ``F``, the fixed cost, is the session start plus the first small job (executors
starting, the driver fetching and handing over the model — *model broadcast* — the executors
loading it, scheduling, writing); ``r``, the marginal rate, is the extra rows of the large job
over its extra time against the second small job (a warm session, as the large job has). From
them: where the 2-worker cluster overtakes the local engine, and what a cluster of more cores
would score (the 1-worker marginal rate as the per-core rate).
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.bench import Bench
from benchmarks.report import Figure
from model.data import PROJECT_ROOT
from testbed.spark_cluster import running_spark_cluster, spark_env

# A cluster of this many cores scoring this many rows, projected from the measured rates.
PROJECTED_CORES = 32
PROJECTED_ROWS = 100_000_000
SPARK_DEFAULTS = "spark.ui.showConsoleProgress false\n"


def measure(bench: Bench, key: str, master: str | None, spark_defaults: str, inputs) -> dict:
    """One configuration's session start and runs (``benchmarks.spark_worker``'s JSON)."""
    conf = bench.workdir / f"spark-conf-{key}"
    conf.mkdir(exist_ok=True)
    (conf / "spark-defaults.conf").write_text(spark_defaults)
    output = bench.workdir / f"cluster-out-{key}"
    output.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "benchmarks.spark_worker", str(bench.model_dir), str(output)]
    command += [str(path) for path in inputs] + (["--master", master] if master else [])
    env = spark_env(bench.process_env({"SPARK_CONF_DIR": str(conf)}))
    completed = subprocess.run(
        command,
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=bench.options.batch_timeout,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{key}: exit {completed.returncode}:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(bench: Bench) -> None:
    options = bench.options
    small_rows, rows = options.cluster_small_rows, options.cluster_rows
    small = bench.resampled.write_csv(small_rows, bench.workdir / f"cluster-{small_rows}.csv")
    large = bench.resampled.write_csv(rows, bench.workdir / f"cluster-{rows}.csv")
    inputs = (small, small, large)
    with running_spark_cluster(bench.workdir / "spark-cluster", workers=2, cores=1) as cluster:
        configurations = {
            "local_engine": ("local engine", None, SPARK_DEFAULTS),
            "local2": ("Spark local[2]", "local[2]", SPARK_DEFAULTS),
            "workers1": (
                "cluster, 1 worker × 1 core",
                cluster.master_url,
                SPARK_DEFAULTS + "spark.cores.max 1\n",
            ),
            "workers2": ("cluster, 2 workers × 1 core", cluster.master_url, SPARK_DEFAULTS),
        }
        measured = {}
        for key, (label, master, defaults) in configurations.items():
            print(f"  {label}", flush=True)
            measured[key] = measure(bench, key, master, defaults, inputs)
    small.unlink()
    large.unlink()

    fixed, rate = {}, {}
    references = {"local2": "local_engine", "workers1": "local_engine", "workers2": "workers1"}
    for key, (label, master, _) in configurations.items():
        session = measured[key]["session_seconds"]
        first, second, large = measured[key]["runs"]
        if [run["rows"] for run in (first, second, large)] != [small_rows, small_rows, rows]:
            raise RuntimeError(f"{label} scored {[run['rows'] for run in (first, second, large)]} rows")
        fixed[key] = session + first["wall"]
        extra_seconds = large["wall"] - second["wall"]
        # Too few rows for the machine's noise (the short form's): no rate rather than a wrong one.
        rate[key] = (rows - small_rows) / extra_seconds if extra_seconds > 0 else None
        reference = references.get(key)
        bench.add(
            Figure(
                f"cluster.{key}.rows_per_s",
                f"{label}, {rows:,} rows, session up ({large['wall']:.1f} s)",
                rows / large["wall"],
                "rows/s",
                reference=bench.figure(f"cluster.{reference}.rows_per_s").value if reference else None,
                ref_label=configurations[reference][0] if reference else "",
            ),
            Figure(
                f"cluster.{key}.broadcast_s",
                f"{label}, model {'broadcast (driver)' if master else 'load'}",
                large["model_load_seconds"],
                "s",
            ),
            Figure(
                f"cluster.{key}.fixed_s",
                f"{label}, fixed cost per run (session start + the first {small_rows:,}-row job)",
                fixed[key],
                "s",
            ),
        )
        if master:
            bench.add(Figure(f"cluster.{key}.session_s", f"{label}, session start", session, "s"))
    bench.add(*derived(fixed, rate, rows, small_rows))


def derived(fixed: dict, rate: dict, rows: int, small_rows: int) -> list[Figure]:
    """Where the 2-worker cluster overtakes the local engine, the per-core rate, the projection."""
    unmeasured = f"no rate: {rows:,} rows took no longer than {small_rows:,}"
    cluster, local, one_worker = rate["workers2"], rate["local_engine"], rate["workers1"]
    if cluster is None or local is None:
        payoff, payoff_outcome = None, unmeasured
    elif 1 / local - 1 / cluster > 0:  # seconds each row saves on the cluster
        payoff, payoff_outcome = (
            max(0.0, (fixed["workers2"] - fixed["local_engine"]) / (1 / local - 1 / cluster)),
            "",
        )
    else:
        payoff, payoff_outcome = None, "never: the cluster's marginal rate is not higher"
    projected = None
    if one_worker is not None:
        projected = PROJECTED_ROWS / (fixed["workers2"] + PROJECTED_ROWS / (PROJECTED_CORES * one_worker))
    return [
        Figure(
            "cluster.payoff_rows",
            "rows from which the 2-worker cluster beats the local engine (fixed cost + rows / marginal rate)",
            payoff,
            "count",
            outcome=payoff_outcome,
        ),
        Figure(
            "cluster.per_core_rows_per_s",
            "per-core rate: 1 worker's marginal rows/s",
            one_worker,
            "rows/s",
            outcome="" if one_worker is not None else unmeasured,
        ),
        Figure(
            f"cluster.projected.{PROJECTED_CORES}cores",
            f"projected: {PROJECTED_ROWS:,} rows on {PROJECTED_CORES} cores "
            "(per-core rate × cores, after the 2-worker fixed cost)",
            projected,
            "rows/s",
            outcome="" if projected is not None else unmeasured,
        ),
    ]
