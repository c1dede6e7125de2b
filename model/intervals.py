"""Prediction intervals with a coverage guarantee: locally adaptive split-conformal.

The interval at coverage level ``L`` is ``point ± q_L · spread(x)``:

* ``point`` is the point model's prediction (unchanged by intervals);
* ``spread(x)`` is a small LightGBM booster (gamma objective, so always positive)
  predicting the size of the point model's error at ``x``: narrow where prices are
  predictable, wide where they are not;
* ``q_L`` is the conformal quantile of the calibration scores ``|y - ŷ| / spread(x)``:
  the ``⌈(n + 1) L⌉``-th smallest of ``n`` scores. If a new block and the ``n``
  calibration blocks are exchangeable, the new block's true value lies in its interval
  with probability at least ``L`` (Lei et al. 2018, "Distribution-free predictive
  inference for regression": locally weighted split conformal). ``model.calibration``
  cross-fits the scores so every training block calibrates, which makes the guarantee
  approximate (cross-conformal); the test split measures it (docs/model-quality.md).

This module is the serving side: the ``interval`` parameter's contract and the fitted
:class:`ConformalIntervals`; ``model.calibration`` fits them. docs/model-quality.md has
the method's comparison with the alternatives, its coverage on the test split, and its
limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model.contract import CallerError
from model.data import TARGET

INTERVAL_PARAM = "interval"
# Levels a caller may ask for. Below 0.5 an "interval" misses most true values; above
# 0.99 the conformal quantile rests on the last few dozen of 16,512 scores.
MIN_LEVEL, MAX_LEVEL = 0.5, 0.99
LOWER_COLUMN = f"{TARGET}_lower"
UPPER_COLUMN = f"{TARGET}_upper"


class InvalidParameterError(CallerError):
    """An inference parameter outside its documented values (HTTP 400 from every server)."""


def requested_level(params: dict | None) -> float | None:
    """The coverage level ``params`` asks for, or None when intervals are off (absent or null).

    Raises :class:`InvalidParameterError` for anything but a number from ``MIN_LEVEL`` to
    ``MAX_LEVEL``. MLflow has already refused a value that is not a number (its own
    ``ParamSchema`` enforcement) by the time a server calls the model.
    """
    level = params.get(INTERVAL_PARAM) if params else None
    if level is None:
        return None
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not MIN_LEVEL <= level <= MAX_LEVEL:
        raise InvalidParameterError(
            f"invalid parameter '{INTERVAL_PARAM}': must be a coverage level from {MIN_LEVEL} to "
            f"{MAX_LEVEL} (e.g. 0.8), or null for no interval"
        )
    return float(level)


def conformal_quantile(sorted_scores: np.ndarray, level: float) -> float:
    """The ``⌈(n + 1) level⌉``-th smallest of ``n`` sorted scores (infinite past the last one)."""
    rank = math.ceil((len(sorted_scores) + 1) * level)
    return float(sorted_scores[rank - 1]) if rank <= len(sorted_scores) else math.inf


@dataclass
class ConformalIntervals:
    """Fitted interval model: ``point ± conformal_quantile(scores, L) · spread(X)``.

    Parameters
    ----------
    spread : object
        Fitted model with ``predict(ndarray) -> ndarray`` of positive values, e.g.
        :class:`model.pyfunc.AveragedBoosters` over one gamma booster.
    scores : ndarray
        Calibration scores ``|y - ŷ| / spread(x)``, sorted ascending.
    """

    spread: object
    scores: np.ndarray

    def bounds(self, X: np.ndarray, point: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds at ``level`` for the rows of ``X`` with predictions ``point``.

        Never inverted: ``lower <= point <= upper`` (the half-width is a non-negative
        score times a positive spread). A lower bound below 0 USD becomes 0 (or the
        point, if that is lower): no block has a negative value, so coverage is unchanged.
        """
        half_width = conformal_quantile(self.scores, level) * self.spread.predict(X)
        lower = np.minimum(point, np.maximum(point - half_width, 0.0))
        return lower, point + half_width
