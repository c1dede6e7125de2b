"""The Spark engine: ``mlflow.pyfunc.spark_udf`` over the file, written to a partial directory and renamed.

Spark (``local[*]`` unless a master is given or the job runs under ``spark-submit``) reads
the input, scores it with the UDF (``model.batch.predictor.spark_predictor``) and writes
its directory of part files to a hidden partial directory beside the output
(``model.batch.output``'s naming), renamed into place through Hadoop's FileSystem.

Failures are told apart by Spark's error conditions (``PySparkException.getCondition()``),
never by message text. On a cluster, a job whose application has had no executor for
``spark.batchPredict.noExecutorTimeout`` seconds (every worker lost: Spark itself would wait
for one forever) is cancelled and fails (:class:`_ExecutorWatch`).

When the model refuses a row inside a Python worker, the worker's exception reaches the
driver as text only (``PYTHON_EXCEPTION``), so the driver searches the input for the broken
rule with the contract's own ``find_violations`` and reports its fields; Spark knows no file
row numbers, so the message names the column and the rule.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import sys
import threading
import time
import uuid

import pandas as pd
from mlflow.exceptions import MlflowException

from model import contract
from model.batch import predictor
from model.batch.job import (
    BatchError,
    BatchJob,
    BatchResult,
    check_columns,
    error_summary,
    file_format,
    first_violation,
)
from model.batch.output import left_by_dead_process, partial_path
from model.contract import NOT_A_NUMBER, Violation
from model.data import FEATURE_COLUMNS, NUMERIC_COLUMNS

# Rows per pandas frame when the driver searches the input for the row the model refused.
SEARCH_ROWS = 10_000
# What a failure's Spark error condition (up to its first dot) means for the input.
CONDITIONS = {
    "MALFORMED_RECORD_IN_PARSING": "a value does not parse as its column's type (Spark FAILFAST)",
    "CAST_INVALID_INPUT": "a numeric column holds text that is not a number",
    "PATH_NOT_FOUND": "no such file",
}
# A Spark property (spark-defaults.conf, --conf): seconds a job waits while its application has
# no executor before failing. Long enough for a restarted worker or a replacement executor.
NO_EXECUTOR_TIMEOUT = "spark.batchPredict.noExecutorTimeout"
DEFAULT_NO_EXECUTOR_SECONDS = 120.0


def spark_session(master: str | None):
    """A SparkSession: ``master`` if given, else spark-submit or spark-defaults, else ``local[*]``."""
    runs_here = master.startswith("local") if master else "PYSPARK_GATEWAY_PORT" not in os.environ
    if runs_here:
        # Local workers run this interpreter (the venv), whatever `python` is on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("batch_predict")
    if master:
        builder = builder.master(master)
    return builder.getOrCreate()


def score_spark(job: BatchJob, model_uri: str, spark=None) -> BatchResult:
    """Score ``job.input`` with ``spark_udf`` and write Spark's part-file directory to ``job.output``.

    Paths are Spark paths (local, ``hdfs://``, ``s3a://`` ...): on a cluster, the input and
    output must be on storage every executor reaches. ``spark``: a session to use (and
    leave running) instead of starting one.
    """
    from pyspark.sql import functions as F

    result = BatchResult(model_uri=model_uri, output=job.output, rejects=None)
    own_session = spark is None
    spark = spark or spark_session(job.spark_master)
    started = time.perf_counter()  # the session's start-up is not the job's
    hadoop = _HadoopPaths(spark)
    partial = partial_path(job.output)
    try:
        with _ExecutorWatch(spark):
            hadoop.clean_after_dead_jobs(job.output)
            frame, columns = _read_input(spark, job.input, job.id_column)
            inputs = frame.select(*[column for column in FEATURE_COLUMNS if column in columns])
            load_started = time.perf_counter()
            predict = _spark_call(lambda: predictor.spark_predictor(spark, model_uri, job), job.input)
            result.model_load_seconds = time.perf_counter() - load_started
            selected = [F.col(job.id_column)] if job.id_column else []
            # The struct's fields become the output's columns; Spark still calls the UDF once per batch.
            predicted = predict(F.struct(*inputs.columns))
            scored = frame.select(*selected, *(predicted[name].alias(name) for name in job.output_columns()))
            result.rows_read = result.rows_scored = _write(spark, scored, partial, job, inputs)
        hadoop.replace(partial, job.output)
        result.spark_master = spark.sparkContext.master
    except BaseException:
        with contextlib.suppress(Exception):
            hadoop.delete(partial)
        raise
    finally:
        if own_session:
            spark.stop()
    result.seconds = time.perf_counter() - started - result.model_load_seconds
    return result


def _read_input(spark, path: str, id_column: str | None):
    """The input as a Spark frame with numbers as double, and the columns scoring reads."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if file_format(path) == "csv":
        names = _spark_call(lambda: spark.read.option("header", True).csv(path).columns, path)
        columns = check_columns(names, id_column, path)
        schema = T.StructType(
            [
                T.StructField(name, T.DoubleType() if name in NUMERIC_COLUMNS else T.StringType())
                for name in names
            ]
        )
        return spark.read.csv(path, header=True, schema=schema, mode="FAILFAST", enforceSchema=False), columns
    frame = _spark_call(lambda: spark.read.parquet(path), path)
    columns = check_columns(frame.columns, id_column, path)
    for name in NUMERIC_COLUMNS:
        if name in frame.columns:
            kind = frame.schema[name].dataType
            if not isinstance(kind, (T.NumericType, T.StringType, T.NullType)):
                stored = kind.simpleString()
                raise BatchError(
                    f"input {path}: column '{name}': {NOT_A_NUMBER} (the file stores it as {stored})"
                )
            frame = frame.withColumn(name, F.col(name).cast("double"))
    return frame, columns


def _write(spark, scored, partial: str, job: BatchJob, inputs) -> int:
    """Write ``scored`` to the ``partial`` directory in the output's format; the rows written."""
    writer = scored.write.mode("errorifexists")
    # Spark reads a path as a glob (writes take it literally): the re-read escapes it.
    written_path = re.sub(r"([\\\[\]{}*?])", r"\\\1", partial)
    if file_format(job.output) == "parquet":
        _spark_call(lambda: writer.parquet(partial), job.input, inputs)
        written = spark.read.parquet(written_path)
    else:
        _spark_call(lambda: writer.csv(partial, header=True), job.input, inputs)
        written = spark.read.csv(written_path, header=True)
    return _spark_call(written.count, job.input)


def _spark_call(action, source: str, inputs=None):
    """Run a Spark action; turn Spark's failure into one line that quotes no input value.

    ``inputs``: the model's input columns, searched for the broken rule when the model
    failed in a Python worker.
    """
    try:
        return action()
    except BatchError:
        raise
    except Exception as error:  # py4j / pyspark errors have no common base worth naming
        conditions = _conditions(error)
        if inputs is not None and "PYTHON_EXCEPTION" in conditions:
            violation = first_violation_in(inputs)
            if violation is not None:
                raise BatchError(
                    f"input {source}: column '{violation.column}': {violation.rule} "
                    "(Spark does not know file row numbers; -P engine=local names the row)"
                ) from None
        for condition in conditions:
            if condition.split(".")[0] in CONDITIONS:
                raise BatchError(f"input {source}: {CONDITIONS[condition.split('.')[0]]}") from None
        if isinstance(error, MlflowException):
            raise BatchError(f"model: {str(error).splitlines()[0]}") from None
        condition = f" [{conditions[0]}]" if conditions else ""
        raise BatchError(f"spark: {type(error).__name__}{condition}: {error_summary(error)}") from None


def _conditions(error: Exception) -> list[str]:
    """Spark's error conditions for ``error``: its own, then those of the Java exceptions behind it."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    found = [error.getCondition()] if isinstance(error, PySparkException) else []
    cause = getattr(error, "java_exception", None)  # a Py4JJavaError pyspark did not convert
    while cause is not None:
        with contextlib.suppress(Py4JError):  # a Java exception that is not a SparkThrowable
            found.append(cause.getCondition())
        cause = cause.getCause()
    return [condition for condition in found if condition]


def first_violation_in(inputs) -> Violation | None:
    """The first rule of the input contract that ``inputs`` (a Spark frame of the model's input
    columns) breaks, on its lowest row in partition order; searched on the driver, where the
    contract's code is (executors have only the artifact), a frame of rows at a time."""
    rows = inputs.toLocalIterator()
    while batch := list(itertools.islice(rows, SEARCH_ROWS)):
        found = contract.find_violations(pd.DataFrame.from_records(batch, columns=inputs.columns))
        if found:
            return first_violation(found)[0]
    return None


class _ExecutorWatch:
    """While entered, cancels the thread's Spark jobs once the application has had no executor
    for ``spark.batchPredict.noExecutorTimeout`` seconds (:data:`DEFAULT_NO_EXECUTOR_SECONDS`).

    A standalone application whose every worker is lost waits for new executors forever; so
    does one submitted to a cluster with no free cores. Executors are counted with the public
    ``StatusTracker.getExecutorInfos`` (the driver is one of them); ``local`` masters, whose
    driver is the executor, are not watched.
    """

    def __init__(self, spark, poll_seconds: float = 1.0):
        self._context = spark.sparkContext
        self._poll_seconds = poll_seconds
        self._tag = f"batch_predict-{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="executor-watch", daemon=True)
        self.timeout = no_executor_timeout(self._context.getConf().get(NO_EXECUTOR_TIMEOUT))
        self.expired = False

    def __enter__(self) -> _ExecutorWatch:
        if not self._context.master.startswith("local"):
            self._context.addJobTag(self._tag)  # the jobs this thread starts from now on
            self._thread.start()
        return self

    def __exit__(self, exc_type, *_) -> None:
        if self._thread.ident is not None:  # started (it may have ended: the wait expired)
            self._stop.set()
            self._thread.join()
            self._context.removeJobTag(self._tag)
        if exc_type is not None and self.expired:  # the failure is the cancellation's
            raise BatchError(
                f"spark {self._context.master}: no executor for {self.timeout:g} s (every worker lost?), "
                f"job cancelled; {NO_EXECUTOR_TIMEOUT} sets the wait"
            ) from None

    def _watch(self) -> None:
        alone_since = None
        while not self._stop.wait(self._poll_seconds):
            with contextlib.suppress(Exception):  # the session is stopping: nothing left to watch
                executors = len(self._context.statusTracker().getExecutorInfos()) - 1
                now = time.monotonic()
                alone_since = (alone_since or now) if executors < 1 else None
                if alone_since is not None and now - alone_since >= self.timeout:
                    self.expired = True
                    self._context.cancelJobsWithTag(self._tag)
                    return


def no_executor_timeout(value: str | None) -> float:
    """``spark.batchPredict.noExecutorTimeout``'s seconds: a positive number, ``s`` suffix allowed."""
    if value is None:
        return DEFAULT_NO_EXECUTOR_SECONDS
    with contextlib.suppress(ValueError):
        seconds = float(value.strip().removesuffix("s"))
        if seconds > 0:
            return seconds
    raise BatchError(f"{NO_EXECUTOR_TIMEOUT} must be a positive number of seconds, not {value!r}")


def hadoop_path(spark, path: str):
    """``path`` as a Hadoop ``Path``, and the ``FileSystem`` Spark reads and writes it through.

    PySpark has no public API for Hadoop's FileSystem: this is the engine's one private
    access, through the session's py4j gateway (``spark._jvm``, ``spark._jsc``), with pyspark
    pinned in requirements.lock and its results checked against the os's on local paths
    (tests/integration/test_batch_predict.py).
    """
    hadoop = spark._jvm.org.apache.hadoop.fs.Path(path)
    return hadoop, hadoop.getFileSystem(spark._jsc.hadoopConfiguration())


class _HadoopPaths:
    """Renames and deletes through Hadoop's FileSystem (:func:`hadoop_path`), so Spark's
    paths mean the same here."""

    def __init__(self, spark):
        self._spark = spark

    def _path(self, path: str):
        return hadoop_path(self._spark, path)

    def delete(self, path: str) -> None:
        hadoop_path, fs = self._path(path)
        fs.delete(hadoop_path, True)

    def replace(self, partial: str, final: str) -> None:
        source, fs = self._path(partial)
        target, _ = self._path(final)
        aside = None
        if fs.exists(target):
            aside, _ = self._path(partial[: -len(".partial")] + ".old")
            if not fs.rename(target, aside):
                raise BatchError(f"output {final}: cannot move the previous result aside")
        if not fs.rename(source, target):
            if aside is not None:
                fs.rename(aside, target)
            raise BatchError(f"output {final}: cannot rename the finished result into place")
        if aside is not None:
            fs.delete(aside, True)

    def clean_after_dead_jobs(self, final: str) -> None:
        """Undo what jobs killed on this host left beside ``final``: their partials are deleted
        (the local engine's rule); a previous result one had moved aside (``replace``) goes
        back into place if nothing replaced it, else it is deleted."""
        # Listed and matched by name, not globbed: a glob would read [ ] { } * ? in the
        # output's own path as patterns.
        own_partial, fs = self._path(partial_path(final))
        directory = own_partial.getParent()
        if not fs.exists(directory):
            return
        target, _ = self._path(final)
        for status in fs.listStatus(directory):
            name = status.getPath().getName()
            if left_by_dead_process(name, final):
                fs.delete(status.getPath(), True)
            elif left_by_dead_process(name, final, ".old"):
                if fs.exists(target):
                    fs.delete(status.getPath(), True)
                else:
                    fs.rename(status.getPath(), target)
