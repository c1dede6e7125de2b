"""Entry point `get_data`: put the DVC-pinned raw dataset at data/raw/housing.csv."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.data import DEFAULT_SOURCE, RAW_DATA_PATH, ensure_raw_data
from projects.cli import run


@dataclass(frozen=True)
class Parameters:
    """
    Parameters
    ----------
    source : str or None
        Path or http(s) URL to fetch when DVC has no remote; none = the public Hands-On ML
        file (``model.data.DEFAULT_SOURCE``).
    destination : Path
        Beside its .dvc pointer file.
    """

    source: str | None = None
    destination: Path = RAW_DATA_PATH


def main(parameters: Parameters) -> str:
    origin = ensure_raw_data(parameters.source or DEFAULT_SOURCE, parameters.destination)
    return f"{parameters.destination}: {origin}"


if __name__ == "__main__":
    run(main)
