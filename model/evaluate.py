"""Score any model on the frozen test split: metrics, their uncertainty, intervals and plots.

``evaluate`` and ``promote`` both measure models with :func:`score_model` (and the coverage
gate with :func:`logged_coverage`), on :func:`load_test_split` of the raw data, so a
promotion compares numbers computed the same way, now, rather than metrics some earlier
run logged. The metrics' maths is ``model.metrics`` (the one place RMSE is computed); the
report (tables, plots, description) is ``model.report``, which the registering ``train``
run logs too.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel

from model import registry
from model.data import FEATURE_COLUMNS, TARGET, load_raw, split_train_test
from model.metrics import interval_metrics, level_suffix, regression_metrics
from model.report import build_report, interval_bounds, log_report, pyfunc_predictor

TEST_DATASET_NAME = "california-housing-test"


def load_test_split(data_path: Path) -> pd.DataFrame:
    """The frozen test part of the raw data (``model.data.split_train_test``)."""
    return split_train_test(load_raw(Path(data_path)))[1]


def _log_dataset_input(dataset, context: str | None, attempts: int = 3) -> None:
    """Record the test set as a run input.

    Two runs inserting the same new dataset at once race on the tracking store's
    unique key (seen with two ``promote`` processes on PostgreSQL: the loser got
    ``UniqueViolation ... dataset_pk``); a retry finds the row the winner wrote and
    reuses it instead of inserting it again.
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
    """``rmse``, ``mae`` and ``r2`` of ``model`` on ``test_frame`` (``model.metrics``), logged
    into the active run with the test set as a run input; every key gets ``prefix``."""
    data = test_frame[[*FEATURE_COLUMNS, TARGET]].reset_index(drop=True)
    _log_dataset_input(
        mlflow.data.from_pandas(data, targets=TARGET, name=TEST_DATASET_NAME), context=prefix or None
    )
    predicted = model.predict(data[list(FEATURE_COLUMNS)])[TARGET]
    metrics = {f"{prefix}{key}": value for key, value in regression_metrics(data[TARGET], predicted).items()}
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
        resolved = registry.resolve(model_uri)
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
