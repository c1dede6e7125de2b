"""How both engines get and call the model: the one place that says what the pyfunc is called with.

The local engine loads the pyfunc once and calls :func:`predict` per chunk; the Spark
engine wraps the same artifact in :func:`spark_predictor` (``mlflow.pyfunc.spark_udf``).
Either way the artifact enforces its signature and the input contract itself.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.types import ParamSchema

from model import registry
from model.batch.job import BatchError, BatchJob
from model.data import TARGET


def resolve_model_uri(model_uri: str) -> str:
    """``models:/name@alias`` → ``models:/name/<version>``, so the alias cannot move mid-job."""
    try:
        return registry.resolve(model_uri).pinned_uri
    except MlflowException as error:
        raise BatchError(f"model_uri {model_uri}: {str(error).splitlines()[0]}") from None


def load(model_uri: str, job: BatchJob) -> mlflow.pyfunc.PyFuncModel:
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as error:
        raise BatchError(f"model_uri {model_uri}: {str(error).splitlines()[0]}") from None
    check_params(model.metadata.get_params_schema(), model_uri, job)
    return model


def check_params(schema: ParamSchema | None, model_uri: str, job: BatchJob) -> None:
    """Refuse a parameter the model does not declare: MLflow would ignore it with a warning,
    and the job would write the point alone where an interval was asked for."""
    declared = {spec.name for spec in schema.params} if schema is not None else set()
    for name in job.params() or {}:
        if name not in declared:
            raise BatchError(f"model_uri {model_uri}: the model takes no '{name}' parameter")


def predict(model: mlflow.pyfunc.PyFuncModel, frame: pd.DataFrame, job: BatchJob) -> dict[str, np.ndarray]:
    """The job's output columns for the rows of ``frame``: one float64 value per row each."""
    predictions = model.predict(frame, params=job.params())
    if not isinstance(predictions, pd.DataFrame):
        predictions = {TARGET: predictions}
    columns = {}
    for name in job.output_columns():
        if name not in predictions:
            raise BatchError(f"the model returned no '{name}' column")
        values = np.asarray(predictions[name], dtype=float)
        if values.shape != (len(frame),):
            raise BatchError(f"the model returned {values.shape} values of '{name}' for {len(frame)} rows")
        columns[name] = values
    return columns


def spark_predictor(spark, model_uri: str, job: BatchJob):
    """A Spark UDF scoring a struct of the input columns into a struct of the job's output
    columns (doubles, named as the model names them).

    The driver downloads the artifact once; ``spark_udf`` ships it to the executors.
    """
    try:
        signature = registry.model_metadata(model_uri).signature
    except (MlflowException, OSError) as error:
        raise BatchError(f"model_uri {model_uri}: {str(error).splitlines()[0]}") from None
    check_params(signature.params if signature is not None else None, model_uri, job)
    result_type = ", ".join(f"{name} double" for name in job.output_columns())
    return mlflow.pyfunc.spark_udf(
        spark, model_uri, result_type=result_type, env_manager=job.spark_env_manager, params=job.params()
    )
