"""The evaluation report of one model on the frozen test split, logged into the active run.

The ``train`` run that registers a version and the ``evaluate`` entry point both build it
with :func:`build_report` and log it with :func:`log_report`: the same metrics, tables and
plots (``plots/*.png``), plus the run's description (Markdown embedding the plots, shown
on the run's page in the MLflow UI). ``train`` writes the same Markdown into the model
version's description, so the version's page shows its evaluation too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PyFuncModel

from model import metrics, plots
from model.data import FEATURE_COLUMNS, TARGET
from model.intervals import INTERVAL_PARAM, LOWER_COLUMN, UPPER_COLUMN

# The coverage levels every evaluation reports (docs/model-quality.md's table).
INTERVAL_LEVELS = (0.5, 0.8, 0.9)
POINT_PLOTS = (
    "predicted_vs_actual.png",
    "residuals_by_decile.png",
    "error_map.png",
    "permutation_importance.png",
)
INTERVAL_PLOT = "interval_coverage_by_decile.png"
PLOTS = (*POINT_PLOTS, INTERVAL_PLOT)
# MLflow shows a run's `mlflow.note.content` tag as its description.
DESCRIPTION_TAG = "mlflow.note.content"

# (frame, params) -> the model's output frame; params as a server passes them.
Predictor = Callable[[pd.DataFrame, "dict | None"], pd.DataFrame]


def pyfunc_predictor(model: PyFuncModel) -> Predictor:
    """A loaded pyfunc as a :data:`Predictor` (MLflow's schema and params enforcement included)."""
    return lambda frame, params=None: model.predict(frame[list(FEATURE_COLUMNS)], params=params)


def python_model_predictor(model: mlflow.pyfunc.PythonModel) -> Predictor:
    """An in-memory model (what training just fitted) as a :data:`Predictor`."""
    return lambda frame, params=None: model.predict(None, frame[list(FEATURE_COLUMNS)], params)


@dataclass
class Report:
    """Metrics (unprefixed keys), JSON tables and figures of one evaluation."""

    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)


def build_report(
    predict: Predictor,
    test_frame: pd.DataFrame,
    n_bootstrap: int = 1000,
    permutation_repeats: int = 3,
    seed: int = 0,
) -> Report:
    """Score ``predict`` on ``test_frame``: the RMSE's bootstrap interval, RMSE below and at
    the census cap, permutation importance, intervals at ``INTERVAL_LEVELS`` (when the model
    offers them), and every plot."""
    y_true = test_frame[TARGET].to_numpy(dtype=float)
    point = _point(predict, test_frame)
    low, high = metrics.bootstrap_rmse_ci(y_true, point, n_bootstrap, seed=seed)
    importance = metrics.permutation_importance(
        lambda frame: _point(predict, frame), test_frame, y_true, n_repeats=permutation_repeats, seed=seed
    )
    report = Report(
        metrics={
            **metrics.capped_split_rmse(y_true, point),
            "rmse_ci95_low": low,
            "rmse_ci95_high": high,
            **{f"permutation_importance_{column}": value for column, value in importance["mean"].items()},
        },
        tables={"permutation_importance.json": importance.reset_index().to_dict(orient="records")},
    )
    report.figures = {
        "predicted_vs_actual.png": plots.plot_predicted_vs_actual(
            y_true, point, metrics.rmse(y_true, point), (low, high)
        ),
        "residuals_by_decile.png": plots.plot_residuals_by_decile(y_true, point),
        "error_map.png": plots.plot_error_map(test_frame, point),
        "permutation_importance.png": plots.plot_permutation_importance(importance, permutation_repeats),
    }
    bounds = interval_bounds(predict, test_frame, INTERVAL_LEVELS)
    if bounds:
        for level, (lower, upper) in bounds.items():
            report.metrics |= metrics.interval_metrics(y_true, lower, upper, level)
        by_decile = metrics.coverage_by_decile(y_true, bounds)
        report.tables["interval_coverage_by_decile.json"] = by_decile.to_dict(orient="records")
        report.figures[INTERVAL_PLOT] = plots.plot_interval_coverage_by_decile(by_decile)
    return report


def interval_bounds(
    predict: Predictor, frame: pd.DataFrame, levels
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Level → (lower, upper) arrays for ``frame``; empty if the model answers no bounds
    (a model logged before intervals existed: MLflow drops a parameter its signature lacks)."""
    bounds = {}
    for level in levels:
        output = predict(frame, {INTERVAL_PARAM: level})
        if LOWER_COLUMN not in output or UPPER_COLUMN not in output:
            return {}
        bounds[level] = (
            output[LOWER_COLUMN].to_numpy(dtype=float),
            output[UPPER_COLUMN].to_numpy(dtype=float),
        )
    return bounds


def log_report(report: Report, run_id: str, headline: dict[str, float], prefix: str = "") -> str:
    """Log ``report`` into the active run (metrics with ``prefix``, tables, ``plots/``) and set
    the run's description; returns that Markdown. ``headline`` adds the metrics logged
    elsewhere (``rmse``, ``mae``, …, unprefixed) to the description's table."""
    mlflow.log_metrics(
        {f"{prefix}{key}": value for key, value in report.metrics.items() if np.isfinite(value)}
    )
    for name, table in report.tables.items():
        mlflow.log_dict(table, name)
    with tempfile.TemporaryDirectory() as directory:
        for name, figure in report.figures.items():
            figure.savefig(Path(directory) / name, dpi=110, bbox_inches="tight")
            plots.plt.close(figure)
        mlflow.log_artifacts(directory, artifact_path=plots.PLOTS_DIR)
    page = plots.markdown_page(run_id, headline | report.metrics, tuple(report.figures))
    mlflow.set_tag(DESCRIPTION_TAG, page)
    return page


def _point(predict: Predictor, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(predict(frame, None)[TARGET], dtype=float)
