"""Entry point `batch_predict`: score a CSV or Parquet file with a registered model, written atomically."""

from __future__ import annotations

import argparse
import os
import sys

# Model downloads without a progress bar: the job's own bar (on a terminal) counts rows.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow.exceptions import MlflowException  # noqa: E402

from model.batch import BatchError, BatchJob, run  # noqa: E402
from model.batch.job import (  # noqa: E402
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MODEL_URI,
    ENGINES,
    ON_ERROR,
    SPARK_ENV_MANAGERS,
    parse_interval,
)
from model.intervals import MAX_LEVEL, MIN_LEVEL  # noqa: E402


def parse_args(argv: list[str] | None = None) -> BatchJob:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True, help="a .csv (with a header) or .parquet file")
    parser.add_argument(
        "--output", required=True, help=".parquet or .csv; replaced only by a complete result"
    )
    parser.add_argument("--model-uri", default=DEFAULT_MODEL_URI, help="any MLflow model URI")
    parser.add_argument("--id-column", default="", help="an input column copied to the output; '' = none")
    parser.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="rows per predict call (local)"
    )
    parser.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default="fail",
        help="fail: stop at the first bad row; reject: write bad rows to the rejects file",
    )
    parser.add_argument(
        "--rejects", default="", help="rejects file; '' = <output stem>.rejects<output suffix>"
    )
    parser.add_argument("--engine", choices=ENGINES, default="local")
    parser.add_argument("--spark-master", default="", help="'' = spark-submit's master, else local[*]")
    parser.add_argument(
        "--spark-env-manager",
        choices=SPARK_ENV_MANAGERS,
        default="local",
        help="how Spark workers get the model's Python environment",
    )
    parser.add_argument(
        "--interval",
        default="",
        help=f"a coverage level from {MIN_LEVEL} to {MAX_LEVEL}: adds the interval's bounds; '' = none",
    )
    args = parser.parse_args(argv)
    return BatchJob(
        input=args.input,
        output=args.output,
        model_uri=args.model_uri,
        id_column=args.id_column or None,
        chunk_size=args.chunk_size,
        on_error=args.on_error,
        rejects=args.rejects or None,
        engine=args.engine,
        spark_master=args.spark_master or None,
        spark_env_manager=args.spark_env_manager,
        interval=parse_interval(args.interval),
    )


if __name__ == "__main__":
    try:
        result = run(parse_args())
    except BatchError as error:
        sys.exit(f"batch_predict: {error}")
    except (MlflowException, OSError) as error:
        sys.exit(f"batch_predict: {type(error).__name__}: {str(error).splitlines()[0]}")
    except KeyboardInterrupt:
        print("batch_predict: interrupted; the output was not written", file=sys.stderr)
        sys.exit(130)
    rejected = f", {result.rows_rejected:,} rejected to {result.rejects}" if result.rejects else ""
    print(
        f"scored {result.rows_scored:,} of {result.rows_read:,} rows{rejected} with {result.model_uri} "
        f"in {result.seconds:.1f}s ({result.rows_per_second:,.0f} rows/s) -> {result.output}"
    )
