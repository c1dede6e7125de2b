"""Score any model on the frozen test split: metrics, their uncertainty, intervals and plots.

``evaluate`` and ``promote`` both measure models with :func:`score_model` (and the coverage
gate with :func:`logged_coverage`), on :func:`load_test_split` of the raw data, so a
promotion compares numbers computed the same way, now, rather than metrics some earlier
run logged. The metrics' maths is ``model.metrics``; the report (tables, plots,
description) is ``model.report``, which the registering ``train`` run logs too.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel

from model.data import FEATURE_COLUMNS, TARGET, load_raw, split_train_test
from model.metrics import interval_metrics, level_suffix
from model.report import build_report, interval_bounds, log_report, pyfunc_predictor

TEST_DATASET_NAME = "california-housing-test"
# MLflow's default regressor evaluator; SHAP explanations are off (slow, and the
# permutation importance explains the raw input columns instead).
EVALUATOR_CONFIG = {"log_model_explainability": False}
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


def load_test_split(data_path: Path) -> pd.DataFrame:
    """The frozen test part of the raw data (``model.data.split_train_test``)."""
    return split_train_test(load_raw(Path(data_path)))[1]


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI and, when it names a registry version, which one."""

    uri: str
    name: str | None = None
    version: str | None = None

    @property
    def pinned_uri(self) -> str:
        """``models:/<name>/<version>`` for registry URIs, so an alias moving mid-run changes nothing."""
        return f"models:/{self.name}/{self.version}" if self.version else self.uri


def resolve(model_uri: str, client: mlflow.MlflowClient | None = None) -> ResolvedModel:
    match = _MODELS_URI.match(model_uri)
    if not match:
        return ResolvedModel(model_uri)
    if match["version"]:
        return ResolvedModel(model_uri, match["name"], match["version"])
    client = client or mlflow.MlflowClient()
    version = client.get_model_version_by_alias(match["name"], match["alias"])
    return ResolvedModel(model_uri, match["name"], str(version.version))


def predictions_of(model: PyFuncModel, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict(frame[list(FEATURE_COLUMNS)])[TARGET], dtype=float)


def _log_dataset_input(dataset, context: str | None, attempts: int = 3) -> None:
    """Record the test set as a run input before ``mlflow.models.evaluate`` does.

    Two runs inserting the same new dataset at once race on the tracking store's
    unique key (seen with two ``promote`` processes on PostgreSQL: the loser got
    ``UniqueViolation ... dataset_pk``); a retry finds the row the winner wrote, and
    ``evaluate`` then reuses it instead of inserting it again.
    """
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def score_model(model: PyFuncModel, test_frame: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """MLflow's default regressor evaluation of ``model`` on ``test_frame``, in the active run.

    ``mlflow.models.evaluate`` logs its metrics (``root_mean_squared_error``,
    ``mean_absolute_error``, ``r2_score``, ...) and the test dataset as a run input;
    returns and also logs ``rmse``, ``mae`` and ``r2``; every key gets ``prefix``.
    """
    data = test_frame[[*FEATURE_COLUMNS, TARGET]].reset_index(drop=True)
    dataset = mlflow.data.from_pandas(data, targets=TARGET, name=TEST_DATASET_NAME)
    _log_dataset_input(dataset, context=prefix or None)
    result = mlflow.models.evaluate(
        model,
        dataset,
        model_type="regressor",
        evaluators="default",
        evaluator_config={**EVALUATOR_CONFIG, "metric_prefix": prefix},
    )
    metrics = {
        f"{prefix}rmse": float(result.metrics[f"{prefix}root_mean_squared_error"]),
        f"{prefix}mae": float(result.metrics[f"{prefix}mean_absolute_error"]),
        f"{prefix}r2": float(result.metrics[f"{prefix}r2_score"]),
    }
    mlflow.log_metrics(metrics)
    return metrics


def logged_coverage(
    model: PyFuncModel, test_frame: pd.DataFrame, level: float, prefix: str = ""
) -> float | None:
    """The share of test values inside ``model``'s intervals at ``level``, logged as
    ``<prefix>interval_coverage_<level %>``; None if the model answers no intervals."""
    bounds = interval_bounds(pyfunc_predictor(model), test_frame, (level,))
    if not bounds:
        return None
    key = f"interval_coverage_{level_suffix(level)}"
    coverage = interval_metrics(test_frame[TARGET], *bounds[level], level)[key]
    mlflow.log_metric(f"{prefix}{key}", coverage)
    return coverage


def evaluate(
    model_uri: str,
    data_path: Path,
    n_bootstrap: int = 1000,
    permutation_repeats: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """One tracked run: score ``model_uri`` on the frozen test split, log metrics and plots."""
    test_frame = load_test_split(data_path)
    with mlflow.start_run() as run:
        resolved = resolve(model_uri)
        mlflow.set_tags(
            {
                "evaluated_model_uri": model_uri,
                "evaluated_model_resolved_uri": resolved.pinned_uri,
                "evaluated_model_name": resolved.name or "",
                "evaluated_model_version": resolved.version or "",
            }
        )
        model = mlflow.pyfunc.load_model(resolved.pinned_uri)
        scored = score_model(model, test_frame)  # logs its own metrics
        report = build_report(pyfunc_predictor(model), test_frame, n_bootstrap, permutation_repeats, seed)
        log_report(report, run.info.run_id, headline=scored)
    return scored | report.metrics
