"""The interval parameter's contract, the conformal maths and the calibration, on hand-made data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException

from model.calibration import fit_intervals
from model.intervals import (
    MAX_LEVEL,
    MIN_LEVEL,
    ConformalIntervals,
    InvalidParameterError,
    conformal_quantile,
    requested_level,
)

LEVEL_ERROR = "invalid parameter 'interval': must be a coverage level from 0.5 to 0.99 (e.g. 0.8), or null for no interval"


@pytest.mark.parametrize("params", [None, {}, {"interval": None}, {"other": 0.8}])
def test_no_interval_unless_asked(params):
    assert requested_level(params) is None


@pytest.mark.parametrize("level", [MIN_LEVEL, 0.8, 0.9, MAX_LEVEL, 0.95])
def test_levels_in_the_range_are_accepted(level):
    assert requested_level({"interval": level}) == level


@pytest.mark.parametrize(
    "level", [0.0, 0.49, 0.995, 1.0, 1, 80, -0.8, math.nan, math.inf, True, "0.8", [0.8]]
)
def test_levels_outside_the_range_are_refused_with_one_line_naming_the_parameter(level):
    with pytest.raises(InvalidParameterError) as refused:
        requested_level({"interval": level})
    assert refused.value.message == LEVEL_ERROR
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"  # a 400 from every server


def test_the_error_message_cannot_be_rewritten_to_echo_the_request():
    error = InvalidParameterError(LEVEL_ERROR)
    error.message = (
        "Failed to predict data '<every row>'. Error: " + error.message
    )  # what MLflow's server does
    assert error.message == LEVEL_ERROR and isinstance(error, MlflowException)


def test_the_conformal_quantile_is_the_ceil_n_plus_one_level_th_score():
    scores = np.arange(1.0, 10.0)  # n = 9
    assert conformal_quantile(scores, 0.5) == 5.0  # ⌈10 × 0.5⌉ = 5th
    assert conformal_quantile(scores, 0.8) == 8.0  # ⌈8.0⌉ = 8th
    assert conformal_quantile(scores, 0.81) == 9.0  # ⌈8.1⌉ = 9th
    assert conformal_quantile(scores, 0.95) == math.inf  # ⌈9.5⌉ = 10th: past the last score


class Constant:
    def __init__(self, value):
        self.value = value

    def predict(self, X):
        return np.full(len(X), self.value, dtype=float)


@given(
    point=st.lists(st.floats(-1e6, 1e7, allow_nan=False), min_size=1, max_size=50),
    spread=st.floats(1e-3, 1e6),
    level=st.floats(MIN_LEVEL, MAX_LEVEL),
)
def test_intervals_never_invert(point, spread, level):
    point = np.array(point)
    intervals = ConformalIntervals(Constant(spread), np.sort(np.random.default_rng(0).exponential(size=500)))
    lower, upper = intervals.bounds(np.zeros((len(point), 1)), point, level)
    assert (lower <= point).all() and (point <= upper).all()
    assert (lower >= np.minimum(point, 0.0)).all()  # a price's lower bound stops at 0 USD


def test_wider_levels_give_wider_intervals():
    intervals = ConformalIntervals(
        Constant(1_000.0), np.sort(np.random.default_rng(1).exponential(size=1_000))
    )
    point = np.full(3, 200_000.0)
    widths = [
        np.subtract(*intervals.bounds(np.zeros((3, 1)), point, level)[::-1]) for level in (0.5, 0.8, 0.9)
    ]
    assert (widths[0] < widths[1]).all() and (widths[1] < widths[2]).all()


class LeastSquares:
    """A linear point model, fitted by least squares: enough to calibrate against."""

    def __init__(self, X, y):
        self.coefficients = np.linalg.lstsq(np.column_stack([X, np.ones(len(X))]), y, rcond=None)[0]

    def predict(self, X):
        return np.column_stack([X, np.ones(len(X))]) @ self.coefficients


def heteroscedastic(n: int, seed: int):
    """A positive linear target whose noise grows elevenfold across x: one width fits nowhere."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 2))
    return X, 10_000 + 3_000 * X[:, 0] + rng.normal(0, 1_000 * (0.1 + X[:, 1]), n)


def test_calibrated_intervals_cover_fresh_exchangeable_data_at_every_level_and_adapt_their_width():
    X, y = heteroscedastic(4_000, seed=0)
    intervals = fit_intervals(X, y, LeastSquares, seed=0, threads=1)
    X_new, y_new = heteroscedastic(20_000, seed=1)
    point = LeastSquares(X, y).predict(X_new)
    for level in (0.5, 0.8, 0.9):
        lower, upper = intervals.bounds(X_new, point, level)
        coverage = np.mean((lower <= y_new) & (y_new <= upper))
        assert abs(coverage - level) < 0.02, (level, coverage)
    lower, upper = intervals.bounds(X_new, point, 0.8)
    noisy = X_new[:, 1] > 0.8
    quiet = X_new[:, 1] < 0.2
    # Locally adaptive: about five times wider where the noise is about five times larger.
    assert np.median((upper - lower)[noisy]) > 3 * np.median((upper - lower)[quiet])
