"""Entry point `train`: fit, evaluate, log and register a CaliforniaHousingRegressor version."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from model.data import RAW_DATA_PATH
from model.registry import CHALLENGER
from model.train import TrainingConfig, train
from projects.cli import run


@dataclass(frozen=True)
class Parameters:
    """
    Parameters
    ----------
    data_path : Path
        The raw CSV (the DVC-tracked file must have its pinned bytes).
    config : TrainingConfig
        Every training knob, each its own option (see ``TrainingConfig``).
    """

    data_path: Path = RAW_DATA_PATH
    config: TrainingConfig = field(default_factory=TrainingConfig)


def main(parameters: Parameters) -> str:
    version = train(parameters.data_path, parameters.config)
    aliases = " and ".join(version.aliases) or "no alias"
    line = f"registered {version.name} version {version.version} as {aliases}"
    if CHALLENGER in version.aliases:
        line += "\npromote it with `make promote` (mlflow run . -e promote) once it should serve"
    return line


if __name__ == "__main__":
    run(main)
