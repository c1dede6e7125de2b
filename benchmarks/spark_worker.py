"""Run by ``benchmarks.cluster``, one fresh process per engine configuration.

``python -m benchmarks.spark_worker MODEL_DIR OUTPUT_DIR INPUT… [--master URL]`` starts a Spark
session on ``URL`` (timed: the session's start) — none without ``--master``: the local engine —
then scores each input in turn (the same file may come twice) with the same session, as
``batch_predict`` does, and prints one
JSON line: ``session_seconds`` and, per input, its rows, the scoring call's wall time and the
job's own ``seconds`` and ``model_load_seconds`` (``model.batch.BatchResult``). Spark settings
come from ``SPARK_CONF_DIR`` as for any driver.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from model.batch import BatchJob
from model.batch.local import score_local
from model.batch.spark import score_spark, spark_session


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--master", help="a Spark master; none: the local engine")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    spark = spark_session(args.master) if args.master else None
    session_seconds = time.perf_counter() - started
    runs = []
    try:
        for index, path in enumerate(args.inputs):
            output = args.output_dir / f"scored-{index}.parquet"
            job = BatchJob(path, str(output), engine="spark" if spark else "local")
            started = time.perf_counter()
            if spark:
                result = score_spark(job, args.model_dir, spark)
            else:
                result = score_local(job, args.model_dir, progress=False)
            wall = time.perf_counter() - started
            runs.append(
                {
                    "rows": result.rows_scored,
                    "wall": wall,
                    "seconds": result.seconds,
                    "model_load_seconds": result.model_load_seconds,
                }
            )
            shutil.rmtree(output, ignore_errors=True)
            output.unlink(missing_ok=True)
    finally:
        if spark:
            spark.stop()
    print(json.dumps({"session_seconds": session_seconds, "runs": runs}), flush=True)


if __name__ == "__main__":
    main()
