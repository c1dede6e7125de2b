"""The model lifecycle for real: `mlflow run` entry points train, promote, rollback, tune and evaluate,
on a temp SQLite store (promotions racing each other through a real `mlflow server` on PostgreSQL:
tests/integration/test_alias_lease.py)."""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from model import registry
from model.data import PROJECT_ROOT
from model.registry import CHALLENGER, CHAMPION, MODEL_NAME
from model.report import PLOTS
from testbed.mlflow_cli import mlflow_run
from testbed.processes import process_env

pytestmark = pytest.mark.integration

EXPERIMENT = "lifecycle"
RUN_ID = re.compile(r"Run \(ID '([0-9a-f]+)'\)")


def run_entry_point(
    env: dict, entry_point: str, *params: str, experiment: str = EXPERIMENT
) -> subprocess.CompletedProcess:
    return subprocess.run(
        mlflow_run(PROJECT_ROOT, entry_point, experiment, *params),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_id_of(completed: subprocess.CompletedProcess) -> str:
    return RUN_ID.search(completed.stderr).group(1)


def refusal_lines(completed: subprocess.CompletedProcess) -> list[str]:
    return [line for line in completed.stderr.splitlines() if line.startswith("refused:")]


def alias(name: str) -> str | None:
    version = registry.version_by_alias(name)
    return str(version.version) if version else None


def tags(version: str) -> dict[str, str]:
    return MlflowClient().get_model_version(MODEL_NAME, version).tags


@contextlib.contextmanager
def tracking_uri(uri: str):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def store(tmp_path_factory, raw_data_path):
    """A fresh SQLite registry; artifacts in the temp dir, not in the repo's ./mlruns."""
    root = tmp_path_factory.mktemp("lifecycle")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with tracking_uri(uri):
        MlflowClient().create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
        yield process_env({"MLFLOW_TRACKING_URI": uri})


def test_train_promote_tune_evaluate_rollback(store, raw_data_path):
    """One registry's story; the better candidate comes from `tune` (100 trees against the champion's 60)."""
    data = f"data_path={raw_data_path}"
    client = MlflowClient()

    first = run_entry_point(store, "train", data, "n_estimators=60", "learning_rate=0.02", "cv_folds=0")
    assert first.returncode == 0, first.stderr[-5000:]
    assert f"registered {MODEL_NAME} version 1 as {CHAMPION}" in first.stdout
    assert (alias(CHAMPION), alias(CHALLENGER)) == ("1", None)

    # A deliberately weak candidate: registered as challenger, refused by the rmse gate.
    weak = run_entry_point(store, "train", data, "n_estimators=3", "num_leaves=2", "cv_folds=0")
    assert weak.returncode == 0, weak.stderr[-5000:]
    assert f"registered {MODEL_NAME} version 2 as {CHALLENGER}" in weak.stdout
    assert (alias(CHAMPION), alias(CHALLENGER)) == ("1", "2")
    refused = run_entry_point(store, "promote", data)
    assert refused.returncode != 0
    [line] = refusal_lines(refused)
    assert re.fullmatch(r"refused: rmse gate: challenger [\d,]+ vs champion ([\d,]+) \(needs < \1\)", line), (
        line
    )
    assert (alias(CHAMPION), alias(CHALLENGER)) == ("1", "2")
    weak_tags = tags("2")
    assert weak_tags["promotion.decision"] == "refused" and weak_tags["promotion.gate"] == "rmse"
    assert weak_tags["promotion.message"] == line
    assert float(weak_tags["promotion.challenger_rmse"]) > float(weak_tags["promotion.champion_rmse"])
    assert weak_tags["promotion.champion_version"] == "1" and "promotion.previous_champion" not in weak_tags
    assert [key for key in weak_tags if key.startswith("promotion.history.")]
    promote_run = client.get_run(run_id_of(refused))
    assert promote_run.data.tags["promotion.decision"] == "refused"
    assert {"challenger_rmse", "champion_rmse"} <= set(promote_run.data.metrics)

    # `tune`: one nested run per trial, the best configuration registered as challenger.
    tuned = run_entry_point(
        store, "tune", data, "n_trials=1", "max_estimators=100", "cv_folds=2", "budget_minutes=10"
    )
    assert tuned.returncode == 0, tuned.stderr[-5000:]
    assert f"registered {MODEL_NAME} version 3 as {CHALLENGER}" in tuned.stdout
    assert alias(CHALLENGER) == "3" and tags("3")["tune.study_name"] == "california-housing-lightgbm"
    parent = client.get_run(run_id_of(tuned))
    assert parent.data.metrics["best_cv_rmse"] > 0 and "test_rmse" in parent.data.metrics
    assert parent.data.params["best_n_estimators"] == "100"
    [trial] = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert trial.data.tags["optuna.trial"] == "0" and "cv_rmse_mean" in trial.data.metrics
    assert registry.get_version("3").run_id == parent.info.run_id

    # `evaluate` scores the challenger by default: metrics, bootstrap CI, intervals, the five plots.
    evaluated = run_entry_point(store, "evaluate", data, "n_bootstrap=200", "permutation_repeats=1")
    assert evaluated.returncode == 0, evaluated.stderr[-5000:]
    run = client.get_run(run_id_of(evaluated))
    metrics = run.data.metrics
    assert run.data.tags["evaluated_model_uri"] == f"models:/{MODEL_NAME}@{CHALLENGER}"
    assert run.data.tags["evaluated_model_version"] == "3"
    for key in ("rmse", "mae", "r2", "rmse_uncapped", "rmse_capped"):
        assert metrics[key] > 0, key
    assert metrics["rmse_ci95_low"] < metrics["rmse"] < metrics["rmse_ci95_high"]
    assert metrics["rmse_uncapped"] < metrics["rmse"] < metrics["rmse_capped"]
    assert {f"permutation_importance_{column}" for column in ("median_income", "latitude")} <= set(metrics)
    assert 0.78 <= metrics["interval_coverage_80"] <= 0.82 and metrics["interval_width_median_80"] > 0
    plots = {Path(artifact.path).name for artifact in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == set(PLOTS)

    # The better candidate is promoted; the challenger alias goes; the tags tell the story.
    promoted = run_entry_point(store, "promote", data)
    assert promoted.returncode == 0, promoted.stderr[-5000:]
    assert "promoted: version 3 " in promoted.stdout and "replaces champion version 1" in promoted.stdout
    assert (alias(CHAMPION), alias(CHALLENGER)) == ("3", None)
    story = tags("3")
    assert story["promotion.decision"] == "promoted" and story["promotion.gate"] == "none"
    assert story["promotion.previous_champion"] == "1"
    assert float(story["promotion.challenger_rmse"]) < float(story["promotion.champion_rmse"])
    assert float(story["promotion.challenger_rmse"]) == pytest.approx(
        metrics["rmse"]
    )  # same code, same split
    assert story["promotion.run_id"] == run_id_of(promoted)
    assert tags("1")["promotion.replaced_by"] == "3"

    # Rollback restores the previous champion; a second one has nothing recorded to go back to.
    rolled_back = run_entry_point(store, "rollback")
    assert rolled_back.returncode == 0, rolled_back.stderr[-5000:]
    assert "rolled back: champion is version 1 again (was version 3)" in rolled_back.stdout
    assert alias(CHAMPION) == "1"
    assert tags("3")["rollback.restored_version"] == "1"
    assert tags("1")["rollback.replaced_version"] == "3"
    again = run_entry_point(store, "rollback")
    assert again.returncode != 0
    assert refusal_lines(again) == [
        "refused: no previous champion: champion version 1 has no promotion.previous_champion tag"
    ]
    assert alias(CHAMPION) == "1"
