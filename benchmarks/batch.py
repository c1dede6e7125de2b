"""Batch scoring figures: each batch command end to end on a resampled CSV, vs the bare regressor.

Each command runs as its own process with the harness's ``OMP_NUM_THREADS``; its rows/s is
input rows over the process's wall time (start-up, reading, predicting and writing
included), its peak memory is sampled while it runs (``testbed.processes.PeakSampler``). The reference is the bare regressor's
own rows/s, measured right before each command, in this process with the same thread
count, on the same rows already transformed: the file's first rows, at most ``reference_rows_cap`` (100 k) of them — its
cost per row does not depend on the batch size, and 10 M rows would take as long again.

At the first size, ``batch_predict`` also scores the same file with the same model without
its compiled trees (the LightGBM path), right after the compiled run: its rows/s must be at
least ``SPEEDUP_BOUND`` × lower (issue 19), with its peak memory beside.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.bench import Bench
from benchmarks.report import Figure
from model.data import PROJECT_ROOT, TARGET
from testbed.mlflow_cli import mlflow_models_predict
from testbed.processes import run_measured

THROUGHPUT_BOUND = 0.8  # × the bare regressor's rows/s
SPEEDUP_BOUND = 2.0  # batch_predict with compiled trees ≥ 2 × the LightGBM path's rows/s
RSS_LIMIT = 2**30  # bytes, at the largest size
BATCH_ENTRY_POINT = PROJECT_ROOT / "projects" / "batch_predict.py"


def batch_predict_command(model_dir: Path, input_path: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "projects.batch_predict",
        "--model-uri",
        str(model_dir),
        "--input",
        str(input_path),
        "--output",
        str(output),
    ]


def commands(
    model_dir: Path, input_path: Path, output_dir: Path, lightgbm_dir: Path | None = None
) -> dict[str, tuple[str, list[str], Path]]:
    """key → (label, command, output file); with ``lightgbm_dir``, batch_predict on it too."""
    mlflow_out = output_dir / "mlflow-predict.json"
    found = {
        "mlflow_predict": (
            "mlflow models predict",
            mlflow_models_predict(model_dir, input_path, mlflow_out, "csv"),
            mlflow_out,
        ),
    }
    project_out = output_dir / "batch-predict.csv"
    found["batch_predict"] = (
        "python -m projects.batch_predict",
        batch_predict_command(model_dir, input_path, project_out),
        project_out,
    )
    if lightgbm_dir is not None:
        found["batch_predict_lightgbm"] = (
            "python -m projects.batch_predict, LightGBM path",
            batch_predict_command(lightgbm_dir, input_path, project_out),
            project_out,
        )
    return found


def count_predictions(path: Path) -> int:
    """Predictions in an output file: JSON (one ``median_house_value`` key per row), Parquet, or CSV
    (a header, then one line per row)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet

        return pyarrow.parquet.ParquetFile(path).metadata.num_rows
    needle, count, carry = TARGET.encode(), 0, b""
    with open(path, "rb") as handle:
        if path.suffix == ".json":
            for block in iter(lambda: handle.read(1 << 24), b""):
                data = carry + block
                count += data.count(needle)
                carry = data[-(len(needle) - 1) :]
            return count
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 24), b"")) - 1


def run(bench: Bench) -> None:
    options = bench.options
    largest = max(options.batch_rows)
    for rows in options.batch_rows:
        input_path = bench.workdir / f"batch-{rows}.csv"
        started = time.perf_counter()
        bench.resampled.write_csv(rows, input_path)
        print(
            f"- {rows:,} rows: wrote {input_path.stat().st_size / 2**20:.0f} MiB of CSV in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        reference_rows = min(rows, options.reference_rows_cap)
        reference_frame = bench.transformed(bench.resampled.frame(reference_rows))
        lightgbm_dir = bench.lightgbm_dir if rows == options.batch_rows[0] else None
        for key, (label, command, output) in commands(
            bench.model_dir, input_path, bench.workdir, lightgbm_dir
        ).items():
            if key == "batch_predict" and not BATCH_ENTRY_POINT.exists():
                bench.errors.append(f"{label}: {BATCH_ENTRY_POINT.relative_to(PROJECT_ROOT)} does not exist")
                bench.add(Figure(f"batch.{key}.{rows}.rows_per_s", f"{label}, {rows:,} rows", None, "rows/s"))
                continue
            # The LightGBM path is held against the compiled run (below), not the bare regressor.
            baseline = key == "batch_predict_lightgbm"
            # The reference right before the command: the machine's load drifts over minutes.
            reference = None if baseline else reference_rows / bench.regressor_seconds_now(reference_frame)
            print(f"  {label}", flush=True)
            cap = int(options.rss_cap_gib * 2**30)
            completed = run_measured(
                command, bench.process_env(), timeout=options.batch_timeout, rss_cap=cap, cwd=PROJECT_ROOT
            )
            written = count_predictions(output) if completed.returncode == 0 and output.exists() else 0
            ok = completed.returncode == 0 and written == rows
            outcome = ""
            if completed.killed_at_cap:
                outcome = f"killed past {options.rss_cap_gib:g} GiB RSS"
            elif not ok and completed.wall_seconds >= options.batch_timeout:
                outcome = f"killed after {options.batch_timeout:g} s"
            elif not ok:
                bench.errors.append(
                    f"{label} on {rows:,} rows: exit {completed.returncode}, {written:,} predictions "
                    f"written:\n{completed.output_tail[-2000:]}"
                )
            output.unlink(missing_ok=True)
            held = rows == largest
            bench.add(
                Figure(
                    f"batch.{key}.{rows}.rows_per_s",
                    f"{label}, {rows:,} rows, end to end ({completed.wall_seconds:.1f} s)",
                    rows / completed.wall_seconds if ok else None,
                    "rows/s",
                    reference=reference,
                    ref_label="" if baseline else "bare regressor",
                    op=None if baseline else ">=",
                    bound=THROUGHPUT_BOUND,
                    outcome=outcome,
                ),
                Figure(
                    f"batch.{key}.{rows}.peak_rss",
                    f"{label}, {rows:,} rows, peak RSS",
                    completed.peak_rss_bytes if ok or completed.killed_at_cap else None,
                    "bytes",
                    reference=RSS_LIMIT if held else None,
                    op="<" if held else None,
                ),
            )
        compiled, lightgbm = (
            bench.figure(f"batch.{key}.{rows}.rows_per_s")
            for key in ("batch_predict", "batch_predict_lightgbm")
        )
        if compiled and lightgbm:
            bench.add(
                Figure(
                    f"batch.batch_predict.{rows}.vs_lightgbm",
                    f"python -m projects.batch_predict, {rows:,} rows: rows/s with compiled trees",
                    compiled.value,
                    "rows/s",
                    reference=lightgbm.value,
                    ref_label="LightGBM path",
                    op=">=",
                    bound=SPEEDUP_BOUND,
                )
            )
        input_path.unlink()
        del reference_frame
