"""Fixtures shared by every layer: the real dataset and a model trained on it once per session.

``tests/code`` overrides the data and model fixtures with synthetic, small ones
(tests/code/conftest.py): the unit layer needs neither the dataset nor the default fit.
"""

from __future__ import annotations

import os

# One OpenMP thread, as every server and batch command here runs (`make test` sets it too): with
# one per core in each pytest worker, LightGBM's fits and predicts oversubscribe the cores and
# a plain `pytest` run takes many times as long. Set before LightGBM loads OpenMP, and
# inherited by the xdist workers and every server a test starts.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from model import packaging
from model.data import FEATURE_COLUMNS, PROJECT_ROOT, RAW_DATA_PATH, load_raw, split_train_test
from model.train import TrainingConfig, fit_model

# Tests read the raw file from the read-only ../shared (CI), else from the DVC-tracked copy.
SHARED_DATA_PATH = PROJECT_ROOT.parent / "shared" / "data" / "housing.csv"


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


@pytest.fixture(scope="module")
def rows(split) -> pd.DataFrame:
    """25 test blocks as a client sends them: the nine inputs, one ``total_bedrooms`` missing."""
    frame = split[1].head(25)[list(FEATURE_COLUMNS)].reset_index(drop=True)
    frame.loc[2, "total_bedrooms"] = np.nan
    return frame


@pytest.fixture(scope="session")
def served_model_path(trained_model, split, tmp_path_factory) -> Path:
    """``trained_model`` saved as training logs it: its trees compiled, as artifacts."""
    path = tmp_path_factory.mktemp("served-model") / "model"
    packaging.save_model(trained_model, path, example=packaging.input_example(split[0]))
    return path


@pytest.fixture(scope="session")
def served_model(served_model_path) -> mlflow.pyfunc.PyFuncModel:
    """``trained_model`` loaded as every server loads it (``mlflow.pyfunc.load_model``)."""
    return mlflow.pyfunc.load_model(str(served_model_path))
