"""What server tests need besides the processes themselves (those are ``testbed.processes``).

* ``temporary_database(prefix)``: a fresh PostgreSQL database on 127.0.0.1:5432 (SQLAlchemy URI), dropped after.
* ``write_tiny_pyfunc(path)``: saves a tiny MLflow pyfunc model used to test model servers.
* ``k8s_object(kind, name)``: an object of ``k8s/`` as its manifest declares it, for tests that run
  what the cluster would run (commands, args, env).
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import yaml
from kserve import InferenceRESTClient, InferInput, InferRequest, InferResponse, RESTConfig

from model.data import CATEGORICAL_COLUMN, FEATURE_COLUMNS, PROJECT_ROOT

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"


@contextlib.contextmanager
def temporary_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database named ``<prefix>_<random>``; its URI; dropped on exit."""
    import uuid

    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def k8s_object(kind: str, name: str | None = None) -> dict:
    """The first object of ``kind`` (named ``name``, when given) in the YAML files under k8s/."""
    for path in sorted((PROJECT_ROOT / "k8s").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            # Kustomize patch files hold a list of operations, not an object.
            if (
                isinstance(document, dict)
                and document.get("kind") == kind
                and name
                in (
                    None,
                    document["metadata"]["name"],
                )
            ):
                return document
    raise AssertionError(f"no {kind} {name or ''} in k8s/")


# ----------------------------------------------------------------------------------------------
# A tiny pyfunc for model-server tests (models-from-code: no pickled classes, loads anywhere).
# ----------------------------------------------------------------------------------------------

TINY_MODEL_CODE = textwrap.dedent(
    '''
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


    class Tiny(mlflow.pyfunc.PythonModel):
        """y = a * 2 + len(s) (+ b when given). Rejects NaN a (400), fails on s == "boom" (500)."""

        def predict(self, context, model_input, params=None):
            if model_input["a"].isna().any():
                raise MlflowException("a must not be missing", INVALID_PARAMETER_VALUE)
            if (model_input["s"] == "boom").any():
                raise RuntimeError("kaboom: internal secret detail")
            y = model_input["a"] * 2 + model_input["s"].str.len()
            if "b" in model_input.columns:
                y = y + model_input["b"].fillna(0.0)
            return pd.DataFrame({"y": y.astype("float64")})


    mlflow.models.set_model(Tiny())
    '''
)


def write_tiny_pyfunc(path: Path) -> Path:
    """Save the tiny model at ``path``: inputs a: double, s: string, b: double (optional); output y: double."""
    import warnings

    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    path = Path(path)
    code = path.parent / f"{path.name}_code.py"
    code.write_text(TINY_MODEL_CODE)
    signature = ModelSignature(
        inputs=Schema(
            [ColSpec("double", "a"), ColSpec("string", "s"), ColSpec("double", "b", required=False)]
        ),
        outputs=Schema([ColSpec("double", "y")]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no type hints" / "no input example" nags
        mlflow.pyfunc.save_model(
            str(path), python_model=str(code), signature=signature, pip_requirements=["mlflow"]
        )
    return path


def kserve_sdk_infer(
    url: str, model_name: str, rows: pd.DataFrame, parameters: dict | None = None
) -> InferResponse:
    """The kserve SDK's REST client's V2 answer for the housing ``rows``, one tensor per column."""
    inputs = []
    for column in FEATURE_COLUMNS:
        datatype = "BYTES" if column == CATEGORICAL_COLUMN else "FP64"
        tensor = InferInput(column, [len(rows)], datatype)
        tensor.set_data_from_numpy(rows[column].to_numpy(dtype=object if datatype == "BYTES" else float))
        inputs.append(tensor)

    async def call():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60)) as client:
            request = InferRequest(model_name, inputs, parameters=parameters)
            return await client.infer(url, request, model_name=model_name)

    return asyncio.run(call())
