"""The compiled tree engine against LightGBM: the trees alone, what building them costs at
training time, and what loading them costs a server.

* **Trees alone.** The model's two boosters on the same transformed rows through LightGBM's
  ``Booster.predict`` (every artifact's path before compiled trees) and through their
  compiled trees (``model.compiled_trees``, ONNX Runtime), in µs per row at 1, 100 and
  10,000 rows per call. Interleaved in blocks (``bench.time_interleaved``). Limits (issue
  19): at most 30 µs per row from 100 rows per call on; at one row, no slower than LightGBM.
* **Build.** What ``model.packaging`` does at training time: both ensembles (the point
  regressor and the intervals' spread) converted to ONNX; seconds and bytes.
* **Load.** A fresh process (``LOAD_SCRIPT``) imports MLflow, loads the artifact
  (``mlflow.pyfunc.load_model``) and answers one row: what a server does before its first
  answer. The artifact with compiled trees and the same model without them (the LightGBM
  path: it parses its boosters at that first call) alternate, ``load_rounds`` each; median
  wall and CPU seconds, and the process's peak RSS.
"""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.bench import Bench, p50, time_interleaved
from benchmarks.report import Figure
from model.pyfunc import AveragedBoosters

TREE_LIMIT = 30e-6  # seconds per row, from 100 rows per call on (issue 19)
SIZES = (1, 100, 10_000)
LOAD_BOUND = 1.0  # × the LightGBM path's cold start: the engine must not add to it

LOAD_SCRIPT = """
import resource, sys, time
started, cpu = time.perf_counter(), time.process_time()
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
model.predict(pd.read_pickle(sys.argv[2]))
print(time.perf_counter() - started, time.process_time() - cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def calls_for(rows: int, short: bool) -> tuple[int, int]:
    """(calls, block) per engine at ``rows`` rows per call."""
    calls, block = {1: (2000, 50), 100: (300, 10), 10_000: (20, 1)}[rows]
    return (max(block, calls // 10), block) if short else (calls, block)


def run(bench: Bench) -> None:
    boosters = bench.python_model.regressor.boosters
    lightgbm_path = AveragedBoosters(boosters)
    started, cpu = time.perf_counter(), time.process_time()
    compiled = AveragedBoosters(boosters)
    compiled.use_compiled(onnx_model := compiled.compile())
    spread = bench.python_model.intervals.spread
    spread_onnx = spread.compile()
    build_seconds, build_cpu = time.perf_counter() - started, time.process_time() - cpu
    trees(bench, {"lightgbm": lightgbm_path.predict, "compiled": compiled.predict})
    bench.add(
        Figure(
            "engine.build.seconds",
            f"compiled trees: conversion at training time, both ensembles ({build_cpu:.1f} s CPU)",
            build_seconds,
            "s",
        ),
        Figure(
            "engine.build.bytes",
            f"compiled trees: ONNX files ({len(boosters)} × {boosters[0].num_trees()} trees + the spread's "
            f"{spread.boosters[0].num_trees()})",
            len(onnx_model) + len(spread_onnx),
            "bytes",
        ),
    )
    cold_start(bench)


def trees(bench: Bench, engines: dict) -> None:
    per_row = {}
    for rows in SIZES:
        calls, block = calls_for(rows, bench.options.short)
        frame = bench.resampled.frame(max(rows * 8, 64))
        X = bench.transformed(frame)
        inputs = [X[i * rows : (i + 1) * rows] for i in range(len(X) // rows)]
        seconds = time_interleaved(engines, inputs, calls, block)
        per_row[rows] = {name: p50(values) / rows for name, values in seconds.items()}
        lightgbm, compiled = per_row[rows]["lightgbm"], per_row[rows]["compiled"]
        bench.add(
            Figure(
                f"engine.lightgbm.{rows}",
                f"trees: LightGBM Booster.predict, {rows:,}-row calls, per row",
                lightgbm,
                "s",
            ),
            Figure(
                f"engine.compiled.{rows}",
                f"trees: compiled (ONNX Runtime), {rows:,}-row calls, per row ({lightgbm / compiled:.1f}× faster)",
                compiled,
                "s",
                **(
                    dict(reference=lightgbm, ref_label="LightGBM", op="<=")
                    if rows == 1
                    else dict(reference=TREE_LIMIT, op="<=")
                ),
            ),
        )


def cold_start(bench: Bench) -> None:
    rows = bench.workdir / "one-row.pkl"
    bench.resampled.frame(1).to_pickle(rows)
    artifacts = {"lightgbm": bench.lightgbm_dir, "compiled": bench.model_dir}
    measured = {name: [] for name in artifacts}
    rounds = 1 if bench.options.short else 6
    for round_ in range(rounds):
        for name in list(artifacts)[:: 1 if round_ % 2 == 0 else -1]:
            completed = subprocess.run(
                [sys.executable, "-c", LOAD_SCRIPT, str(artifacts[name]), str(rows)],
                env=bench.process_env(),
                cwd=bench.workdir,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if completed.returncode != 0:
                raise RuntimeError(f"loading the {name} artifact failed: {completed.stderr[-2000:]}")
            measured[name].append([float(value) for value in completed.stdout.split()[-3:]])
    wall, cpu, rss = ({name: p50([m[i] for m in runs]) for name, runs in measured.items()} for i in range(3))
    bench.add(
        Figure(
            "engine.load.wall",
            f"cold start with compiled trees: import, load_model, first 1-row answer, fresh process ({rounds} runs)",
            wall["compiled"],
            "s",
            reference=wall["lightgbm"],
            ref_label="LightGBM path",
        ),
        Figure(
            "engine.load.cpu",
            "cold start with compiled trees: CPU seconds",
            cpu["compiled"],
            "s",
            reference=cpu["lightgbm"],
            ref_label="LightGBM path",
            op="<=",
            bound=LOAD_BOUND,
        ),
        Figure(
            "engine.load.rss",
            "cold start with compiled trees: the process's peak RSS",
            rss["compiled"] * 1024,
            "bytes",
            reference=rss["lightgbm"] * 1024,
            ref_label="LightGBM path",
        ),
    )
