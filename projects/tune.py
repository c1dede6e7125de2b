"""Entry point `tune`: Optuna search within a time budget; the best configuration becomes challenger."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException

from model.data import DataContractError
from model.summary import registered_summary
from model.tune import TuneSettings, tune


def parse_args(argv: list[str] | None = None) -> tuple[Path, TuneSettings]:
    defaults = TuneSettings()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-path", type=Path, required=True)
    parser.add_argument("--budget-minutes", type=float, default=defaults.budget_minutes)
    parser.add_argument("--n-trials", type=int, default=defaults.n_trials, help="0 = no limit but the budget")
    parser.add_argument("--storage", default=defaults.storage, help='Optuna storage URL; "" = in memory')
    parser.add_argument("--study-name", default=defaults.study_name)
    parser.add_argument("--cv-folds", type=int, default=defaults.cv_folds)
    parser.add_argument("--max-estimators", type=int, default=defaults.max_estimators)
    parser.add_argument("--sampler-seed", type=int, default=defaults.sampler_seed)
    args = vars(parser.parse_args(argv))
    data_path = args.pop("data_path")
    return data_path, TuneSettings(**args)


if __name__ == "__main__":
    data_path, settings = parse_args()
    try:
        version = tune(data_path, settings)
        summary = registered_summary(version)
    except (MlflowException, DataContractError, OSError) as error:
        sys.exit(f"error: {str(error).splitlines()[0]}")
    print(summary)
