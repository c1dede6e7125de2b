"""Evaluation metrics on plain arrays: RMSE (the only place it is computed), MAE and R², the
RMSE's bootstrap interval, the census cap, permutation importance, and the coverage and
width of prediction intervals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from model.data import FEATURE_COLUMNS, TARGET_CAP


def _errors(y_true, y_pred) -> np.ndarray:
    return np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)


def _root_mean_square(errors: np.ndarray, axis: int | None = None):
    return np.sqrt(np.mean(errors**2, axis=axis))


def rmse(y_true, y_pred) -> float:
    errors = _errors(y_true, y_pred)
    return float(_root_mean_square(errors)) if errors.size else float("nan")


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """``rmse``, ``mae`` and ``r2`` (the coefficient of determination) of ``y_pred``."""
    errors = _errors(y_true, y_pred)
    y_true = np.asarray(y_true, dtype=float)
    return {
        "rmse": rmse(y_true, y_pred),
        "mae": float(np.mean(np.abs(errors))),
        "r2": float(1.0 - np.sum(errors**2) / np.sum((y_true - y_true.mean()) ** 2)),
    }


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
    errors = _errors(y_true, y_pred)
    rows = np.random.default_rng(seed).integers(0, len(errors), size=(n_resamples, len(errors)))
    resampled = _root_mean_square(errors[rows], axis=1)
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


def interval_metrics(y_true, lower, upper, level: float) -> dict[str, float]:
    """Coverage (share of true values inside), mean and median width (USD) of intervals at
    ``level``, and their coverage on the rows at the census cap; keys end in the level in %."""
    y_true = np.asarray(y_true, dtype=float)
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    inside = (lower <= y_true) & (y_true <= upper)
    capped = y_true >= TARGET_CAP
    width = upper - lower
    suffix = level_suffix(level)
    return {
        f"interval_coverage_{suffix}": float(inside.mean()) if inside.size else float("nan"),
        f"interval_width_mean_{suffix}": float(width.mean()) if width.size else float("nan"),
        f"interval_width_median_{suffix}": float(np.median(width)) if width.size else float("nan"),
        f"interval_coverage_capped_{suffix}": float(inside[capped].mean()) if capped.any() else float("nan"),
    }


def level_suffix(level: float) -> str:
    """``0.8`` → ``"80"``: a coverage level in %, as metric keys carry it."""
    return f"{level * 100:g}".replace(".", "_")


def coverage_by_decile(y_true, bounds: dict[float, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Coverage and mean width of each level's ``(lower, upper)`` bounds within each decile of
    the true values: one row per (decile, level), deciles labelled in k USD."""
    y_true = np.asarray(y_true, dtype=float)
    deciles = pd.qcut(pd.Series(y_true), 10, duplicates="drop")
    rows = []
    for interval in deciles.cat.categories:
        members = (deciles == interval).to_numpy()
        label = f"{interval.left / 1e3:,.0f}–{interval.right / 1e3:,.0f}"
        for level, (lower, upper) in bounds.items():
            inside = (lower[members] <= y_true[members]) & (y_true[members] <= upper[members])
            width = upper[members] - lower[members]
            rows.append(
                {
                    "decile": label,
                    "level": level,
                    "rows": int(members.sum()),
                    "coverage": float(inside.mean()),
                    "mean_width": float(width.mean()),
                }
            )
    return pd.DataFrame(rows)
