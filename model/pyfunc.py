"""The one artifact: fitted preprocessing and regressor behind ``mlflow.pyfunc``."""

from __future__ import annotations

import ctypes

import mlflow.pyfunc
import numpy as np
import pandas as pd
from lightgbm.basic import _C_API_DTYPE_FLOAT64, _C_API_PREDICT_NORMAL, _LIB, _c_str, _safe_call

from model.contract import validate_input
from model.data import TARGET
from model.features import HousingFeatures
from model.intervals import LOWER_COLUMN, UPPER_COLUMN, ConformalIntervals, requested_level

_OUTPUT_COLUMNS = pd.Index([TARGET])
_INTERVAL_COLUMNS = pd.Index([TARGET, LOWER_COLUMN, UPPER_COLUMN])


class AveragedBoosters:
    """The mean prediction of several fitted LightGBM boosters.

    A one-row call goes through LightGBM's single-row C API (see :class:`_OneRowScorer`);
    any other goes through ``Booster.predict``. Both give the same predictions, bit for bit
    (tests/code/test_pyfunc.py).

    Parameters
    ----------
    boosters : list of lightgbm.Booster
        Fitted boosters over the same features.
    """

    def __init__(self, boosters: list):
        self.boosters = boosters
        self._one_row_scorers = [_OneRowScorer(booster) for booster in boosters]

    def predict(self, X: np.ndarray) -> np.ndarray:
        # Both paths add the boosters' predictions in the same order: the same bits.
        if len(X) == 1:
            row = np.ascontiguousarray(X[0], dtype=np.float64)
            total = sum(scorer.predict(row) for scorer in self._one_row_scorers)
            return np.array([total / len(self.boosters)])
        return sum(booster.predict(X) for booster in self.boosters) / len(self.boosters)

    # The scorers hold C handles: they are rebuilt, not pickled.
    def __getstate__(self):
        return {"boosters": self.boosters}

    def __setstate__(self, state):
        self.__init__(state["boosters"])


class _OneRowScorer:
    """One booster's ``LGBM_BoosterPredictForMatSingleRowFast``, set up once.

    ``Booster.predict`` sets up a predictor and converts its input on every call: on a
    one-row request of the default model, skipping that saved 0.07 ms of the regressor's
    0.25 ms. This is LightGBM's public C API for the case, reached through the ``ctypes``
    library handle the ``lightgbm`` package itself uses (private names, pinned in the
    lock). LightGBM takes the booster's lock for each such call, so the scorer is safe to
    share between server threads.
    """

    def __init__(self, booster):
        self.booster = booster  # the C config points into it: keep it alive as long
        self.n_features = booster.num_feature()
        self.handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_C_API_PREDICT_NORMAL),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(-1),  # every iteration
                ctypes.c_int(_C_API_DTYPE_FLOAT64),
                ctypes.c_int32(self.n_features),
                # No num_threads: LightGBM would pass it to omp_set_num_threads, which holds
                # for all later OpenMP work of the calling thread.
                _c_str(""),
                ctypes.byref(self.handle),
            )
        )

    def predict(self, row: np.ndarray) -> float:
        """The prediction for ``row``, a C-contiguous float64 array of ``n_features`` values."""
        if row.shape != (self.n_features,):
            raise ValueError(f"expected {self.n_features} features, got {row.shape[0]}")
        result = ctypes.c_double()
        length = ctypes.c_int64()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFast(
                self.handle, ctypes.c_void_p(row.ctypes.data), ctypes.byref(length), ctypes.byref(result)
            )
        )
        return result.value

    def __del__(self):
        _safe_call(_LIB.LGBM_FastConfigFree(self.handle))


class CaliforniaHousingModel(mlflow.pyfunc.PythonModel):
    """Raw census-block columns in, ``median_house_value`` out, with an interval on request.

    Training and every server call the same ``features.transform`` on the same
    fitted state, so what the regressor sees at serving time is by construction
    what it saw at training time. The input contract (``model.contract``) is
    checked here, inside the artifact, so every server that loads it enforces it;
    validation hands its converted columns to the transform, so each column is
    converted from pandas once per call.

    Without the ``interval`` inference parameter (absent or null) the answer is the one
    column ``median_house_value``; with ``interval=L`` (``model.intervals``: 0.5 to 0.99)
    it also has ``median_house_value_lower`` and ``median_house_value_upper``, bounds
    that contain the true value with probability ``L``.

    Parameters
    ----------
    features : HousingFeatures
        Fitted feature pipeline.
    regressor : object
        Fitted regressor with ``predict(ndarray) -> ndarray``, e.g. :class:`AveragedBoosters`.
    intervals : ConformalIntervals
        Calibrated intervals around the regressor's predictions (``model.calibration``).
    """

    def __init__(self, features: HousingFeatures, regressor, intervals: ConformalIntervals):
        self.features = features
        self.regressor = regressor
        self.intervals = intervals

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        level = requested_level(params)
        columns = validate_input(model_input)
        if level is not None:
            return self._predict_with_interval(model_input, columns, level)
        predictions = (
            self.regressor.predict(self.features.transform(columns)) if len(model_input) else np.empty(0)
        )
        # From a 2-D array: a quarter of the cost of the dict constructor on one row.
        return pd.DataFrame(
            predictions.reshape(-1, 1), index=model_input.index, columns=_OUTPUT_COLUMNS, copy=False
        )

    def _predict_with_interval(self, model_input: pd.DataFrame, columns: dict, level: float) -> pd.DataFrame:
        values = np.empty((len(model_input), 3))
        if len(model_input):
            X = self.features.transform(columns)
            point = self.regressor.predict(X)
            lower, upper = self.intervals.bounds(X, point, level)
            values[:, 0], values[:, 1], values[:, 2] = point, lower, upper
        return pd.DataFrame(values, index=model_input.index, columns=_INTERVAL_COLUMNS, copy=False)
