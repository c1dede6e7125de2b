"""The one artifact: fitted preprocessing and regressor behind ``mlflow.pyfunc``."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd

from model.contract import validate_input
from model.data import TARGET
from model.features import HousingFeatures


_OUTPUT_COLUMNS = pd.Index([TARGET])


class AveragedBoosters:
    """The mean prediction of several fitted boosters (LightGBM ``Booster`` objects).

    Parameters
    ----------
    boosters : list
        Fitted models with ``predict(ndarray) -> ndarray``.
    """

    def __init__(self, boosters: list):
        self.boosters = boosters

    def predict(self, X: np.ndarray) -> np.ndarray:
        total = self.boosters[0].predict(X)
        for booster in self.boosters[1:]:
            total += booster.predict(X)
        return total / len(self.boosters)


class CaliforniaHousingModel(mlflow.pyfunc.PythonModel):
    """Raw census-block columns in, ``median_house_value`` out.

    Training and every server call the same ``features.transform`` on the same
    fitted state, so what the regressor sees at serving time is by construction
    what it saw at training time. The input contract (``model.contract``) is
    checked here, inside the artifact, so every server that loads it enforces it;
    validation hands its converted columns to the transform, so each column is
    converted from pandas once per call.

    Parameters
    ----------
    features : HousingFeatures
        Fitted feature pipeline.
    regressor : object
        Fitted regressor with ``predict(ndarray) -> ndarray``, e.g. :class:`AveragedBoosters`.
    """

    def __init__(self, features: HousingFeatures, regressor):
        self.features = features
        self.regressor = regressor

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        columns = validate_input(model_input)
        predictions = self.regressor.predict(self.features.transform(columns)) if len(model_input) else np.empty(0)
        # From a 2-D array: a quarter of the cost of the dict constructor on one row.
        return pd.DataFrame(predictions.reshape(-1, 1), index=model_input.index, columns=_OUTPUT_COLUMNS, copy=False)
