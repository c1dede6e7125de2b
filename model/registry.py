"""The model registry contract between training, promotion and serving.

Servers resolve ``models:/CaliforniaHousingRegressor@champion``. A freshly trained
version gets the alias ``challenger`` (the very first version of the registered model
becomes ``champion`` directly); only ``model.promotion`` moves ``champion`` afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator, Mapping
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
# A registered model used as a mutex: creating a registered model is atomic in every
# MLflow store (unique name), and MLflow has no compare-and-set on aliases.
LOCK_MODEL_NAME = f"{MODEL_NAME}.alias-lock"

_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class SmokeTestError(RuntimeError):
    """A freshly logged model could not produce sane predictions."""


class LockTimeout(RuntimeError):
    """Another promotion or rollback held the alias lock for too long."""


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


@contextlib.contextmanager
def alias_lock(
    client: MlflowClient | None = None, wait_seconds: float = 60.0, poll_seconds: float = 0.2
) -> Iterator[None]:
    """Hold the registry-wide lock under which ``champion`` is re-read and moved.

    Creating a registered model succeeds for exactly one caller (the store's unique
    name constraint), so the lock works on any store and through a tracking server.
    A holder that dies leaves the lock model behind; after ``wait_seconds`` the
    caller gets :class:`LockTimeout` naming the holder (delete ``LOCK_MODEL_NAME`` to
    clear it).
    """
    client = client or MlflowClient()
    holder = f"{socket.gethostname()}:{os.getpid()} at {utc_now()}"
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            client.create_registered_model(LOCK_MODEL_NAME, description=f"held by {holder}")
            break
        except MlflowException as error:
            # ALREADY_EXISTS: held; DOES_NOT_EXIST: released between the insert and the
            # store's own read-back of the conflicting row. Both mean: try again.
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        if time.monotonic() >= deadline:
            try:
                held_by = client.get_registered_model(LOCK_MODEL_NAME).description
            except MlflowException:
                held_by = "unknown"
            raise LockTimeout(
                f"registered model {LOCK_MODEL_NAME} still exists after {wait_seconds:.0f}s ({held_by})"
            )
        time.sleep(poll_seconds)
    try:
        yield
    finally:
        client.delete_registered_model(LOCK_MODEL_NAME)
