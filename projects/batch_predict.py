"""Entry point `batch_predict`: score a CSV or Parquet file with a registered model, written atomically."""

from __future__ import annotations

import os
import sys

# Model downloads without a progress bar: the job's own bar (on a terminal) counts rows.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow.exceptions import MlflowException  # noqa: E402

from model.batch import BatchError, BatchJob, run  # noqa: E402
from model.batch.job import parse_interval  # noqa: E402
from projects import cli  # noqa: E402


def main(job: BatchJob) -> str:
    try:
        result = run(job)
    except KeyboardInterrupt:
        print("batch_predict: interrupted; the output was not written", file=sys.stderr)
        raise SystemExit(130) from None
    rejected = f", {result.rows_rejected:,} rejected to {result.rejects}" if result.rejects else ""
    return (
        f"scored {result.rows_scored:,} of {result.rows_read:,} rows{rejected} with {result.model_uri} "
        f"in {result.seconds:.1f}s ({result.rows_per_second:,.0f} rows/s) -> {result.output}"
    )


if __name__ == "__main__":
    # The interval's own parser: a value that is not a level fails with the job's one-line rule.
    cli.run(
        main,
        prefix="batch_predict",
        failures=(BatchError, MlflowException, OSError),
        parsers={"interval": parse_interval},
    )
