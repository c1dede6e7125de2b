"""Entry point `train`: fit, evaluate, log and register a CaliforniaHousingRegressor version.

Every option but --data-path is a field of model.train.TrainingConfig, with its default
(meanings in its docstring); tests/code/test_entry_points.py holds MLproject to them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException

from model.data import DataContractError
from model.summary import registered_summary
from model.train import TrainingConfig, train


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(k) for k in text.split(","))


# How each TrainingConfig field type is spelled on the command line.
PARSERS = {"int": int, "float": float, "tuple[int, ...]": _ints}


def parse_args(argv: list[str] | None = None) -> tuple[Path, TrainingConfig]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-path", type=Path, required=True)
    for field in dataclasses.fields(TrainingConfig):
        default = ",".join(map(str, field.default)) if isinstance(field.default, tuple) else field.default
        option = f"--{field.name.replace('_', '-')}"
        parser.add_argument(option, type=PARSERS[field.type], default=default, help=f"default {default}")
    args = vars(parser.parse_args(argv))
    data_path = args.pop("data_path")
    return data_path, TrainingConfig(**args)


if __name__ == "__main__":
    data_path, config = parse_args()
    try:
        version = train(data_path, config)
        summary = registered_summary(version)
    except (MlflowException, DataContractError, OSError) as error:
        # One line: a refused data file (before any run exists) or an unreachable tracking server.
        sys.exit(f"error: {str(error).splitlines()[0]}")
    print(summary)
