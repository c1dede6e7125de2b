"""Score any model on the frozen test split: metrics, their uncertainty, and diagnostic plots.

``evaluate`` and ``promote`` both measure models with :func:`score_model`, on
:func:`load_test_split` of the raw data, so a promotion compares numbers computed the
same way, now, rather than metrics some earlier run logged.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.pyfunc import PyFuncModel  # noqa: E402

from model.data import FEATURE_COLUMNS, TARGET, TARGET_CAP, load_raw, split_train_test  # noqa: E402

TEST_DATASET_NAME = "california-housing-test"
PLOTS = ("predicted_vs_actual.png", "residuals_by_decile.png", "error_map.png", "permutation_importance.png")
# MLflow's default regressor evaluator; SHAP explanations are off (slow, and the
# permutation importance below explains the raw input columns instead).
EVALUATOR_CONFIG = {"log_model_explainability": False}
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


def load_test_split(data_path: Path) -> pd.DataFrame:
    """The frozen test part of the raw data (``model.data.split_train_test``)."""
    return split_train_test(load_raw(Path(data_path)))[1]


def rmse(y_true, y_pred) -> float:
    error = np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)
    return float(np.sqrt(np.mean(error**2))) if error.size else float("nan")


def capped_split_rmse(y_true, y_pred, cap: float = TARGET_CAP) -> dict[str, float]:
    """RMSE on rows below the census top-code and on top-coded rows (NaN when a group is empty)."""
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    capped = y_true >= cap
    return {
        "rmse_uncapped": rmse(y_true[~capped], y_pred[~capped]),
        "rmse_capped": rmse(y_true[capped], y_pred[capped]),
        "n_capped": int(capped.sum()),
    }


def bootstrap_rmse_ci(
    y_true, y_pred, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the RMSE: rows resampled with replacement, all at once."""
    squared = (np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)) ** 2
    rows = np.random.default_rng(seed).integers(0, len(squared), size=(n_resamples, len(squared)))
    resampled = np.sqrt(squared[rows].mean(axis=1))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return float(low), float(high)


