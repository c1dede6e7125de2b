"""How both engines get and call the model: the one place that says what the pyfunc is called with.

The local engine loads the pyfunc once and calls :func:`predict` per chunk; the Spark
engine wraps the same artifact in :func:`spark_predictor` (``mlflow.pyfunc.spark_udf``).
Either way the artifact enforces its signature and the input contract itself.
"""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from model.batch.job import BatchError
from model.data import TARGET

_ALIAS_URI = re.compile(r"^models:/([^/@]+)@([^/]+)/?$")


def resolve_model_uri(model_uri: str) -> str:
    """``models:/name@alias`` → ``models:/name/<version>``, so the alias cannot move mid-job."""
    match = _ALIAS_URI.match(model_uri)
    if not match:
        return model_uri
    name, alias = match.groups()
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as error:
        raise BatchError(f"model_uri {model_uri}: {str(error).splitlines()[0]}") from None
    return f"models:/{name}/{version.version}"


def load(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as error:
        raise BatchError(f"model_uri {model_uri}: {str(error).splitlines()[0]}") from None


def predict(model: mlflow.pyfunc.PyFuncModel, frame: pd.DataFrame) -> np.ndarray:
    """One prediction per row of ``frame``, as float64."""
    predictions = model.predict(frame)
    values = np.asarray(
        predictions[TARGET] if isinstance(predictions, pd.DataFrame) else predictions, dtype=float
    )
    if values.shape != (len(frame),):
        raise BatchError(f"the model returned {values.shape} predictions for {len(frame)} rows")
    return values


def spark_predictor(spark, model_uri: str, env_manager: str):
    """A Spark UDF scoring a struct of the input columns into one double per row.

    The driver downloads the artifact once; ``spark_udf`` ships it to the executors.
    """
    return mlflow.pyfunc.spark_udf(spark, model_uri, result_type="double", env_manager=env_manager)
