"""In-process figures: the loaded pyfunc against the bare regressor on already-transformed features,
and against the same model without its compiled trees (the LightGBM path,
``benchmarks.artifacts.save_lightgbm_path_model``): rows/s at 100 and 10,000 rows per call,
interleaved in blocks, and (full form, with valgrind) instructions per 1-row call."""

from __future__ import annotations

import time

from benchmarks import callgrind
from benchmarks.bench import Bench, p50, time_calls, time_interleaved
from benchmarks.load import percentile
from benchmarks.report import Figure

ONE_ROW_LIMIT = 1e-3  # seconds
BATCH_BOUND = 1.5  # pyfunc ≤ 1.5 × the bare regressor at the target size
SPEEDUP_BOUND = 2.0  # rows/s with compiled trees ≥ 2 × the LightGBM path's (issue 19)
SPEEDUP_ROWS = (100, 10_000)
# Issue 19's limit: a 1-row predict of the default model through the single-row C API path
# that compiled trees replaced (main at f5a1b71), counted by this harness's callgrind figure.
ONE_ROW_INSTRUCTIONS_LIMIT = 3.3e6
CALLGRIND_CALLS = 50


def repeats_for(rows: int) -> int:
    return 20 if rows <= 10_000 else 2 if rows <= 100_000 else 1


def run(bench: Bench) -> None:
    one_row_and_sizes(bench)
    versus_lightgbm(bench)


def versus_lightgbm(bench: Bench) -> None:
    variants = {"lightgbm": bench.lightgbm_pyfunc.predict, "compiled": bench.pyfunc.predict}
    for rows in SPEEDUP_ROWS:
        frame = bench.resampled.frame(rows * 4)
        frames = [frame.iloc[i * rows : (i + 1) * rows].reset_index(drop=True) for i in range(4)]
        calls, block = (200, 10) if rows <= 100 else (20, 1)
        seconds = time_interleaved(
            variants, frames, max(block, calls // 10) if bench.options.short else calls, block
        )
        rows_per_s = {name: rows / p50(values) for name, values in seconds.items()}
        bench.add(
            Figure(
                f"inprocess.compiled.{rows}.rows_per_s",
                f"in-process pyfunc with compiled trees, {rows:,}-row calls",
                rows_per_s["compiled"],
                "rows/s",
                reference=rows_per_s["lightgbm"],
                ref_label="LightGBM path",
                op=">=",
                bound=SPEEDUP_BOUND,
            )
        )
    # Minutes under valgrind: the full form only, and only where valgrind is installed.
    if not bench.options.short and callgrind.available():
        variants = {"lightgbm": str(bench.lightgbm_dir), "compiled": str(bench.model_dir)}
        counts = callgrind.instructions_per_call(
            bench.workdir / "callgrind-engine", bench.one_row_frames()[:CALLGRIND_CALLS], variants
        )
        bench.add(
            Figure(
                "inprocess.compiled.1row.instructions",
                "in-process pyfunc with compiled trees: instructions per 1-row predict (callgrind)",
                counts["compiled"],
                "instr",
                reference=counts["lightgbm"],
                ref_label="LightGBM path",
                op="<=",
            ),
            Figure(
                "inprocess.compiled.1row.instructions.limit",
                "the same against the single-row C path it replaced (issue 19's figure)",
                counts["compiled"],
                "instr",
                reference=ONE_ROW_INSTRUCTIONS_LIMIT,
                op="<=",
            ),
        )


def one_row_and_sizes(bench: Bench) -> None:
    calls = bench.options.one_row_calls
    frames = bench.one_row_frames()
    pyfunc_times = time_calls(bench.pyfunc.predict, frames, calls)
    bench.remember("one_row", p50(pyfunc_times))
    raw_times = time_calls(lambda frame: bench.python_model.predict(None, frame), frames, calls)
    transformed = [bench.transformed(frame) for frame in frames]
    regressor_times = time_calls(bench.regressor_predict, transformed, calls)
    one_row = p50(pyfunc_times)
    bench.add(
        Figure(
            "inprocess.pyfunc.1row.p50",
            "in-process pyfunc predict, 1 row, p50",
            one_row,
            "s",
            reference=ONE_ROW_LIMIT,
            op="<=",
        ),
        Figure(
            "inprocess.pyfunc.1row.p99",
            "in-process pyfunc predict, 1 row, p99",
            percentile(pyfunc_times, 99),
            "s",
        ),
        Figure(
            "inprocess.python_model.1row.p50",
            "raw python_model.predict, 1 row, p50",
            p50(raw_times),
            "s",
            reference=one_row,
            ref_label="pyfunc",
        ),
        Figure(
            "inprocess.regressor.1row.p50",
            "bare regressor, 1 transformed row, p50",
            p50(regressor_times),
            "s",
            reference=one_row,
            ref_label="pyfunc",
        ),
    )

    for rows in bench.options.inprocess_rows:
        frame = bench.resampled.frame(rows)
        X = bench.transformed(frame)
        bench.regressor_predict(X[:10])
        bench.pyfunc.predict(frame.head(10))
        pyfunc_seconds, regressor_seconds = [], []
        for _ in range(repeats_for(rows)):  # interleaved, so both see the same machine load
            started = time.perf_counter()
            bench.pyfunc.predict(frame)
            pyfunc_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            bench.regressor_predict(X)
            regressor_seconds.append(time.perf_counter() - started)
        regressor = p50(regressor_seconds)
        held = rows == bench.options.target_rows
        bench.add(
            Figure(
                f"inprocess.pyfunc.{rows}",
                f"in-process pyfunc predict, {rows:,} rows",
                p50(pyfunc_seconds),
                "s",
                reference=regressor,
                ref_label="bare regressor",
                op="<=" if held else None,
                bound=BATCH_BOUND,
            ),
            Figure(
                f"inprocess.regressor.{rows}",
                f"bare regressor, {rows:,} transformed rows ({rows / regressor:,.0f} rows/s)",
                regressor,
                "s",
            ),
        )
        if held:
            raw = []
            for _ in range(repeats_for(rows)):
                started = time.perf_counter()
                bench.python_model.predict(None, frame)
                raw.append(time.perf_counter() - started)
            bench.add(
                Figure(
                    f"inprocess.python_model.{rows}",
                    f"raw python_model.predict, {rows:,} rows",
                    p50(raw),
                    "s",
                    reference=regressor,
                    ref_label="bare regressor",
                )
            )
        del frame, X