def permutation_importance(
    predict: Callable[[pd.DataFrame], np.ndarray],
    frame: pd.DataFrame,
    y_true,
    columns=FEATURE_COLUMNS,
    n_repeats: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """RMSE increase when one raw input column is shuffled, through the whole model.

    Returns one row per column: ``mean`` and ``std`` of the increase over repeats,
    sorted from most to least important.
    """
    rng = np.random.default_rng(seed)
    baseline = rmse(y_true, predict(frame))
    rows = []
    for column in columns:
        increases = []
        for _ in range(n_repeats):
            shuffled = frame.copy()
            shuffled[column] = rng.permutation(shuffled[column].to_numpy())
            increases.append(rmse(y_true, predict(shuffled)) - baseline)
        rows.append({"column": column, "mean": float(np.mean(increases)), "std": float(np.std(increases))})
    return pd.DataFrame(rows).set_index("column").sort_values("mean", ascending=False)


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


def evaluate(
    model_uri: str,
    data_path: Path,
    n_bootstrap: int = 1000,
    permutation_repeats: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """One tracked run: score ``model_uri`` on the frozen test split, log metrics and plots."""
    test_frame = load_test_split(data_path)
    y_true = test_frame[TARGET].to_numpy(dtype=float)
    with mlflow.start_run():
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
        predicted = predictions_of(model, test_frame)
        low, high = bootstrap_rmse_ci(y_true, predicted, n_bootstrap, seed=seed)
        importance = permutation_importance(
            lambda frame: predictions_of(model, frame),
            test_frame,
            y_true,
            n_repeats=permutation_repeats,
            seed=seed,
        )
        extra = {
            **capped_split_rmse(y_true, predicted),
            "rmse_ci95_low": low,
            "rmse_ci95_high": high,
            **{f"permutation_importance_{column}": value for column, value in importance["mean"].items()},
        }
        mlflow.log_metrics({key: value for key, value in extra.items() if np.isfinite(value)})
        metrics = scored | extra
        mlflow.log_dict(importance.reset_index().to_dict(orient="records"), "permutation_importance.json")
        figures = {
            "predicted_vs_actual.png": plot_predicted_vs_actual(
                y_true, predicted, metrics["rmse"], (low, high)
            ),
            "residuals_by_decile.png": plot_residuals_by_decile(y_true, predicted),
            "error_map.png": plot_error_map(test_frame, predicted),
            "permutation_importance.png": plot_permutation_importance(importance, permutation_repeats),
        }
        with tempfile.TemporaryDirectory() as directory:
            for name, figure in figures.items():
                figure.savefig(Path(directory) / name, dpi=110, bbox_inches="tight")
                plt.close(figure)
                mlflow.log_artifact(str(Path(directory) / name), artifact_path="plots")
    return metrics


def plot_predicted_vs_actual(y_true, y_pred, point_rmse: float, ci: tuple[float, float]):
    figure, axes = plt.subplots(figsize=(6, 6))
    axes.scatter(y_true / 1e3, y_pred / 1e3, s=3, alpha=0.3)
    limit = max(np.max(y_true), np.max(y_pred)) / 1e3 * 1.02
    axes.plot([0, limit], [0, limit], color="black", linewidth=1, label="predicted = actual")
    axes.axvline(TARGET_CAP / 1e3, color="tab:red", linestyle=":", label="census cap (500,001)")
    axes.set(
        xlabel="actual median house value (k USD)",
        ylabel="predicted (k USD)",
        title=f"test RMSE {point_rmse:,.0f} (95 % CI {ci[0]:,.0f}–{ci[1]:,.0f})",
        xlim=(0, limit),
        ylim=(0, limit),
    )
    axes.legend(loc="upper left")
    return figure


def plot_residuals_by_decile(y_true, y_pred):
    deciles = pd.qcut(pd.Series(y_true), 10, duplicates="drop")
    residuals = pd.Series((np.asarray(y_pred) - np.asarray(y_true)) / 1e3)
    groups = [residuals[deciles == interval].to_numpy() for interval in deciles.cat.categories]
    labels = [f"{bin.left / 1e3:,.0f}–{bin.right / 1e3:,.0f}" for bin in deciles.cat.categories]
    figure, axes = plt.subplots(figsize=(9, 4.5))
    axes.boxplot(groups, showfliers=False)
    axes.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
    means = [group.mean() for group in groups]
    axes.plot(range(1, len(groups) + 1), means, "o", color="tab:red", label="mean")
    axes.axhline(0, color="black", linewidth=1)
    axes.set(
        xlabel="actual value decile (k USD)",
        ylabel="predicted − actual (k USD)",
        title="Residuals by price decile",
    )
    axes.legend()
    return figure


def plot_error_map(test_frame: pd.DataFrame, y_pred):
    error = np.abs(np.asarray(y_pred) - test_frame[TARGET].to_numpy(dtype=float)) / 1e3
    order = np.argsort(error)  # largest errors drawn last, on top
    figure, axes = plt.subplots(figsize=(6.5, 6))
    points = axes.scatter(
        test_frame["longitude"].to_numpy()[order],
        test_frame["latitude"].to_numpy()[order],
        c=error[order],
        s=4,
        cmap="viridis",
        vmax=np.quantile(error, 0.99),
    )
    figure.colorbar(points, label="|predicted − actual| (k USD)")
    axes.set(xlabel="longitude", ylabel="latitude", title="Absolute error on the test blocks")
    axes.set_aspect(1 / np.cos(np.radians(37.0)))
    return figure


def plot_permutation_importance(importance: pd.DataFrame, n_repeats: int):
    ordered = importance.iloc[::-1]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.barh(ordered.index, ordered["mean"], xerr=ordered["std"], color="tab:blue")
    axes.set(
        xlabel="test RMSE increase when the column is shuffled (USD)",
        title=f"Permutation importance of the raw inputs ({n_repeats} repeats)",
    )
    return figure
