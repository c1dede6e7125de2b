"""Hyper-parameter search: Optuna over ``TrainingConfig``, one nested MLflow run per trial.

The objective is the cross-validated RMSE on the training part of the frozen split
(the test part is never looked at while searching). The best configuration is then
fitted on the whole training part and goes through the same log, smoke-test and
register path as ``train`` (``model.train.log_and_register``): it becomes
``challenger``, and ``promote`` decides whether it serves.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlflow
import optuna
import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from model import registry
from model.data import SPLIT_SEED, TARGET, TEST_SIZE, load_raw, split_train_test
from model.progress import StagedProgress
from model.tracking import log_new_params
from model.train import (
    DATASET_NAME,
    TrainingConfig,
    cross_validated_rmse,
    dataset_digest,
    fit_and_register,
    training_stages,
)

# Neighbourhood sizes are searched among a few sets (Optuna categoricals must be plain values).
NEIGHBOURHOODS = ("5,15,50", "5,20", "10,30,100", "5,15,50,150")


@dataclass(frozen=True)
class TuneSettings:
    """How long and where to search.

    Parameters
    ----------
    budget_minutes : float
        No trial starts after this, and none starts when the last one's duration
        would overrun it; the final fit and registration come on top.
    n_trials : int
        Trials for this worker; 0 = as many as the budget allows.
    storage : str
        Optuna storage URL shared by workers (e.g. ``postgresql+psycopg://…``); "" = in memory.
        It is logged as a run parameter: keep passwords out of it (``PGPASSWORD``, ``.pgpass``).
    study_name : str
        Name of the (shared) study; workers with the same storage and name cooperate.
    cv_folds : int
        Folds of each trial's cross-validation.
    max_estimators : int
        Upper bound of the trees a trial may use (keeps trials short).
    sampler_seed : int
        Seed of the TPE sampler; give each worker of a shared study its own.
    """

    budget_minutes: float = 2.0
    n_trials: int = 0
    storage: str = ""
    study_name: str = "california-housing-lightgbm"
    cv_folds: int = 3
    max_estimators: int = 600
    sampler_seed: int = 0


def suggest_config(
    trial: optuna.Trial, settings: TuneSettings, base: TrainingConfig | None = None
) -> TrainingConfig:
    """The LightGBM and neighbourhood knobs of ``TrainingConfig`` that a trial searches."""
    base = base or TrainingConfig()
    trial.suggest_int("n_estimators", 100, max(100, settings.max_estimators), step=50)
    trial.suggest_float("learning_rate", 0.02, 0.2, log=True)
    trial.suggest_int("num_leaves", 8, 255, log=True)
    trial.suggest_int("max_depth", 6, 16)
    trial.suggest_int("min_child_samples", 5, 80, log=True)
    trial.suggest_float("subsample", 0.5, 1.0)
    trial.suggest_float("colsample_bytree", 0.3, 1.0)
    trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True)
    trial.suggest_categorical("n_neighbors", NEIGHBOURHOODS)
    return config_from_params(trial.params, settings, base)


def config_from_params(
    params: dict, settings: TuneSettings, base: TrainingConfig | None = None
) -> TrainingConfig:
    """A trial's parameters as a ``TrainingConfig`` (fields a trial did not search keep ``base``'s value)."""
    base = base or TrainingConfig()
    fields = {key: value for key, value in params.items() if key in asdict(base)}
    if "n_neighbors" in fields:
        fields["n_neighbors"] = tuple(int(k) for k in str(fields["n_neighbors"]).split(","))
    return replace(base, **fields, cv_folds=settings.cv_folds)


class _StopBeforeOverrun:
    """Stop the study when another trial as long as the last one would overrun the budget."""

    def __init__(self, budget_seconds: float):
        self.deadline = time.monotonic() + budget_seconds

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        duration = trial.duration.total_seconds() if trial.duration else 0.0
        if time.monotonic() + duration > self.deadline:
            study.stop()


def tune(data_path: Path, settings: TuneSettings) -> ModelVersion:
    """One tracked run with a nested run per trial; registers the best configuration as challenger."""
    digest = dataset_digest(data_path)
    raw = load_raw(data_path)
    train_frame, test_frame = split_train_test(raw)
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=settings.storage or None,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=settings.sampler_seed),
        load_if_exists=True,
    )

    with mlflow.start_run():
        params = {"data_path": str(data_path), "test_size": TEST_SIZE, "split_seed": SPLIT_SEED}
        log_new_params({**asdict(settings), **params})
        mlflow.log_input(
            mlflow.data.from_pandas(
                raw, source=str(data_path.resolve()), targets=TARGET, name=DATASET_NAME, digest=digest
            ),
            context="tuning",
        )
        study.optimize(
            _objective(train_frame, settings),
            n_trials=settings.n_trials or None,
            timeout=settings.budget_minutes * 60,
            callbacks=[_StopBeforeOverrun(settings.budget_minutes * 60)],
        )
        return _register_best(study, settings, train_frame, test_frame)


def _objective(train_frame: pd.DataFrame, settings: TuneSettings):
    """One trial: a nested run logging the suggested parameters and their cross-validated RMSE."""

    def objective(trial: optuna.Trial) -> float:
        config = suggest_config(trial, settings)
        with mlflow.start_run(nested=True, run_name=f"trial-{trial.number}"):
            mlflow.set_tags({"optuna.study": settings.study_name, "optuna.trial": trial.number})
            mlflow.log_params(trial.params)
            started = time.perf_counter()
            scores = cross_validated_rmse(train_frame, config)
            mlflow.log_metrics(
                {
                    "cv_rmse_mean": float(scores.mean()),
                    "cv_rmse_std": float(scores.std()),
                    "trial_seconds": time.perf_counter() - started,
                }
            )
        return float(scores.mean())

    return objective


def _register_best(
    study: optuna.Study, settings: TuneSettings, train_frame: pd.DataFrame, test_frame: pd.DataFrame
) -> ModelVersion:
    """Fit the study's best configuration (across every worker of a shared study) and register it."""
    best = study.best_trial
    config = config_from_params(best.params, settings)
    best_params = {**asdict(config), "n_neighbors": ",".join(map(str, config.n_neighbors))}
    mlflow.log_params({f"best_{key}": value for key, value in best_params.items()})
    mlflow.log_metrics(
        {
            "best_cv_rmse": float(best.value),
            "n_trials_in_study": float(len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))),
        }
    )
    with StagedProgress("tune: best configuration", training_stages(cv_folds=0)) as progress:
        version = fit_and_register(train_frame, test_frame, config, progress)
    registry.set_version_tags(
        str(version.version),
        {
            "tune.study_name": settings.study_name,
            "tune.best_trial": best.number,
            "tune.best_cv_rmse": best.value,
        },
    )
    return version
