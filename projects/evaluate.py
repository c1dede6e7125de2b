"""Entry point `evaluate`: score a model URI on the frozen test split; log metrics, CI and plots."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Model downloads without a progress bar: the entry point's output is its one-line verdict.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from model.data import RAW_DATA_PATH  # noqa: E402
from model.evaluate import evaluate  # noqa: E402
from model.registry import CHALLENGER, MODEL_NAME  # noqa: E402
from projects.cli import run  # noqa: E402


@dataclass(frozen=True)
class Parameters:
    """
    Parameters
    ----------
    model_uri : str
        Any MLflow model URI.
    data_path : Path
        The raw CSV; the model is scored on its test part.
    n_bootstrap : int
        Bootstrap resamples of the test RMSE.
    permutation_repeats : int
        Shuffles per raw column.
    seed : int
        Seed of the bootstrap and of the shuffles.
    """

    model_uri: str = f"models:/{MODEL_NAME}@{CHALLENGER}"
    data_path: Path = RAW_DATA_PATH
    n_bootstrap: int = 1000
    permutation_repeats: int = 3
    seed: int = 0


def main(parameters: Parameters) -> str:
    metrics = evaluate(
        parameters.model_uri,
        parameters.data_path,
        parameters.n_bootstrap,
        parameters.permutation_repeats,
        parameters.seed,
    )
    coverage = metrics.get("interval_coverage_80")
    return (
        f"{parameters.model_uri}: test rmse {metrics['rmse']:,.0f} "
        f"(95 % CI {metrics['rmse_ci95_low']:,.0f}-{metrics['rmse_ci95_high']:,.0f}), "
        f"mae {metrics['mae']:,.0f}, r2 {metrics['r2']:.4f}"
        + (f", interval=0.8 covers {coverage * 100:.1f} %" if coverage is not None else "")
    )


if __name__ == "__main__":
    run(main)
