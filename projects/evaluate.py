"""Entry point `evaluate`: score a model URI on the frozen test split; log metrics, CI and plots."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Model downloads without a progress bar: the entry point's output is its one-line verdict.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow.exceptions import MlflowException  # noqa: E402

from model.data import DataContractError  # noqa: E402
from model.evaluate import evaluate  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", required=True, help="any MLflow model URI")
    parser.add_argument("--data-path", type=Path, required=True)
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples of the test RMSE")
    parser.add_argument("--permutation-repeats", type=int, default=3, help="shuffles per raw column")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of the shuffles")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    try:
        metrics = evaluate(
            args.model_uri, args.data_path, args.n_bootstrap, args.permutation_repeats, args.seed
        )
    except (MlflowException, DataContractError, OSError) as error:
        sys.exit(f"error: {str(error).splitlines()[0]}")
    coverage = metrics.get("interval_coverage_80")
    print(
        f"{args.model_uri}: test rmse {metrics['rmse']:,.0f} "
        f"(95 % CI {metrics['rmse_ci95_low']:,.0f}-{metrics['rmse_ci95_high']:,.0f}), "
        f"mae {metrics['mae']:,.0f}, r2 {metrics['r2']:.4f}"
        + (f", interval=0.8 covers {coverage * 100:.1f} %" if coverage is not None else "")
    )
