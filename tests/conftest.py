"""Fixtures shared by every layer: the real dataset and a model trained on it once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from model.data import PROJECT_ROOT, RAW_DATA_PATH, load_raw, split_train_test
from model.train import TrainingConfig, fit_model

# Tests read the raw file from the read-only ../shared (CI), else from the DVC-tracked copy.
SHARED_DATA_PATH = PROJECT_ROOT.parent / "shared" / "data" / "housing.csv"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `make test` (xdist's ``--dist loadgroup``) a test file is one unit, so its
    module-scoped servers start once; a test that names its own ``xdist_group`` (each
    `mlflow models predict` case of the bad-input matrix) is a unit of its own."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(scope="session")
def raw_data_path() -> Path:
    for candidate in (os.environ.get("HOUSING_CSV"), SHARED_DATA_PATH, RAW_DATA_PATH):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    pytest.fail(f"raw dataset not found at {SHARED_DATA_PATH} or {RAW_DATA_PATH}; run `make data`")


@pytest.fixture(scope="session")
def raw_frame(raw_data_path) -> pd.DataFrame:
    return load_raw(raw_data_path)


@pytest.fixture(scope="session")
def split(raw_frame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_train_test(raw_frame)


@pytest.fixture(scope="session")
def trained_model(split):
    """The default configuration fitted on the training part of the frozen split."""
    train_frame, _ = split
    return fit_model(train_frame, TrainingConfig())
