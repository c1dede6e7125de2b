"""Entry point `monitor`: judge a window of served rows against the version that served them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry: off

from mlflow.exceptions import MlflowException  # noqa: E402

from model.monitoring.monitor import FAIL_ON, MonitorJob, run  # noqa: E402
from model.monitoring.window import MonitorError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> MonitorJob:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--window", required=True, help="a capture directory or file, or a batch_predict output"
    )
    parser.add_argument("--since", default="", help="ISO 8601 time: captured rows from then on; '' = all")
    parser.add_argument("--until", default="", help="ISO 8601 time: captured rows before then; '' = all")
    parser.add_argument(
        "--labels", default="", help="CSV or Parquet: the id column(s) and median_house_value"
    )
    parser.add_argument(
        "--id-column",
        default="",
        help="join key(s), comma-separated; '' = request_id,row for a capture (request_id when the "
        "labels have no row column)",
    )
    parser.add_argument("--inputs", default="", help="for a batch_predict output: the input file it scored")
    parser.add_argument("--interval", default="", help="for a batch_predict output with bounds: its level")
    parser.add_argument(
        "--model-version", default="", help="number or alias; '' = the version the capture names"
    )
    parser.add_argument(
        "--fail-on", default="", choices=list(FAIL_ON), help="exit 1 on this verdict; '' = never"
    )
    parser.add_argument(
        "--labelled-output", default="", help="write the labelled rows here (for make retrain)"
    )
    args = parser.parse_args(argv)
    try:
        interval = float(args.interval) if args.interval else None
    except ValueError:
        parser.error(f"--interval must be a number, not {args.interval!r}")
    return MonitorJob(
        window=Path(args.window),
        since=args.since,
        until=args.until,
        labels=Path(args.labels) if args.labels else None,
        id_column=args.id_column,
        inputs=Path(args.inputs) if args.inputs else None,
        interval=interval,
        model_version=args.model_version,
        fail_on=args.fail_on,
        labelled_output=Path(args.labelled_output) if args.labelled_output else None,
    )


if __name__ == "__main__":
    job = parse_args()
    try:
        outcome, failed = run(job)
    except MonitorError as error:
        sys.exit(f"monitor: {error}")
    except (MlflowException, OSError) as error:
        sys.exit(f"monitor: {type(error).__name__}: {str(error).splitlines()[0]}")
    print(outcome.text)
    if failed:
        sys.exit(f"monitor: verdict {outcome.assessment.verdict} (fail_on={job.fail_on})")
