"""Entry point `tune`: Optuna search within a time budget; the best configuration becomes challenger."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from model.data import RAW_DATA_PATH
from model.summary import registered_summary
from model.tune import TuneSettings, tune
from projects.cli import run


@dataclass(frozen=True)
class Parameters:
    """
    Parameters
    ----------
    data_path : Path
        The raw CSV; trials see only its training part.
    settings : TuneSettings
        The search's budget and storage, each its own option (see ``TuneSettings``).
    """

    data_path: Path = RAW_DATA_PATH
    settings: TuneSettings = field(default_factory=TuneSettings)


def main(parameters: Parameters) -> str:
    return registered_summary(tune(parameters.data_path, parameters.settings))


if __name__ == "__main__":
    run(main)
