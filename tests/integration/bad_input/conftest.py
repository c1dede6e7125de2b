"""Fixtures of the bad-input matrix: one small real model per test process, its in-process
predictions, and the 100,000-row batch. The servers are the target files' own (module scope)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from model import packaging
from model.data import CATEGORICAL_COLUMN, FEATURE_COLUMNS, NUMERIC_COLUMNS, TARGET
from model.train import TrainingConfig, fit_model
from testbed.bad_input.bodies import Table
from testbed.bad_input.cases import BIG_ROWS

# The smallest model that is still the real artifact: every target loads it, the CLI once per case.
N_ESTIMATORS = 50


@pytest.fixture(scope="session")
def fitted(split):
    train_frame, _ = split
    return fit_model(train_frame, TrainingConfig(n_estimators=N_ESTIMATORS, cv_folds=0))


@pytest.fixture(scope="session")
def model_dir(fitted, split, tmp_path_factory) -> Path:
    """The real artifact, logged with model.packaging into a temp store and copied to a local directory."""
    root = tmp_path_factory.mktemp("bad-input")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    try:
        experiment = MlflowClient().create_experiment(
            "bad-input", artifact_location=(root / "artifacts").as_uri()
        )
        with mlflow.start_run(experiment_id=experiment):
            info = packaging.log_model(fitted, packaging.input_example(split[0]))
        return Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "model")))
    finally:
        mlflow.set_tracking_uri(previous)


def frame_for_reference(data: Table) -> pd.DataFrame:
    """The DataFrame a correct server hands the model for an accepted case (extra columns dropped)."""
    frame = pd.DataFrame([list(r) for r in data.rows], columns=list(data.columns))
    for column in NUMERIC_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column]).astype(float)
    if CATEGORICAL_COLUMN in frame.columns:
        frame[CATEGORICAL_COLUMN] = frame[CATEGORICAL_COLUMN].astype(object)
    return frame[[c for c in frame.columns if c in FEATURE_COLUMNS]]


@pytest.fixture(scope="session")
def expected(fitted) -> Callable[[Table], np.ndarray]:
    """In-process predictions for what a correct server hands the model."""

    def predict(data: Table) -> np.ndarray:
        return fitted.predict(None, frame_for_reference(data))[TARGET].to_numpy()

    return predict


@pytest.fixture(scope="session")
def big_batch(split) -> pd.DataFrame:
    """100,000 real rows (the test split repeated; some total_bedrooms are missing)."""
    test = split[1][list(FEATURE_COLUMNS)].reset_index(drop=True)
    test[CATEGORICAL_COLUMN] = test[CATEGORICAL_COLUMN].astype(str)
    return pd.concat([test] * -(-BIG_ROWS // len(test)), ignore_index=True).head(BIG_ROWS)


@pytest.fixture(scope="session")
def big_expected(fitted, split, big_batch) -> np.ndarray:
    once = fitted.predict(None, big_batch.head(len(split[1])))[TARGET].to_numpy()
    return np.resize(once, BIG_ROWS)
