"""Entry point `train`: fit, evaluate, log and register a CaliforniaHousingRegressor version."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from model.data import RAW_DATA_PATH
from model.summary import registered_summary
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
    return registered_summary(train(parameters.data_path, parameters.config))


if __name__ == "__main__":
    run(main)
