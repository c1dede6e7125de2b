"""The model registry contract between training, promotion and serving.

Servers resolve ``models:/CaliforniaHousingRegressor@champion``. A freshly trained
version gets the alias ``challenger`` (the very first version of the registered model
becomes ``champion`` directly); only ``model.promotion`` moves ``champion`` afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

MODEL_NAME = "CaliforniaHousingRegressor"
CHAMPION = "champion"
CHALLENGER = "challenger"

_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


def model_metadata(model_uri: str) -> mlflow.models.Model:
    """The ``MLmodel`` of any model URI: registry (alias or version), run, or a local copy.

    Not ``mlflow.models.get_model_info``: in MLflow 3 it also fetches the logged model the
    ``MLmodel`` names from the current tracking store, so an artifact copied out of its store
    (a downloaded model directory, the benchmarks' artifacts) fails with "Logged model ... not
    found" although every server loads it.
    """
    return mlflow.models.Model.load(model_uri)


class SmokeTestError(RuntimeError):
    """A freshly logged model could not produce sane predictions."""


def smoke_test(model_uri: str, example: pd.DataFrame) -> None:
    """Load ``model_uri`` as a server would and check it predicts one finite value per row."""
    problem = prediction_problem(mlflow.pyfunc.load_model(model_uri).predict(example), len(example))
    if problem:
        raise SmokeTestError(f"{model_uri}: {problem}")


def prediction_problem(predictions, n_rows: int) -> str | None:
    """Why ``predictions`` are not one finite value per row, or None when they are."""
    values = np.asarray(predictions, dtype=float).reshape(-1)
    if len(values) != n_rows:
        return f"expected {n_rows} predictions, got {len(values)}"
    bad = int((~np.isfinite(values)).sum())
    if bad:
        return f"{bad} of {n_rows} predictions are not finite ({values.tolist()})"
    return None


def version_uri(version: ModelVersion | str) -> str:
    number = version.version if isinstance(version, ModelVersion) else version
    return f"models:/{MODEL_NAME}/{number}"


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI and, when it names a registry version (directly or by alias), which one."""

    uri: str
    name: str | None = None
    version: str | None = None

    @property
    def pinned_uri(self) -> str:
        """``models:/<name>/<version>`` for registry URIs, so an alias moving mid-run changes nothing."""
        return f"models:/{self.name}/{self.version}" if self.version else self.uri


def resolve(model_uri: str, client: MlflowClient | None = None) -> ResolvedModel:
    """``models:/<name>@<alias>`` resolved to the version the alias points at now; a
    ``models:/<name>/<version>`` URI as it is; any other URI without a registry."""
    match = _MODELS_URI.match(model_uri)
    if not match:
        return ResolvedModel(model_uri)
    if match["version"]:
        return ResolvedModel(model_uri, match["name"], match["version"])
    version = (client or MlflowClient()).get_model_version_by_alias(match["name"], match["alias"])
    return ResolvedModel(model_uri, match["name"], str(version.version))


def register(model_uri: str) -> ModelVersion:
    return mlflow.register_model(model_uri, MODEL_NAME)


def register_candidate(
    model_uri: str, client: MlflowClient | None = None, description: str = ""
) -> ModelVersion:
    """Register ``model_uri`` (with ``description``, Markdown) and alias it: ``champion`` if it
    is version 1, else ``challenger``.

    Returns the version as the registry reads it afterwards (``.aliases`` filled in).
    """
    client = client or MlflowClient()
    version = register(model_uri)
    if description:
        client.update_model_version(MODEL_NAME, version.version, description=description)
    alias = CHAMPION if str(version.version) == "1" else CHALLENGER
    client.set_registered_model_alias(MODEL_NAME, alias, version.version)
    client.set_model_version_tag(MODEL_NAME, version.version, "registered_as", alias)
    return client.get_model_version(MODEL_NAME, version.version)


def version_by_alias(alias: str, client: MlflowClient | None = None) -> ModelVersion | None:
    client = client or MlflowClient()
    try:
        return client.get_model_version_by_alias(MODEL_NAME, alias)
    except MlflowException as error:
        if error.error_code in _MISSING:
            return None
        raise


def champion_version(client: MlflowClient | None = None) -> ModelVersion | None:
    return version_by_alias(CHAMPION, client)


def challenger_version(client: MlflowClient | None = None) -> ModelVersion | None:
    return version_by_alias(CHALLENGER, client)


def get_version(number: str, client: MlflowClient | None = None) -> ModelVersion | None:
    client = client or MlflowClient()
    try:
        return client.get_model_version(MODEL_NAME, str(number))
    except MlflowException as error:
        if error.error_code in _MISSING:
            return None
        raise


def crown(version: ModelVersion | str, client: MlflowClient | None = None) -> None:
    """Point the ``champion`` alias, the one servers resolve, at ``version``."""
    number = version.version if isinstance(version, ModelVersion) else version
    (client or MlflowClient()).set_registered_model_alias(MODEL_NAME, CHAMPION, number)


def remove_alias(alias: str, client: MlflowClient | None = None) -> None:
    (client or MlflowClient()).delete_registered_model_alias(MODEL_NAME, alias)


def set_version_tags(version: str, tags: Mapping[str, object], client: MlflowClient | None = None) -> None:
    client = client or MlflowClient()
    for key, value in tags.items():
        if value is not None:
            client.set_model_version_tag(MODEL_NAME, str(version), key, str(value))


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
