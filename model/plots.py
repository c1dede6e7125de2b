"""The evaluation's figures, and the Markdown page that shows them in the MLflow UI.

Every figure is drawn from plain arrays (test values, predictions, bounds), so the
registering ``train`` run and the ``evaluate`` entry point draw the same plots.
"""

from __future__ import annotations

from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from model.data import TARGET, TARGET_CAP  # noqa: E402

PLOTS_DIR = "plots"


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


def plot_interval_coverage_by_decile(by_decile: pd.DataFrame):
    """Coverage (left) and mean width (right) of each level's intervals, by true-price decile.

    ``by_decile`` has one row per (decile, level): ``decile`` (a label), ``level``,
    ``coverage`` and ``mean_width`` (USD).
    """
    figure, (coverage_axes, width_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = list(dict.fromkeys(by_decile["decile"]))
    positions = np.arange(len(labels))
    for level, rows in by_decile.groupby("level"):
        (line,) = coverage_axes.plot(positions, rows["coverage"] * 100, "o-", label=f"interval={level:g}")
        coverage_axes.axhline(level * 100, color=line.get_color(), linestyle=":", linewidth=1)
        width_axes.plot(
            positions, rows["mean_width"] / 1e3, "o-", color=line.get_color(), label=f"interval={level:g}"
        )
    for axes in (coverage_axes, width_axes):
        axes.set_xticks(positions, labels, rotation=30, ha="right")
        axes.set_xlabel("actual value decile (k USD)")
        axes.legend()
    coverage_axes.set(
        ylabel="true values inside the interval (%)", title="Coverage by price decile (dotted: nominal)"
    )
    width_axes.set(ylabel="mean width (k USD)", title="Interval width by price decile")
    figure.tight_layout()
    return figure


def markdown_page(run_id: str, metrics: dict[str, float], plots: tuple[str, ...]) -> str:
    """The run's evaluation as Markdown for the MLflow UI's description fields: the key test
    figures and every plot, embedded from the run's artifacts.

    Images are addressed relative to the UI's page (:func:`artifact_url`), so they load from
    whichever tracking server or ``mlflow ui`` shows the page, under any static prefix.
    """
    lines = [
        "## Evaluation on the frozen test split",
        "",
        f"Source run `{run_id}`, plots in its artifacts under `{PLOTS_DIR}/`.",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    for key, label, unit in _SUMMARY:
        if key in metrics and np.isfinite(metrics[key]):
            value = metrics[key] * 100 if unit == "%" else metrics[key]
            lines.append(
                f"| {label} | {value:,.1f} % |" if unit == "%" else f"| {label} | {value:,.0f} {unit} |"
            )
    lines.append("")
    for name in plots:
        lines += [f"![{name}]({artifact_url(run_id, f'{PLOTS_DIR}/{name}')})", ""]
    return "\n".join(lines)


def artifact_url(run_id: str, path: str) -> str:
    """A run's artifact as a description's Markdown can embed it: relative to the UI's page
    (``get-artifact?…``), so it loads from whichever tracking server or ``mlflow ui`` shows it."""
    return f"get-artifact?path={quote(path, safe='')}&run_uuid={run_id}"


# (metric key, label, unit) of the summary table.
_SUMMARY = (
    ("rmse", "RMSE", "USD"),
    ("rmse_ci95_low", "RMSE 95 % bootstrap interval, low", "USD"),
    ("rmse_ci95_high", "RMSE 95 % bootstrap interval, high", "USD"),
    ("mae", "MAE", "USD"),
    ("interval_coverage_50", "interval=0.5 coverage", "%"),
    ("interval_coverage_80", "interval=0.8 coverage", "%"),
    ("interval_coverage_90", "interval=0.9 coverage", "%"),
    ("interval_width_median_80", "interval=0.8 median width", "USD"),
)
