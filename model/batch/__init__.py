"""Batch scoring: a CSV or Parquet file in, one prediction per row out, written atomically.

Two engines score the same file with the same artifact (docs/workflows/inference-batch.md):

* ``local`` (``model.batch.local``) streams the input in chunks of ``chunk_size`` rows
  (``model.batch.source``), calls the loaded pyfunc once per chunk and streams the
  predictions into a partial file renamed into place at the end. Memory is bounded by the
  chunk, not the file.
* ``spark`` (``model.batch.spark``) scores the file with ``mlflow.pyfunc.spark_udf`` and
  writes Spark's directory of part files to a partial directory, renamed into place.

Either way the output path holds a complete result or nothing (``model.batch.output``).
The job's specification is ``model.batch.job``; how both engines call the model,
``model.batch.predictor``. :func:`run` is the job as one tracked MLflow run, which also
ends the runs of earlier jobs that were killed (``model.tracking``).
"""

from __future__ import annotations

import mlflow

from model import tracking
from model.batch.job import BatchError, BatchJob, BatchResult
from model.batch.local import score_local
from model.batch.predictor import resolve_model_uri
from model.batch.spark import score_spark


def run(job: BatchJob, progress: bool | None = None, spark=None) -> BatchResult:
    """Score ``job`` inside an MLflow run (the one `mlflow run` started, else a new one).

    Logs the parameters (the model URI resolved to a registered version), and the metrics
    ``rows_read``, ``rows_scored``, ``rows_rejected``, ``seconds``, ``rows_per_second``
    and ``model_load_seconds``. A failed job ends the run FAILED with its message in the
    ``error`` tag and raises :class:`BatchError`. The run is claimed for this process first,
    and runs of the same experiment left ``RUNNING`` by killed jobs of this host are marked
    ``KILLED``. ``spark``: a session for ``engine=spark`` to use (and leave running) instead
    of starting one.
    """
    job.check()
    with mlflow.start_run() as active:
        tracking.claim()
        tracking.end_runs_of_dead_owners(active.info.experiment_id)
        try:
            model_uri = resolve_model_uri(job.model_uri)
            tracking.log_new_params(
                {
                    "input": job.input,
                    "output": job.output,
                    "model_uri": job.model_uri,
                    "model_version_uri": model_uri,
                    "engine": job.engine,
                    "chunk_size": job.chunk_size,
                    "on_error": job.on_error,
                    "id_column": job.id_column or "",
                    "rejects_path": job.rejects_path() or "",
                    "interval": "" if job.interval is None else job.interval,
                }
            )
            if job.engine == "local":
                result = score_local(job, model_uri, progress)
            else:
                result = score_spark(job, model_uri, spark)
                tracking.log_new_params(
                    {"spark_master": result.spark_master, "spark_env_manager": job.spark_env_manager}
                )
        except BatchError as error:
            mlflow.set_tag(tracking.ERROR_TAG, str(error))
            raise
        mlflow.log_metrics(
            {
                "rows_read": result.rows_read,
                "rows_scored": result.rows_scored,
                "rows_rejected": result.rows_rejected,
                "seconds": result.seconds,
                "rows_per_second": result.rows_per_second,
                "model_load_seconds": result.model_load_seconds,
            }
        )
    return result


__all__ = ["BatchError", "BatchJob", "BatchResult", "run"]
