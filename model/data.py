"""The raw dataset: where it lives, its contract, and the frozen evaluation split."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.model_selection import train_test_split

# The raw file holds the input contract's columns and the target; the columns are
# re-exported here for the stages that read the raw file.
from model.contract import CATEGORICAL_COLUMN as CATEGORICAL_COLUMN
from model.contract import FEATURE_COLUMNS as FEATURE_COLUMNS
from model.contract import NULLABLE_COLUMNS
from model.contract import NUMERIC_COLUMNS as NUMERIC_COLUMNS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RAW_DATA_PATH = PROJECT_ROOT / "data" / "raw" / "housing.csv"
DVC_FILE_PATH = RAW_DATA_PATH.with_name(RAW_DATA_PATH.name + ".dvc")

TARGET = "median_house_value"
RAW_COLUMNS = (*NUMERIC_COLUMNS, TARGET, CATEGORICAL_COLUMN)
OCEAN_PROXIMITY_CATEGORIES = ("<1H OCEAN", "INLAND", "ISLAND", "NEAR BAY", "NEAR OCEAN")
# median_house_value was top-coded by the census at this value.
TARGET_CAP = 500_001.0

# Géron's protocol (Hands-On ML, ch. 2): 20 % test, stratified on income category, seed 42.
TEST_SIZE = 0.2
SPLIT_SEED = 42
INCOME_CATEGORY_BINS = (0.0, 1.5, 3.0, 4.5, 6.0, np.inf)


class DataContractError(ValueError):
    """The raw file is not the dataset the project was built on."""


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pinned_md5(dvc_file: Path = DVC_FILE_PATH) -> str:
    """The md5 the DVC pointer file pins for the raw dataset."""
    outs = yaml.safe_load(dvc_file.read_text())["outs"]
    return outs[0]["md5"]


def verify_md5(path: Path, expected: str) -> str:
    """Return the file's md5, or raise when its bytes are not the pinned ones."""
    actual = file_md5(path)
    if actual != expected:
        raise DataContractError(
            f"{path}: md5 {actual} does not match the pinned {expected} "
            f"(corrupted, truncated or a different file)"
        )
    return actual


def load_raw(path: Path) -> pd.DataFrame:
    """Read the raw CSV and check the columns and types every stage relies on."""
    refuse_cut_off(path)
    try:
        frame = pd.read_csv(path, dtype={CATEGORICAL_COLUMN: "string"})
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataContractError(f"{path}: not a readable CSV ({error})") from error
    validate_raw(frame, source=str(path))
    return frame


def refuse_cut_off(path: Path) -> None:
    """Refuse an empty file or one whose last line has no line end: a copy or download cut short.

    (A file cut exactly at a line end is a well-formed smaller dataset; only the md5 pin
    of the DVC-tracked file tells it apart.)
    """
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            raise DataContractError(f"{path}: empty file")
        handle.seek(size - 1)
        if handle.read(1) != b"\n":
            raise DataContractError(
                f"{path}: truncated: the last line ends without a line end ({size} bytes)"
            )


def validate_raw(frame: pd.DataFrame, source: str) -> None:
    missing = [column for column in RAW_COLUMNS if column not in frame.columns]
    if missing:
        raise DataContractError(f"{source}: missing columns {missing}")
    for column in (*NUMERIC_COLUMNS, TARGET):
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise DataContractError(f"{source}: column {column!r} is not numeric")
    if frame.empty:
        raise DataContractError(f"{source}: no rows")
    for column in (*NUMERIC_COLUMNS, TARGET, CATEGORICAL_COLUMN):
        if column not in NULLABLE_COLUMNS and frame[column].isna().any():
            raise DataContractError(f"{source}: column {column!r} has missing values")
    unknown = set(frame[CATEGORICAL_COLUMN].unique()) - set(OCEAN_PROXIMITY_CATEGORIES)
    if unknown:
        raise DataContractError(f"{source}: unknown {CATEGORICAL_COLUMN} values {sorted(unknown)}")


def income_category(median_income: pd.Series) -> pd.Series:
    return pd.cut(median_income, bins=list(INCOME_CATEGORY_BINS), labels=False)


def split_train_test(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frozen train/test split every run is evaluated on."""
    train, test = train_test_split(
        frame,
        test_size=TEST_SIZE,
        stratify=income_category(frame["median_income"]),
        random_state=SPLIT_SEED,
    )
    return train, test


DEFAULT_SOURCE = "https://raw.githubusercontent.com/ageron/handson-ml2/master/datasets/housing/housing.csv"


def ensure_raw_data(source: str = DEFAULT_SOURCE, destination: Path = RAW_DATA_PATH) -> str:
    """Put the pinned raw dataset at ``destination`` and say where it came from.

    Order: already in place; ``dvc pull`` when the DVC project holding
    ``destination`` has a remote that answers; else copy or download ``source``.
    Bytes whose md5 differs from the DVC pointer file are refused and never land
    at ``destination``.
    """
    pointer = destination.with_name(destination.name + ".dvc")
    expected = pinned_md5(pointer)
    in_place = file_md5(destination) if destination.exists() else None
    if in_place == expected:
        return "already in place"
    if (
        _dvc(["remote", "list"], pointer).stdout.strip()
        and _dvc(["pull", "--quiet", pointer.name], pointer).returncode == 0
    ):
        verify_md5(destination, expected)
        return "dvc pull"
    try:
        fetch_verified(source, destination, expected)
    except DataContractError as error:
        if in_place is None:
            raise
        # Say what is wrong with the file in place too, not only why it could not be replaced.
        raise DataContractError(
            f"{destination}: md5 {in_place} does not match the pinned {expected} "
            f"(corrupted, truncated or a different file), and it was not replaced: {error}"
        ) from None
    # Record the bytes in the DVC cache, so `dvc status` is clean and `dvc push` can share them.
    _dvc(["commit", "--force", "--quiet", pointer.name], pointer)
    return source


def fetch_verified(source: str, destination: Path, expected_md5: str) -> None:
    """Copy or download ``source`` next to ``destination``; rename into place only if the md5 matches."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=".partial-", delete=False) as partial:
        partial_path = Path(partial.name)
        try:
            if urllib.parse.urlparse(source).scheme in ("http", "https"):
                with urllib.request.urlopen(source, timeout=60) as response:
                    shutil.copyfileobj(response, partial)
            else:
                with open(source, "rb") as original:
                    shutil.copyfileobj(original, partial)
            partial.close()
            verify_md5(partial_path, expected_md5)
        except DataContractError as error:
            partial_path.unlink(missing_ok=True)
            raise DataContractError(f"refused {source}: {str(error).split(': ', 1)[1]}") from None
        except (OSError, urllib.error.URLError) as error:
            partial_path.unlink(missing_ok=True)
            raise DataContractError(f"cannot read {source}: {error}") from None
    os.chmod(partial_path, 0o444)
    os.replace(partial_path, destination)


def _dvc(arguments: list[str], pointer: Path) -> subprocess.CompletedProcess:
    """Run DVC in the project that holds ``pointer`` (DVC finds the root from the working directory)."""
    return subprocess.run(
        [sys.executable, "-m", "dvc", *arguments],
        cwd=pointer.parent,
        capture_output=True,
        text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
