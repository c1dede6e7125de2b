"""What the harness measures: the project's artifact, the trivial ceiling model, resampled data."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from model import packaging
from model.data import (
    CATEGORICAL_COLUMN,
    FEATURE_COLUMNS,
    PROJECT_ROOT,
    RAW_DATA_PATH,
    load_raw,
    split_train_test,
)
from model.train import TrainingConfig, fit_model

TRIVIAL_MODEL_CODE = Path(__file__).with_name("trivial_model.py")
SHARED_DATA_PATH = PROJECT_ROOT.parent / "shared" / "data" / "housing.csv"
RESAMPLING_SEED = 20240601


def find_data_path(explicit: str | None = None) -> Path:
    """The raw CSV: ``--data``, ``$HOUSING_CSV``, the DVC-tracked copy, or CI's read-only ../shared."""
    for candidate in (explicit, os.environ.get("HOUSING_CSV"), RAW_DATA_PATH, SHARED_DATA_PATH):
        if candidate and Path(candidate).exists():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        f"raw dataset not found at {RAW_DATA_PATH} or {SHARED_DATA_PATH}; run `make data`"
    )


def feature_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """The nine input columns as a server or a CSV reader hands them to the pyfunc."""
    frame = raw[list(FEATURE_COLUMNS)].reset_index(drop=True)
    frame[CATEGORICAL_COLUMN] = frame[CATEGORICAL_COLUMN].astype(object)
    return frame


class Resampled:
    """Rows drawn with replacement from the real data; row ``i`` is the same in every size,
    so an in-process frame of n rows is exactly the first n rows of any batch file."""

    def __init__(self, features: pd.DataFrame, seed: int = RESAMPLING_SEED):
        self.features = features
        self.rng = np.random.default_rng(seed)
        self.index = np.empty(0, dtype=np.int64)

    def _indices(self, n: int) -> np.ndarray:
        if n > len(self.index):
            more = self.rng.integers(0, len(self.features), n - len(self.index))
            self.index = np.concatenate([self.index, more])
        return self.index[:n]

    def frame(self, n: int) -> pd.DataFrame:
        return self.features.iloc[self._indices(n)].reset_index(drop=True)

    def write_csv(self, n: int, path: Path, chunk: int = 1_000_000) -> Path:
        """The first ``n`` rows as CSV, rendered once per source row (seconds for 10 M rows)."""
        lines = np.array(
            self.features.to_csv(index=False, header=False, lineterminator="\n").splitlines(True),
            dtype=object,
        )
        index = self._indices(n)
        with open(path, "w") as handle:
            handle.write(",".join(FEATURE_COLUMNS) + "\n")
            for start in range(0, n, chunk):
                handle.write("".join(lines[index[start : start + chunk]]))
        return path


def training_config(short: bool) -> TrainingConfig:
    """The default configuration; the short form keeps its features with at most 100 trees."""
    default = TrainingConfig()
    if not short:
        return default
    return TrainingConfig(**{**default.__dict__, "n_estimators": min(100, default.n_estimators)})


def build_project_model(workdir: Path, data_path: Path, config: TrainingConfig) -> tuple[Path, float]:
    """Fit ``config`` on the frozen training split, log it with ``model.packaging`` into a
    throw-away store, and return the artifact's local directory and the fit's seconds."""
    train_frame, _ = split_train_test(load_raw(data_path))
    started, cpu = time.perf_counter(), time.process_time()
    fitted = fit_model(train_frame, config)
    fit_seconds = time.perf_counter() - started
    print(f"   fit: {fit_seconds:.1f} s wall, {time.process_time() - cpu:.1f} s CPU", flush=True)
    _throwaway_store(workdir)
    with mlflow.start_run(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = packaging.log_model(fitted, packaging.input_example(train_frame))
    return Path(
        mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(workdir / "project-model"))
    ), fit_seconds


def download_model(workdir: Path, model_uri: str) -> Path:
    """An existing artifact (``--model-uri``, e.g. ``models:/CaliforniaHousingRegressor@champion``)."""
    return Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(workdir / "project-model")))


def save_trivial_model(workdir: Path, data_path: Path) -> Path:
    """Zeros behind the project's signature and input example: the servers' ceiling."""
    path = workdir / "trivial-model"
    example = packaging.input_example(load_raw(data_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(
            str(path),
            python_model=str(TRIVIAL_MODEL_CODE),
            signature=packaging.SIGNATURE,
            input_example=example,
            pip_requirements=packaging.pip_requirements(),
        )
    return path


def save_lightgbm_path_model(workdir: Path, python_model) -> Path:
    """The benchmarked model saved without its compiled trees: it predicts with LightGBM's
    ``Booster.predict`` at every batch size, as every artifact did before them. The
    baseline of the compiled trees' figures, built from the same fitted model."""
    path = workdir / "lightgbm-path-model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(
            str(path),
            python_model=python_model,
            signature=packaging.SIGNATURE,
            code_paths=[str(PROJECT_ROOT / "model")],
            pip_requirements=packaging.pip_requirements(),
        )
    return path


def _throwaway_store(workdir: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = MlflowClient().create_experiment(
        "benchmarks", artifact_location=(workdir / "artifacts").as_uri()
    )
    mlflow.set_experiment(experiment_id=experiment)
