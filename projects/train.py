"""Entry point `train`: fit, evaluate, log and register a CaliforniaHousingRegressor version."""

import argparse
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException

from model.data import DataContractError
from model.registry import CHALLENGER
from model.train import TrainingConfig, train


def parse_args() -> tuple[Path, TrainingConfig]:
    defaults = TrainingConfig()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-path", type=Path, required=True)
    parser.add_argument("--n-estimators", type=int, default=defaults.n_estimators)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--num-leaves", type=int, default=defaults.num_leaves)
    parser.add_argument("--max-depth", type=int, default=defaults.max_depth, help="-1 = unlimited")
    parser.add_argument("--min-child-samples", type=int, default=defaults.min_child_samples)
    parser.add_argument("--subsample", type=float, default=defaults.subsample)
    parser.add_argument("--colsample-bytree", type=float, default=defaults.colsample_bytree)
    parser.add_argument("--reg-lambda", type=float, default=defaults.reg_lambda)
    parser.add_argument("--n-models", type=int, default=defaults.n_models)
    parser.add_argument(
        "--n-neighbors",
        type=lambda text: tuple(int(k) for k in text.split(",")),
        default=defaults.n_neighbors,
        help="comma-separated neighbourhood sizes, e.g. 5,15,50",
    )
    parser.add_argument("--cv-folds", type=int, default=defaults.cv_folds)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = vars(parser.parse_args())
    data_path = args.pop("data_path")
    return data_path, TrainingConfig(**args)


if __name__ == "__main__":
    data_path, config = parse_args()
    try:
        version = train(data_path, config)
    except (MlflowException, DataContractError, OSError) as error:
        # One line: a refused data file (before any run exists) or an unreachable tracking server.
        sys.exit(f"error: {str(error).splitlines()[0]}")
    aliases = " and ".join(version.aliases) or "no alias"
    print(f"registered {version.name} version {version.version} as {aliases}")
    if CHALLENGER in version.aliases:
        print("promote it with `make promote` (mlflow run . -e promote) once it should serve")
