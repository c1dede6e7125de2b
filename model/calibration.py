"""Fitting the prediction intervals (``model.intervals``) on the training blocks.

Every score is out-of-sample, as a served block's would be: the training blocks are cut
into ``CALIBRATION_FOLDS`` folds, and a block's score ``|y - ŷ| / spread(x)`` uses a point
regressor and a spread booster both fitted without its fold, on the same features the
served model computes for it (its leave-one-out neighbourhood statistics). The spread
booster that ships is fitted on every training block's cross-fitted error.
"""

from __future__ import annotations

from collections.abc import Callable

import lightgbm
import numpy as np
from sklearn.model_selection import KFold

from model.intervals import ConformalIntervals
from model.pyfunc import AveragedBoosters

CALIBRATION_FOLDS = 5
# The spread booster is small: it predicts one positive number per block, the size of
# the point model's error there (gamma objective: a log link, so always positive).
SPREAD_PARAMS = {
    "objective": "gamma",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
    "subsample": 0.7,
    "subsample_freq": 1,
    "colsample_bytree": 0.5,
    "verbose": -1,
}
SPREAD_ROUNDS = 200
# The gamma objective needs positive labels: an error below 1 USD counts as 1 USD.
MIN_ERROR = 1.0


def fit_intervals(
    X: np.ndarray,
    y: np.ndarray,
    fit_point: Callable[[np.ndarray, np.ndarray], AveragedBoosters],
    seed: int,
    threads: int | None = None,
    on_fold: Callable[[], object] | None = None,
) -> ConformalIntervals:
    """Calibrated intervals for a point model that ``fit_point(X, y)`` fits, as training does.

    ``X`` holds the training blocks' features (as ``HousingFeatures.fit_transform`` gives
    them), ``y`` their values; folds are seeded with ``seed``; ``threads`` is LightGBM's
    ``num_threads`` (None: its default). ``on_fold`` is called after each of the
    ``2 * CALIBRATION_FOLDS`` out-of-fold fits (point models, then spread boosters).
    """
    folds = list(KFold(CALIBRATION_FOLDS, shuffle=True, random_state=seed).split(X))
    errors = np.empty(len(y))
    for fit_rows, held_out in folds:
        errors[held_out] = np.abs(y[held_out] - fit_point(X[fit_rows], y[fit_rows]).predict(X[held_out]))
        if on_fold:
            on_fold()
    errors = np.maximum(errors, MIN_ERROR)
    scores = np.empty(len(y))
    for fit_rows, held_out in folds:
        spread = _fit_spread(X[fit_rows], errors[fit_rows], seed, threads)
        scores[held_out] = errors[held_out] / spread.predict(X[held_out])
        if on_fold:
            on_fold()
    return ConformalIntervals(_fit_spread(X, errors, seed, threads), np.sort(scores))


def _fit_spread(X: np.ndarray, errors: np.ndarray, seed: int, threads: int | None) -> AveragedBoosters:
    params = {**SPREAD_PARAMS, "seed": seed, **({"num_threads": threads} if threads else {})}
    return AveragedBoosters(
        [lightgbm.train(params, lightgbm.Dataset(X, errors), num_boost_round=SPREAD_ROUNDS)]
    )
