"""Entry point `get_data`: put the DVC-pinned raw dataset at data/raw/housing.csv."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.data import DEFAULT_SOURCE, RAW_DATA_PATH, DataContractError, ensure_raw_data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--source", default=DEFAULT_SOURCE, help="path or http(s) URL to fetch when DVC has no remote"
    )
    parser.add_argument(
        "--destination", type=Path, default=RAW_DATA_PATH, help="beside its .dvc pointer file"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    try:
        origin = ensure_raw_data(args.source, args.destination)
    except DataContractError as error:
        sys.exit(f"error: {error}")
    print(f"{args.destination}: {origin}")
