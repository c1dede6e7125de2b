"""In-process figures: the loaded pyfunc against the bare regressor on already-transformed features."""

from __future__ import annotations

import time

from benchmarks.bench import Bench, p50, time_calls
from benchmarks.load import percentile
from benchmarks.report import Figure

ONE_ROW_LIMIT = 1e-3  # seconds
BATCH_BOUND = 1.5  # pyfunc ≤ 1.5 × the bare regressor at the target size


def repeats_for(rows: int) -> int:
    return 20 if rows <= 10_000 else 2 if rows <= 100_000 else 1


def run(bench: Bench) -> None:
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
