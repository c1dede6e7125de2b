"""The data ``make retrain`` trains on: the raw dataset plus newly labelled blocks.

``python -m model.monitoring.retrain NEW OUT`` checks ``NEW`` (the monitor's
``labelled_output``, or any file in the raw layout) against the raw data's contract and writes
the raw rows followed by the new ones to ``OUT``, atomically. ``make retrain`` then trains on
``OUT`` (a new version becomes ``challenger``) and runs the promotion on it: the gates judge the
challenger against the champion on ``OUT``'s frozen test split, and the champion moves only if
every gate passes (docs/workflows/monitoring.md#from-degraded-to-a-new-champion).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from model.data import RAW_COLUMNS, RAW_DATA_PATH, DataContractError, load_raw


def combine(new: Path, out: Path, raw: Path = RAW_DATA_PATH) -> int:
    """Write ``raw`` + ``new`` to ``out``; returns the number of new rows."""
    added = load_raw(new)
    combined = pd.concat([load_raw(raw)[list(RAW_COLUMNS)], added[list(RAW_COLUMNS)]], ignore_index=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    combined.to_csv(partial, index=False)
    os.replace(partial, out)
    return len(added)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=Path, help="labelled blocks in the raw layout (CSV)")
    parser.add_argument("out", type=Path, help="where the combined CSV goes")
    args = parser.parse_args(argv)
    try:
        added = combine(args.new, args.out)
    except (DataContractError, OSError) as error:
        sys.exit(f"retrain: {error}")
    print(f"retrain: {args.out} = {RAW_DATA_PATH.name} + {added:,} labelled rows of {args.new}")


if __name__ == "__main__":
    main()
