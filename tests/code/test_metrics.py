"""Evaluation maths on hand-made numbers: RMSE/MAE/R², bootstrap CI, capped/uncapped RMSE, permutation importance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from model.data import TARGET_CAP
from model.metrics import (
    bootstrap_rmse_ci,
    capped_split_rmse,
    permutation_importance,
    regression_metrics,
    rmse,
)


def noisy(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.uniform(50_000, 400_000, n)
    return y_true, y_true + rng.normal(0, 40_000, n)


def test_regression_metrics_agree_with_scikit_learn():
    y_true, y_pred = noisy(1_000)
    assert regression_metrics(y_true, y_pred) == pytest.approx(
        {
            "rmse": root_mean_squared_error(y_true, y_pred),
            "mae": mean_absolute_error(y_true, y_pred),
            "r2": r2_score(y_true, y_pred),
        },
        rel=1e-12,
    )


def test_rmse_on_a_hand_made_case_and_of_nothing():
    assert rmse([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 6.0]) == pytest.approx(np.sqrt(5 / 4))
    assert np.isnan(rmse([], []))


def test_bootstrap_ci_contains_the_point_estimate_and_narrows_with_n():
    widths = []
    for n in (200, 5_000):
        y_true, y_pred = noisy(n)
        low, high = bootstrap_rmse_ci(y_true, y_pred, n_resamples=1_000, seed=0)
        assert low < rmse(y_true, y_pred) < high
        widths.append(high - low)
    # The width shrinks like 1/sqrt(n): 25x the rows, about a fifth of the width.
    assert widths[1] < widths[0] / 3


def test_bootstrap_ci_is_seeded():
    y_true, y_pred = noisy(500)
    assert bootstrap_rmse_ci(y_true, y_pred, seed=3) == bootstrap_rmse_ci(y_true, y_pred, seed=3)
    assert bootstrap_rmse_ci(y_true, y_pred, seed=3) != bootstrap_rmse_ci(y_true, y_pred, seed=4)


def test_bootstrap_ci_of_perfect_predictions_is_zero():
    y = np.arange(10.0)
    assert bootstrap_rmse_ci(y, y, n_resamples=50) == (0.0, 0.0)


def test_capped_and_uncapped_rmse_on_a_hand_made_frame():
    frame = pd.DataFrame(
        {
            "actual": [100_000.0, 200_000.0, TARGET_CAP, TARGET_CAP],
            "predicted": [103_000.0, 196_000.0, 450_001.0, 500_001.0],
        }
    )
    metrics = capped_split_rmse(frame["actual"], frame["predicted"])
    assert metrics["rmse_uncapped"] == pytest.approx(np.sqrt((3_000**2 + 4_000**2) / 2))
    assert metrics["rmse_capped"] == pytest.approx(np.sqrt(50_000**2 / 2))
    assert metrics["n_capped"] == 2


def test_capped_rmse_is_nan_without_capped_rows():
    metrics = capped_split_rmse([1.0, 2.0], [1.0, 3.0])
    assert np.isnan(metrics["rmse_capped"]) and metrics["n_capped"] == 0
    assert metrics["rmse_uncapped"] == pytest.approx(np.sqrt(0.5))


def test_permutation_importance_ranks_the_column_the_model_uses():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"used": rng.normal(size=2_000), "ignored": rng.normal(size=2_000)})
    y = 3 * frame["used"].to_numpy()
    importance = permutation_importance(
        lambda rows: 3 * rows["used"].to_numpy(), frame, y, columns=("used", "ignored"), n_repeats=2
    )
    assert list(importance.index) == ["used", "ignored"]
    assert importance.loc["used", "mean"] > 3.0
    assert importance.loc["ignored", "mean"] == 0.0
