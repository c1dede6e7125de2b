"""Entry point `promote`: move `champion` to the `challenger` only if every gate passes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Model downloads without a progress bar: the entry point's output is its one-line verdict.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from model.data import RAW_DATA_PATH  # noqa: E402
from model.promotion import print_waiting, promote  # noqa: E402
from projects.cli import run  # noqa: E402


@dataclass(frozen=True)
class Parameters:
    """
    Parameters
    ----------
    min_improvement : float
        Promote only if challenger RMSE < champion RMSE - this (USD); 0 = strictly better.
    data_path : Path
        The raw CSV; both versions are scored on its test part.
    """

    min_improvement: float = 0.0
    data_path: Path = RAW_DATA_PATH


def main(parameters: Parameters) -> str:
    decision = promote(parameters.data_path, parameters.min_improvement, on_wait=print_waiting)
    if not decision.moved:
        raise SystemExit(decision.message)
    return decision.message


if __name__ == "__main__":
    run(main)
