"""Promotion meets intervals, on a real registry (temp SQLite store): the declared signature
change lets a challenger with intervals replace a champion from before them, and says so;
an accidental signature change and miscalibrated intervals are refused, each in one line."""

from __future__ import annotations

import copy

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from model import packaging, registry
from model.data import PROJECT_ROOT, load_raw, split_train_test
from model.intervals import ConformalIntervals
from model.promotion import promote
from model.pyfunc import CaliforniaHousingModel
from model.signatures import PREDICTION_INTERVALS
from model.train import TrainingConfig, fit_model, fit_point_model, log_and_register

pytestmark = pytest.mark.integration

QUICK = dict(num_leaves=31, max_depth=8, cv_folds=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("interval-gates")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    experiment = MlflowClient().create_experiment("gates", artifact_location=(root / "artifacts").as_uri())
    yield experiment
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def frames(raw_data_path):
    return split_train_test(load_raw(raw_data_path))


def register(model, signature: ModelSignature, example, experiment: str) -> str:
    """Log ``model`` as ``packaging.log_model`` does, but behind ``signature``; register it."""
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name=packaging.ARTIFACT_NAME,
            python_model=model,
            signature=signature,
            input_example=example,
            code_paths=[str(PROJECT_ROOT / "model")],
            pip_requirements=packaging.pip_requirements(),
        )
    return str(registry.register_candidate(info.model_uri).version)


def tags(version: str) -> dict[str, str]:
    return MlflowClient().get_model_version(registry.MODEL_NAME, version).tags


def test_a_declared_change_is_promoted_and_named_an_accidental_one_and_bad_coverage_refused(
    store, frames, raw_data_path
):
    train_frame, test_frame = frames
    example = packaging.input_example(train_frame)

    # Version 1, champion: a model from before intervals, behind the signature it had then.
    features, regressor = fit_point_model(train_frame, TrainingConfig(n_estimators=10, **QUICK))
    before = CaliforniaHousingModel(features, regressor, intervals=None)
    assert register(before, PREDICTION_INTERVALS.before, example, store) == "1"

    # Version 2, challenger: today's model, registered as `train` does; better, and with intervals.
    model = fit_model(train_frame, TrainingConfig(n_estimators=60, **QUICK))
    with mlflow.start_run(experiment_id=store):
        assert str(log_and_register(model, train_frame, test_frame).version) == "2"
    promoted = promote(raw_data_path)
    assert promoted.moved, promoted.message
    assert promoted.message.endswith("; signature changed as declared: prediction intervals")
    assert tags("2")["promotion.signature_change"] == "prediction intervals"
    assert 0.78 <= float(tags("2")["promotion.challenger_coverage"]) <= 0.82
    assert registry.champion_version().version == 2

    # Version 3: the same model, but an accidental change (bedrooms made required) rides along.
    inputs = [ColSpec(s.type, s.name) for s in packaging.SIGNATURE.inputs.inputs]
    accidental = ModelSignature(Schema(inputs), packaging.SIGNATURE.outputs, packaging.SIGNATURE.params)
    assert register(model, accidental, example, store) == "3"
    refused = promote(raw_data_path)
    assert not refused.moved and refused.gate == "signature"
    assert refused.message == (
        "refused: signature gate: challenger differs from champion: inputs: lacks ['total_bedrooms:double?'], "
        "adds ['total_bedrooms:double'] (? = optional)"
    )

    # Version 4: the right signature, but intervals half as wide as calibrated.
    miscalibrated = copy.copy(model)
    miscalibrated.intervals = ConformalIntervals(model.intervals.spread, model.intervals.scores / 2)
    assert register(miscalibrated, packaging.SIGNATURE, example, store) == "4"
    refused = promote(raw_data_path)
    assert not refused.moved and refused.gate == "coverage"
    assert refused.message.startswith("refused: coverage gate: challenger's interval=0.8 covers ")
    assert refused.message.endswith(" % of test values (needs 78.0 %–82.0 %)")
    assert float(tags("4")["promotion.challenger_coverage"]) < 0.7
    assert registry.champion_version().version == 2
