"""The tuning search space: a trial's parameters become a ``TrainingConfig``."""

from __future__ import annotations

import optuna

from model.train import TrainingConfig
from model.tune import NEIGHBOURHOODS, TuneSettings, config_from_params, suggest_config


def test_a_trial_becomes_a_training_config():
    settings = TuneSettings(cv_folds=3, max_estimators=300)
    params = {
        "n_estimators": 250,
        "learning_rate": 0.05,
        "num_leaves": 31,
        "max_depth": 9,
        "min_child_samples": 10,
        "subsample": 0.8,
        "colsample_bytree": 0.6,
        "reg_lambda": 1.0,
        "n_neighbors": NEIGHBOURHOODS[2],
    }
    config = suggest_config(optuna.trial.FixedTrial(params), settings)
    assert config == TrainingConfig(**{**params, "n_neighbors": (10, 30, 100)}, cv_folds=3)
    assert config_from_params({"num_leaves": 9}, settings) == TrainingConfig(num_leaves=9, cv_folds=3)
