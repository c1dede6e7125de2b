"""The unit layer's data and model: synthetic, small, and the same fixture names as every layer.

``tests/code`` never reads the raw dataset and never fits the production configuration, so
it runs on a fresh clone before ``make data`` and gives feedback in seconds. It overrides
the session fixtures of ``tests/conftest.py`` (pytest's per-folder override) with:

- ``raw_frame``: :func:`synthetic_housing`, 2,000 blocks in the raw file's layout and
  dtypes (``total_bedrooms`` sometimes missing, all five categories, blocks sharing
  coordinates, a target that rises with income and varies with place, top-coded at the
  census cap);
- ``split``: the frozen split (``model.data.split_train_test``) of that frame;
- ``trained_model``: the real ``fit_model`` (features, averaged boosters, calibrated
  intervals) with :data:`SMALL_CONFIG`, fitted once per process in about a second;
- ``raw_data_path``: that frame written as a CSV the way the raw file is written.

A test that needs the real data or the default model's quality belongs in ``tests/model``
(or ``tests/data`` for the raw file's contract), where the same names are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.data import (
    CATEGORICAL_COLUMN,
    OCEAN_PROXIMITY_CATEGORIES,
    RAW_COLUMNS,
    TARGET,
    TARGET_CAP,
    split_train_test,
)
from model.train import TrainingConfig, fit_model

# pytest caches a session fixture once per declaration, whatever the fixtures it depends on
# resolve to where it is first asked for: declared again here, the saved model is this
# folder's small one, and tests/model, run later in the same worker, still gets the real one.
from tests.conftest import served_model, served_model_path  # noqa: F401

# Every part of the default model (two boosters, three neighbourhood sizes, the intervals'
# cross-fitted calibration), with few and shallow trees.
SMALL_CONFIG = TrainingConfig(n_estimators=20, num_leaves=15, max_depth=6, cv_folds=0)


def synthetic_housing(n_rows: int = 2_000, seed: int = 0) -> pd.DataFrame:
    """Census-like blocks in the raw file's columns, order and dtypes (not its values)."""
    rng = np.random.default_rng(seed)
    longitude = rng.uniform(-124.3, -114.4, n_rows)
    latitude = rng.uniform(32.6, 41.9, n_rows)
    # One block in ten shares its coordinates with another, as thousands of real blocks do.
    twins = rng.choice(n_rows, n_rows // 10, replace=False)
    longitude[twins], latitude[twins] = longitude[twins - 1], latitude[twins - 1]
    households = rng.integers(50, 2_000, n_rows).astype(float)
    rooms = households * rng.uniform(3.0, 8.0, n_rows)
    bedrooms = rooms * rng.uniform(0.15, 0.3, n_rows)
    bedrooms[rng.random(n_rows) < 0.02] = np.nan
    income = np.clip(rng.lognormal(1.3, 0.5, n_rows), 0.5, 15.0)
    coast = -(longitude + 124.3) - (latitude - 32.6)  # higher near the north-west coast
    value = 40_000 * income + 8_000 * coast + rng.normal(0, 25_000 + 4_000 * income, n_rows)
    frame = pd.DataFrame(
        {
            "longitude": longitude,
            "latitude": latitude,
            "housing_median_age": rng.integers(1, 53, n_rows).astype(float),
            "total_rooms": rooms.round(),
            "total_bedrooms": bedrooms.round(),
            "population": (households * rng.uniform(1.5, 4.0, n_rows)).round(),
            "households": households,
            "median_income": income.round(4),
            TARGET: np.clip(value, 15_000, TARGET_CAP).round(),
            CATEGORICAL_COLUMN: rng.choice(
                OCEAN_PROXIMITY_CATEGORIES, n_rows, p=[0.44, 0.32, 0.01, 0.11, 0.12]
            ),
        }
    )
    # As model.data.load_raw reads the file: text as pandas' string dtype.
    return frame[list(RAW_COLUMNS)].astype({CATEGORICAL_COLUMN: "string"})


@pytest.fixture(scope="session")
def raw_frame() -> pd.DataFrame:
    return synthetic_housing()


@pytest.fixture(scope="session")
def raw_data_path(raw_frame, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "housing.csv"
    raw_frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def split(raw_frame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_train_test(raw_frame)


@pytest.fixture(scope="session")
def trained_model(split):
    """``SMALL_CONFIG`` fitted on the synthetic training part, intervals calibrated."""
    return fit_model(split[0], SMALL_CONFIG)
