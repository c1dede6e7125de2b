"""Entry point `promote`: move `champion` to the `challenger` only if every gate passes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Model downloads without a progress bar: the entry point's output is its one-line verdict.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow.exceptions import MlflowException  # noqa: E402

from model.data import DataContractError  # noqa: E402
from model.promotion import print_waiting, promote  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-path", type=Path, required=True)
    parser.add_argument(
        "--min-improvement",
        type=float,
        default=0.0,
        help="promote only if challenger RMSE < champion RMSE - this (USD); 0 = strictly better",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    try:
        decision = promote(args.data_path, args.min_improvement, on_wait=print_waiting)
    except (MlflowException, DataContractError, OSError) as error:
        sys.exit(f"error: {str(error).splitlines()[0]}")
    if not decision.moved:
        sys.exit(decision.message)
    print(decision.message)
