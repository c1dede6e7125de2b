"""What intervals cost: the loaded pyfunc's 1-row and batch predict with and without `interval`.

Three artifacts of the same fitted model are measured in one interleaved loop (each call of
one is followed by a call of the others, so machine load hits them alike):

* *before intervals*: the model saved behind the signature it had before the `interval`
  parameter existed (``model.signatures.PREDICTION_INTERVALS.before``): today's baseline;
* *intervals off*: the artifact as shipped, called without parameters. The issue's limit:
  the same cost as before (MLflow's parameter enforcement included);
* *interval=0.8*: the same artifact asked for an interval; limit ≤ 1.5× intervals off.

Timings move with the machine's load; the same three 1-row calls are also counted in
instructions under callgrind (valgrind), which load does not move: a worker process
(``benchmarks/callgrind_worker.py``) loads the artifacts uninstrumented, and the harness
switches instrumentation on around each variant's calls only (``callgrind_control``).
"""

from __future__ import annotations

import warnings

import mlflow

from benchmarks import callgrind
from benchmarks.bench import Bench, p50, time_interleaved
from benchmarks.report import Figure
from model import packaging
from model.signatures import PREDICTION_INTERVALS

ON_BOUND = 1.5  # interval=0.8 ≤ 1.5 × intervals off
OFF_BOUND = 1.05  # intervals off: the cost of before, within timing noise
BATCH_ROWS = 1_000
CALLGRIND_CALLS = 50  # 1-row calls counted per variant


def run(bench: Bench) -> None:
    before = _before_intervals(bench)
    frames = bench.one_row_frames()
    variants = {
        "before": lambda frame: before.predict(frame),
        "off": lambda frame: bench.pyfunc.predict(frame),
        "on": lambda frame: bench.pyfunc.predict(frame, params={"interval": 0.8}),
    }
    one_row = _p50s(time_interleaved(variants, frames, bench.options.one_row_calls))
    batch_frames = [bench.resampled.frame(BATCH_ROWS)]
    batch = _p50s(time_interleaved(variants, batch_frames, max(10, bench.options.one_row_calls // 100)))
    bench.add(
        Figure(
            "intervals.before.1row",
            "before intervals (no parameter in the signature): in-process 1-row p50",
            one_row["before"],
            "s",
        ),
        Figure(
            "intervals.off.1row",
            "intervals off (parameter absent): in-process 1-row p50",
            one_row["off"],
            "s",
            reference=one_row["before"],
            ref_label="before intervals",
            op="<=",
            bound=OFF_BOUND,
        ),
        Figure(
            "intervals.on.1row",
            "interval=0.8: in-process 1-row p50",
            one_row["on"],
            "s",
            reference=one_row["off"],
            ref_label="intervals off",
            op="<=",
            bound=ON_BOUND,
        ),
        Figure(
            "intervals.off.batch",
            f"intervals off: in-process {BATCH_ROWS:,} rows",
            batch["off"],
            "s",
            reference=batch["before"],
            ref_label="before intervals",
        ),
        Figure(
            "intervals.on.batch",
            f"interval=0.8: in-process {BATCH_ROWS:,} rows",
            batch["on"],
            "s",
            reference=batch["off"],
            ref_label="intervals off",
        ),
    )
    # Minutes under valgrind: the full form only, and only where valgrind is installed.
    if not bench.options.short and callgrind.available():
        variants = {
            "before": str(bench.workdir / "before-intervals"),
            "off": str(bench.model_dir),
            "on": f"{bench.model_dir}:0.8",
        }
        instructions = callgrind.instructions_per_call(
            bench.workdir / "callgrind-intervals", frames[:CALLGRIND_CALLS], variants
        )
        bench.add(
            Figure(
                "intervals.before.instructions",
                "before intervals: instructions per 1-row predict (callgrind)",
                instructions["before"],
                "instr",
            ),
            Figure(
                "intervals.off.instructions",
                "intervals off: instructions per 1-row predict (callgrind)",
                instructions["off"],
                "instr",
                reference=instructions["before"],
                ref_label="before intervals",
            ),
            Figure(
                "intervals.on.instructions",
                "interval=0.8: instructions per 1-row predict (callgrind)",
                instructions["on"],
                "instr",
                reference=instructions["off"],
                ref_label="intervals off",
            ),
        )


def _p50s(seconds: dict[str, list[float]]) -> dict[str, float]:
    return {name: p50(values) for name, values in seconds.items()}


def _before_intervals(bench: Bench):
    """The benchmarked model behind the pre-interval signature (its compiled trees included),
    loaded as servers load it."""
    path = bench.workdir / "before-intervals"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        packaging.save_model(bench.python_model, path, PREDICTION_INTERVALS.before)
    return mlflow.pyfunc.load_model(str(path))
