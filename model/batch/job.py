"""The job's specification: what it reads and writes, how it handles bad rows, and what it reports.

Row numbers, in messages and in the rejects file, count data rows from 1: row 1 is the
first row after a CSV's header (line 2 of the file), or the first row of a Parquet file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.contract import NULLABLE_COLUMNS, Violation
from model.data import FEATURE_COLUMNS, TARGET
from model.intervals import (
    INTERVAL_PARAM,
    LOWER_COLUMN,
    MAX_LEVEL,
    MIN_LEVEL,
    UPPER_COLUMN,
    InvalidParameterError,
    requested_level,
)
from model.registry import CHAMPION, MODEL_NAME

DEFAULT_MODEL_URI = f"models:/{MODEL_NAME}@{CHAMPION}"
# Rows per `predict` call. The feature pipeline's temporaries grow with the chunk's rows (the
# 50 nearest blocks' indices, distances, targets and running sums), so the chunk bounds the
# process's memory (make bench's peak RSS rows); larger chunks were no faster
# (docs/workflows/inference-batch.md).
DEFAULT_CHUNK_SIZE = 50_000
ENGINES = ("local", "spark")
ON_ERROR = ("fail", "reject")
SPARK_ENV_MANAGERS = ("local", "virtualenv", "uv", "conda")
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
REQUIRED_COLUMNS = tuple(column for column in FEATURE_COLUMNS if column not in NULLABLE_COLUMNS)
REJECT_COLUMNS = ("row", "column", "rule")
INTERVAL_RULE = (
    f"interval must be a coverage level from {MIN_LEVEL} to {MAX_LEVEL} (e.g. 0.8), or '' for none"
)


class BatchError(Exception):
    """The job cannot produce its output; ``str()`` is one line that never quotes input values."""


@dataclass(frozen=True)
class BatchJob:
    """One scoring job: the ``batch_predict`` entry point's parameters (``projects/batch_predict.py``).

    Parameters
    ----------
    input : str
        A .csv (with a header) or .parquet file.
    output : str
        A .parquet or .csv file; replaced only by a complete result.
    model_uri : str
        Any MLflow model URI.
    id_column : str or None
        An input column copied to the output; none = no id column.
    chunk_size : int
        Rows per predict call (local engine).
    on_error : str
        ``fail``: stop at the first bad row; ``reject``: write bad rows to the rejects file.
    rejects : str or None
        The rejects file; none = ``<output stem>.rejects<output suffix>``.
    engine : str
        ``local`` or ``spark``.
    spark_master : str or None
        The Spark master; none = spark-submit's master, else ``local[*]``.
    spark_env_manager : str
        How Spark workers get the model's Python environment (``local``, ``virtualenv``, ``uv``, ``conda``).
    interval : float or None
        A coverage level from 0.5 to 0.99: adds the interval's bounds; none = no interval.
    """

    input: str
    output: str
    model_uri: str = DEFAULT_MODEL_URI
    id_column: str | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    on_error: str = "fail"
    rejects: str | None = None
    engine: str = "local"
    spark_master: str | None = None
    spark_env_manager: str = "local"
    interval: float | None = None

    def params(self) -> dict | None:
        """The pyfunc's inference parameters: the ``interval`` level when one is asked for."""
        return None if self.interval is None else {INTERVAL_PARAM: self.interval}

    def output_columns(self) -> tuple[str, ...]:
        """The prediction columns the job writes, as the model names them."""
        return (TARGET,) if self.interval is None else (TARGET, LOWER_COLUMN, UPPER_COLUMN)

    def rejects_path(self) -> str | None:
        """Where rejected rows go: ``rejects`` if given, else ``<output stem>.rejects<suffix>``."""
        if self.on_error != "reject":
            return None
        if self.rejects:
            return self.rejects
        output = Path(self.output)
        return str(output.with_name(f"{output.stem}.rejects{output.suffix}"))

    def check(self) -> None:
        choices = {"engine": ENGINES, "on_error": ON_ERROR, "spark_env_manager": SPARK_ENV_MANAGERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise BatchError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if self.chunk_size < 1:
            raise BatchError(f"chunk_size must be at least 1, not {self.chunk_size}")
        try:
            requested_level(self.params())
        except InvalidParameterError:
            raise BatchError(f"{INTERVAL_RULE}, not {self.interval!r}") from None
        written = (*self.output_columns(), *(REJECT_COLUMNS if self.on_error == "reject" else ()))
        if self.id_column in written:
            raise BatchError(f"id_column cannot be {self.id_column!r}, a column the job writes")
        if self.rejects and self.on_error != "reject":
            # Silently ignored, it would leave the caller believing bad rows go there.
            raise BatchError(f"rejects={self.rejects!r} needs on_error=reject")
        if self.engine == "spark" and self.on_error == "reject":
            raise BatchError("on_error=reject needs engine=local (Spark does not know file row numbers)")
        paths = {"input": self.input, "output": self.output, "rejects": self.rejects_path()}
        paths = {name: path for name, path in paths.items() if path}
        for name, path in paths.items():
            file_format(path, name)
        if len({_normalise(path) for path in paths.values()}) < len(paths):
            raise BatchError("input, output and rejects must be three different paths")


@dataclass
class BatchResult:
    model_uri: str
    output: str
    rejects: str | None
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    model_load_seconds: float = 0.0
    spark_master: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def parse_interval(text: str) -> float | None:
    """The ``interval`` option's value: ``''`` for none, else a number (its range is ``check``'s)."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise BatchError(f"{INTERVAL_RULE}, not {text!r}") from None


def file_format(path: str, what: str = "file") -> str:
    suffix = Path(path.rstrip("/")).suffix.lower()
    if suffix not in FORMATS:
        raise BatchError(
            f"{what} {path}: unknown format {suffix or '(no extension)'!r}; use .csv or .parquet"
        )
    return FORMATS[suffix]


def _normalise(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


def check_columns(names: list[str], id_column: str | None, source: str) -> list[str]:
    """The columns scoring reads; raise for a missing required column, a missing id or duplicates."""
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise BatchError(f"input {source}: column '{duplicated[0]}' given more than once")
    missing = [column for column in REQUIRED_COLUMNS if column not in names]
    if missing:
        raise BatchError(f"input {source}: column '{missing[0]}': required column is missing")
    if id_column and id_column not in names:
        raise BatchError(f"input {source}: id column '{id_column}' is not in the file")
    wanted = [column for column in FEATURE_COLUMNS if column in names]
    if id_column and id_column not in wanted:
        wanted = [id_column, *wanted]
    return wanted


def first_violation(found: list[Violation]) -> tuple[Violation, int]:
    """The violation on the lowest row (the first listed, on a tie) and that row, 0-based.

    Every violation here has rows: whole-column problems (a missing or duplicated column)
    are refused by ``check_columns`` before any row is read.
    """
    row, violation = min(((int(np.argmax(v.rows)), v) for v in found), key=lambda pair: pair[0])
    return violation, row


def error_summary(error: Exception) -> str:
    """The kind of error without the tail where Arrow or Spark quotes the offending text."""
    return ": ".join(str(error).splitlines()[0].split(": ")[:2])[:200]
