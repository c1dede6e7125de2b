"""The model registry contract between training and serving."""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
import mlflow

MODEL_NAME = "CaliforniaHousingRegressor"
CHAMPION = "champion"


class SmokeTestError(RuntimeError):
    """A freshly logged model could not produce sane predictions."""


def smoke_test(model_uri: str, example: pd.DataFrame) -> None:
    """Load ``model_uri`` as a server would and check it predicts one finite value per row."""
    predictions = mlflow.pyfunc.load_model(model_uri).predict(example)
    values = np.asarray(predictions, dtype=float).reshape(-1)
    if len(values) != len(example) or not np.isfinite(values).all():
        raise SmokeTestError(
            f"{model_uri}: expected {len(example)} finite predictions, got {values.tolist()}"
        )


def register(model_uri: str) -> ModelVersion:
    return mlflow.register_model(model_uri, MODEL_NAME)


def champion_version(client: MlflowClient | None = None) -> ModelVersion | None:
    client = client or MlflowClient()
    try:
        return client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def crown(version: ModelVersion, client: MlflowClient | None = None) -> None:
    """Point the ``champion`` alias, the one servers resolve, at ``version``."""
    (client or MlflowClient()).set_registered_model_alias(MODEL_NAME, CHAMPION, version.version)
