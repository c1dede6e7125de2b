"""The one artifact: fitted preprocessing and regressor behind ``mlflow.pyfunc``."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from model.compiled_trees import CompiledTrees, compile_boosters
from model.contract import validate_input
from model.data import TARGET
from model.features import HousingFeatures
from model.intervals import LOWER_COLUMN, UPPER_COLUMN, ConformalIntervals, requested_level

_OUTPUT_COLUMNS = pd.Index([TARGET])
_INTERVAL_COLUMNS = pd.Index([TARGET, LOWER_COLUMN, UPPER_COLUMN])


class AveragedBoosters:
    """The mean prediction of several fitted LightGBM boosters.

    Until :meth:`use_compiled` hands it their compiled trees, it predicts with LightGBM's
    ``Booster.predict`` (what training does); from then on, at every batch size, with
    ONNX Runtime (:mod:`model.compiled_trees`), which is faster at every size and gives
    the same predictions, bit for bit. A logged model carries the compiled trees and
    switches when it is loaded (:meth:`CaliforniaHousingModel.load_context`).

    It pickles its boosters as LightGBM's model text and rebuilds the ``Booster`` objects
    only when something asks for :attr:`boosters`: a server running the compiled trees
    never parses them, nor imports LightGBM, so the engine's load replaces that cost
    instead of adding to it.

    Parameters
    ----------
    boosters : list of lightgbm.Booster
        Fitted boosters over the same features.
    """

    def __init__(self, boosters: list):
        self._boosters: list | None = list(boosters)
        self._model_texts: list[str] | None = None
        self.n_boosters = len(self._boosters)
        self.compiled: CompiledTrees | None = None

    @property
    def boosters(self) -> list:
        """The ``lightgbm.Booster`` objects (rebuilt from their text on first use after unpickling)."""
        if self._boosters is None:
            import lightgbm

            self._boosters = [lightgbm.Booster(model_str=text) for text in self._model_texts]
        return self._boosters

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.compiled is not None:
            predictions = self.compiled.predict(X)
        else:
            predictions = [booster.predict(X) for booster in self.boosters]
        # Both paths add the boosters' predictions in the same order: the same bits.
        return sum(predictions) / self.n_boosters

    def compile(self) -> bytes:
        """The boosters as an ONNX model (:func:`model.compiled_trees.compile_boosters`)."""
        return compile_boosters(self.boosters)

    def use_compiled(self, onnx_model: bytes) -> None:
        """Predict with ``onnx_model``, what :meth:`compile` gave for these boosters."""
        self.compiled = CompiledTrees(onnx_model)

    # The ONNX Runtime session is not pickled: a logged model loads it from its artifact.
    def __getstate__(self):
        if self._boosters is None:
            return {"model_texts": self._model_texts}
        return {"model_texts": [booster.model_to_string() for booster in self._boosters]}

    def __setstate__(self, state):
        self._boosters, self._model_texts = None, state["model_texts"]
        self.n_boosters = len(self._model_texts)
        self.compiled = None


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
    regressor : AveragedBoosters
        Fitted point regressor.
    intervals : ConformalIntervals or None
        Calibrated intervals around the regressor's predictions (``model.calibration``);
        its spread is an :class:`AveragedBoosters` too. None for a point model, as every
        model was before intervals (its signature has no ``interval`` parameter).
    """

    def __init__(
        self, features: HousingFeatures, regressor: AveragedBoosters, intervals: ConformalIntervals | None
    ):
        self.features = features
        self.regressor = regressor
        self.intervals = intervals

    def tree_ensembles(self) -> dict[str, AveragedBoosters]:
        """The model's boosters, by the name of the artifact that carries their compiled trees
        in a logged model (``model.packaging``)."""
        ensembles = {"regressor_trees": self.regressor}
        if self.intervals is not None:
            ensembles["spread_trees"] = self.intervals.spread
        return ensembles

    def load_context(self, context) -> None:
        """Every server calls this once, on load: the trees compiled at training time take over.
        An artifact logged without them (before they existed) keeps predicting with LightGBM."""
        for name, ensemble in self.tree_ensembles().items():
            if name in context.artifacts:
                ensemble.use_compiled(Path(context.artifacts[name]).read_bytes())

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        level = requested_level(params)
        columns = validate_input(model_input)
        if level is not None:
            return self._predict_with_interval(model_input, columns, level)
        predictions = (
            self.regressor.predict(self.features.transform(columns)) if len(model_input) else np.empty(0)
        )
        # From a 2-D array: on one row, the dict constructor costs several times as much.
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
