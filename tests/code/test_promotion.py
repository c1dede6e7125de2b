"""Promotion gates on hand-made inputs, the tuning search space, and the registry lock on a real store."""

from __future__ import annotations

import threading

import mlflow
import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from model import registry
from model.gates import Refusal, check_rmse, check_signature, check_smoke
from model.packaging import SIGNATURE, locked_versions, pip_requirements
from model.promotion import check_requirements
from model.train import TrainingConfig
from model.tune import NEIGHBOURHOODS, TuneSettings, config_from_params, suggest_config


def signature_with(bedrooms_required: bool) -> ModelSignature:
    inputs = [
        ColSpec(
            spec.type,
            spec.name,
            required=bedrooms_required if spec.name == "total_bedrooms" else spec.required,
        )
        for spec in SIGNATURE.inputs.inputs
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=SIGNATURE.outputs, params=SIGNATURE.params)


def test_identical_signatures_pass():
    check_signature(signature_with(False), SIGNATURE)


def test_signature_mismatch_is_refused_with_the_difference():
    with pytest.raises(
        Refusal,
        match=r"signature gate: .*inputs: lacks \['total_bedrooms:double\?'\], adds \['total_bedrooms:double'\]",
    ) as refused:
        check_signature(signature_with(True), SIGNATURE)
    assert refused.value.gate == "signature"
    assert refused.value.message.startswith("refused: signature gate:")


def test_a_missing_signature_is_refused():
    with pytest.raises(Refusal, match="challenger has no signature"):
        check_signature(None, SIGNATURE)


def test_requirements_equal_to_the_lock_pass():
    check_requirements(["# pinned", *pip_requirements(), ""], locked_versions())


@pytest.mark.parametrize(
    "line, reason",
    [
        ("numpy==1.0.0", r"numpy==1.0.0 \(lock: "),
        ("numpy>=1.0", r"numpy>=1.0 \(not pinned with ==\)"),
        ("numpy==2.4.6,<3", r"numpy==2.4.6,<3 \(not pinned with ==\)"),
        (
            "numpy @ https://example.com/numpy.whl",
            r"numpy @ https://example.com/numpy.whl \(not pinned with ==\)",
        ),
        ("left-pad==1.3.0", r"left-pad==1.3.0 \(not in requirements.lock\)"),
    ],
)
def test_requirements_differing_from_the_lock_are_refused(line, reason):
    requirements = [r for r in pip_requirements() if not r.startswith("numpy==")] + [line]
    with pytest.raises(
        Refusal, match=rf"requirements gate: 1 of {len(requirements)} requirements differ .*{reason}"
    ):
        check_requirements(requirements, locked_versions())


def test_package_names_compare_normalised():
    check_requirements(["Scikit_Learn==1.2.3"], {"scikit-learn": "1.2.3"})


def test_no_requirements_is_refused():
    with pytest.raises(Refusal, match="logged no requirements"):
        check_requirements(["# nothing", ""], locked_versions())


def test_smoke_gate():
    check_smoke(np.array([1.0, 2.0]), 2)
    with pytest.raises(Refusal, match="smoke gate: .*1 of 2 predictions are not finite"):
        check_smoke(np.array([1.0, np.nan]), 2)
    with pytest.raises(Refusal, match="smoke gate: .*expected 3 predictions, got 2"):
        check_smoke(np.array([1.0, 2.0]), 3)


def test_rmse_gate_needs_strictly_better_by_the_margin():
    check_rmse(37_799.0, 37_800.0)
    with pytest.raises(Refusal) as refused:
        check_rmse(41_200.0, 37_800.0)
    assert (
        refused.value.message == "refused: rmse gate: challenger 41,200 vs champion 37,800 (needs < 37,800)"
    )
    with pytest.raises(Refusal, match="needs < 37,800"):
        check_rmse(37_800.0, 37_800.0)  # equal is not better
    check_rmse(37_299.0, 37_800.0, min_improvement=500.0)
    with pytest.raises(Refusal, match=r"challenger 37,400 vs champion 37,800 \(needs < 37,300\)"):
        check_rmse(37_400.0, 37_800.0, min_improvement=500.0)
    with pytest.raises(Refusal):
        check_rmse(float("nan"), 37_800.0)


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


@pytest.fixture(scope="module")
def sqlite_client(tmp_path_factory):
    """One store for the module (creating its schema is most of these tests' time); each test
    leaves it as it found it."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}")
    yield MlflowClient()
    mlflow.set_tracking_uri(previous)


def test_the_alias_lock_admits_one_holder_at_a_time(sqlite_client):
    with registry.alias_lock(sqlite_client):
        with pytest.raises(registry.LockTimeout, match="still exists"):
            with registry.alias_lock(sqlite_client, wait_seconds=0.5):
                pass
    with registry.alias_lock(sqlite_client, wait_seconds=0.5):  # released
        pass
    assert sqlite_client.search_registered_models() == []


def test_the_alias_lock_serialises_concurrent_holders(sqlite_client):
    inside, overlaps = [], []

    def hold():
        with registry.alias_lock(sqlite_client, wait_seconds=30, poll_seconds=0.05):
            inside.append(1)
            overlaps.append(len(inside))
            threading.Event().wait(0.2)
            inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1, 1, 1]
