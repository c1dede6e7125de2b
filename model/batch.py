"""Batch scoring: a CSV or Parquet file in, one prediction per row out, written atomically.

Two engines score the same file with the same artifact (docs/workflows/inference-batch.md):

* ``local`` streams the input in chunks of ``chunk_size`` rows with pyarrow, calls the
  loaded pyfunc's ``predict`` once per chunk (the signature and the input contract are
  enforced inside the artifact) and streams the predictions into a temp file beside the
  output, renamed into place at the end. Memory is bounded by the chunk, not the file.
* ``spark`` scores the file with ``mlflow.pyfunc.spark_udf`` on Spark (``local[*]``
  unless a master is given or the job runs under ``spark-submit``) and writes Spark's
  directory of part files to a temp directory, renamed into place at the end.

Either way the output path holds a complete result or nothing: a job that fails or is
killed leaves at most a hidden ``.<name>.<host>.<pid>.partial`` beside it, which the next
job writing the same output removes once that process is gone.

Row numbers, in messages and in the rejects file, count data rows from 1: row 1 is the
first row after a CSV's header (line 2 of the file), or the first row of a Parquet file.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from model import contract
from model.contract import NULLABLE_COLUMNS, InputContractError
from model.data import CATEGORICAL_COLUMN, FEATURE_COLUMNS, NUMERIC_COLUMNS, TARGET
from model.registry import CHAMPION, MODEL_NAME

DEFAULT_MODEL_URI = f"models:/{MODEL_NAME}@{CHAMPION}"
# Rows per `predict` call. The feature pipeline peaks at ~4 kB of temporaries per row (the
# 50 nearest blocks' indices, distances, targets and running sums), so 50k rows keep the
# whole process near 0.6 GiB; larger chunks were no faster (docs/workflows/inference-batch.md).
DEFAULT_CHUNK_SIZE = 50_000
ENGINES = ("local", "spark")
ON_ERROR = ("fail", "reject")
SPARK_ENV_MANAGERS = ("local", "virtualenv", "uv", "conda")
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
REQUIRED_COLUMNS = tuple(column for column in FEATURE_COLUMNS if column not in NULLABLE_COLUMNS)
REJECT_COLUMNS = ("row", "column", "rule")
NOT_A_NUMBER = "must be a number"
CSV_BLOCK_BYTES = 1 << 20


class BatchError(Exception):
    """The job cannot produce its output; ``str()`` is one line that never quotes input values."""


@dataclass(frozen=True)
class BatchJob:
    """One scoring job; see ``projects/batch_predict.py`` for the command-line spelling."""

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
        written = (TARGET, *REJECT_COLUMNS) if self.on_error == "reject" else (TARGET,)
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


def file_format(path: str, what: str = "file") -> str:
    suffix = Path(path.rstrip("/")).suffix.lower()
    if suffix not in FORMATS:
        raise BatchError(
            f"{what} {path}: unknown format {suffix or '(no extension)'!r}; use .csv or .parquet"
        )
    return FORMATS[suffix]


def _normalise(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


# ----------------------------------------------------------------------------------------------
# The job: an MLflow run around one engine.
# ----------------------------------------------------------------------------------------------


def run(job: BatchJob, progress: bool | None = None, spark=None) -> BatchResult:
    """Score ``job`` inside an MLflow run (the one `mlflow run` started, else a new one).

    Logs the parameters (the model URI resolved to a registered version), and the metrics
    ``rows_read``, ``rows_scored``, ``rows_rejected``, ``seconds``, ``rows_per_second``
    and ``model_load_seconds``. A failed job ends the run FAILED with its message in the
    ``error`` tag and raises :class:`BatchError`. ``spark``: a session for ``engine=spark``
    to use (and leave running) instead of starting one.
    """
    job.check()
    with mlflow.start_run() as active:
        # `mlflow run` has logged the entry point's parameters as given; a second value for one fails.
        already_logged = mlflow.get_run(active.info.run_id).data.params

        def log_params(params: dict) -> None:
            mlflow.log_params({key: value for key, value in params.items() if key not in already_logged})

        try:
            model_uri = resolve_model_uri(job.model_uri)
            log_params(
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
                }
            )
            if job.engine == "local":
                result = score_local(job, model_uri, progress)
            else:
                result = score_spark(job, model_uri, spark)
                log_params({"spark_master": result.spark_master, "spark_env_manager": job.spark_env_manager})
        except BatchError as error:
            mlflow.set_tag("error", str(error))
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


def _load_model(model_uri: str):
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as error:
        raise BatchError(f"model_uri {model_uri}: {str(error).splitlines()[0]}") from None


# ----------------------------------------------------------------------------------------------
# Local engine: pyarrow streams in, predict per chunk, pyarrow streams out.
# ----------------------------------------------------------------------------------------------


def score_local(job: BatchJob, model_uri: str, progress: bool | None = None) -> BatchResult:
    rejects_path = job.rejects_path()
    source = Source.open(job.input, job.id_column, job.chunk_size)
    result = BatchResult(model_uri=model_uri, output=job.output, rejects=rejects_path)
    started = time.perf_counter()
    model = _load_model(model_uri)
    result.model_load_seconds = time.perf_counter() - started

    id_field = [pa.field(job.id_column, source.id_type)] if job.id_column else []
    output_schema = pa.schema([*id_field, pa.field(TARGET, pa.float64())])
    rejects_schema = pa.schema(
        [
            *id_field,
            pa.field("row", pa.int64()),
            pa.field("column", pa.string()),
            pa.field("rule", pa.string()),
        ]
    )
    bar = _progress_bar(source.total_rows, progress)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        writer = stack.enter_context(AtomicTableWriter(Path(job.output), output_schema))
        if rejects_path:
            rejects = stack.enter_context(AtomicTableWriter(Path(rejects_path), rejects_schema))
        for table in source.chunks():
            scored, rejected = _score_chunk(model, table, result.rows_read, job, source.name)
            writer.write(scored)
            if rejected is not None:
                rejects.write(rejected)
            result.rows_read += table.num_rows
            result.rows_scored += scored.num_rows
            result.rows_rejected += table.num_rows - scored.num_rows
            bar.update(table.num_rows)
        # Rejects first: the output appearing is the signal that the whole job completed.
        if rejects_path:
            rejects.commit()
        writer.commit()
    result.seconds = time.perf_counter() - started
    return result


def _progress_bar(total: int | None, progress: bool | None):
    from tqdm import tqdm

    # disable=None: a bar only when stderr is a terminal.
    return tqdm(
        total=total,
        unit=" rows",
        unit_scale=True,
        desc="batch_predict",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )


@dataclass
class Source:
    """The input file as a stream of ``chunk_size``-row Arrow tables (only the columns scoring needs)."""

    name: str
    columns: list[str]
    id_type: pa.DataType | None
    total_rows: int | None
    chunk_size: int
    _batches: Iterator[pa.RecordBatch] | None = None
    # (fields the header has, fields found) of the first CSV row Arrow refused.
    _malformed_row: tuple[int, int] | None = None

    @classmethod
    def open(cls, path: str, id_column: str | None, chunk_size: int) -> "Source":
        fmt = file_format(path, "input")
        if not Path(path).is_file():
            raise BatchError(f"input {path}: no such file")
        try:
            if fmt == "parquet":
                # pre_buffer=False: with it, iter_batches keeps every row group's buffers
                # until the end, so memory grew with the file (~15 MB per 1 M rows here).
                parquet = pq.ParquetFile(path, pre_buffer=False)
                names, total = parquet.schema_arrow.names, parquet.metadata.num_rows
            else:
                # Only the header matters here; rows are checked while streaming.
                header_only = pcsv.ReadOptions(block_size=1 << 16)
                any_rows = pcsv.ParseOptions(invalid_row_handler=lambda row: "skip")
                with pcsv.open_csv(path, read_options=header_only, parse_options=any_rows) as reader:
                    names, total = reader.schema.names, None
        except (pa.ArrowException, OSError) as error:
            raise BatchError(
                f"input {path}: not a readable {fmt.upper()} file ({_arrow_reason(error)})"
            ) from None
        columns = check_columns(names, id_column, path)
        id_type = None
        if id_column:  # a CSV's columns are all read as text (_csv_batches)
            id_type = parquet.schema_arrow.field(id_column).type if fmt == "parquet" else pa.string()
        source = cls(path, columns, id_type, total, chunk_size)
        if fmt == "parquet":
            source._batches = parquet.iter_batches(batch_size=chunk_size, columns=columns)
        else:
            source._batches = source._csv_batches()
        return source

    def _csv_batches(self) -> Iterator[pa.RecordBatch]:
        # A generator: opening parses the first block, so its errors surface in chunks() too.
        # Every column as text: numbers are parsed per chunk (to_frame), where a bad value can be
        # given its row number (Arrow's own conversion error names neither row nor column, and
        # quotes the value). Only an empty field is missing; "NA", "null" and the like are
        # values, as Spark reads them.
        with pcsv.open_csv(
            self.name,
            read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(invalid_row_handler=self._refuse_malformed_row),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in self.columns},
                include_columns=self.columns,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        ) as reader:
            yield from reader

    def _refuse_malformed_row(self, row) -> str:
        if self._malformed_row is None:
            self._malformed_row = (row.expected_columns, row.actual_columns)
        return "error"

    def chunks(self) -> Iterator[pa.Table]:
        """Tables of exactly ``chunk_size`` rows (the last one shorter), in file order."""
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        rows_done = 0
        while True:
            try:
                batch = next(self._batches, None)
            except (pa.ArrowException, OSError) as error:
                raise BatchError(self._read_error(error, rows_done + pending_rows)) from None
            if batch is not None and batch.num_rows:
                pending.append(batch)
                pending_rows += batch.num_rows
            while pending_rows >= self.chunk_size or (batch is None and pending_rows):
                table = pa.Table.from_batches(pending)
                chunk, rest = table.slice(0, self.chunk_size), table.slice(self.chunk_size)
                pending = rest.to_batches() if rest.num_rows else []
                pending_rows = rest.num_rows
                rows_done += chunk.num_rows
                yield chunk
            if batch is None:
                return

    def _read_error(self, error: Exception, rows_ok: int) -> str:
        if self._malformed_row is None:
            return f"input {self.name}: unreadable after row {rows_ok} ({_arrow_reason(error)})"
        expected, actual = self._malformed_row
        row = _first_row_with_fields_other_than(self.name, expected)
        where = f"row {row}" if row else f"a row after row {rows_ok}"
        return f"input {self.name}, {where}: malformed CSV: {actual} fields where the header has {expected}"


def _first_row_with_fields_other_than(path: str, expected: int) -> int | None:
    """The 1-based data row of ``path`` whose field count is not ``expected`` (a rescan, on failure only)."""
    with (
        contextlib.suppress(OSError, csv.Error),
        open(path, newline="", encoding="utf-8", errors="replace") as handle,
    ):
        records = csv.reader(handle)
        next(records, None)
        number = 0
        for record in records:
            if record:  # blank lines are no rows, for Arrow either
                number += 1
                if len(record) != expected:
                    return number
    return None


def _arrow_reason(error: Exception) -> str:
    """The kind of error without the tail where Arrow quotes the offending text."""
    return ": ".join(str(error).splitlines()[0].split(": ")[:2])[:200]


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


def to_frame(table: pa.Table, source: str) -> tuple[pd.DataFrame, list[contract.Violation]]:
    """The model's input frame for ``table`` and the per-row ``Violation``s found converting it.

    Numbers stored as text are parsed here; a value that is not a number becomes NaN with a
    ``must be a number`` violation on its row. A column whose Arrow type can never hold the
    rule's values (say, a boolean longitude) fails the whole job; ``source`` names the
    input in that error.
    """
    columns: dict[str, np.ndarray] = {}
    problems = []
    for name in NUMERIC_COLUMNS:
        if name not in table.column_names:
            continue
        values = table.column(name)
        if not (_is_numeric_type(values.type) or _is_text_type(values.type)):
            raise BatchError(
                f"input {source}: column '{name}': {NOT_A_NUMBER} (the file stores it as {values.type})"
            )
        try:
            # safe=False: an integer beyond 2**53 becomes the nearest float, as pandas would make it.
            columns[name] = pc.cast(values, pa.float64(), safe=False).to_numpy()
        except pa.ArrowInvalid:  # text that is not all numbers
            text = pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
            parsed = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
            # Blank text is a missing value (as an empty CSV field is), "nan" a NaN; the rest is not a number.
            missing = text.isna() | text.str.strip().str.lower().isin(["", "nan", "-nan", "+nan"])
            bad = np.isnan(parsed) & ~missing.to_numpy(dtype=bool)
            columns[name] = parsed
            if bad.any():
                problems.append(contract.Violation(name, NOT_A_NUMBER, bad))
    category = table.column(CATEGORICAL_COLUMN)
    if pa.types.is_dictionary(category.type):
        category = pc.cast(category, category.type.value_type)
    if not (_is_text_type(category.type) or pa.types.is_null(category.type)):
        raise BatchError(
            f"input {source}: column '{CATEGORICAL_COLUMN}': must be a non-empty string "
            f"(the file stores it as {category.type})"
        )
    columns[CATEGORICAL_COLUMN] = category.to_numpy(zero_copy_only=False).astype(object)
    return pd.DataFrame(columns), problems


def _is_numeric_type(kind: pa.DataType) -> bool:
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_null(kind)
    )


def _is_text_type(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def violations(frame: pd.DataFrame, parse_problems: list[contract.Violation]) -> list[contract.Violation]:
    """Every rule ``frame`` breaks: the parse problems, then the contract's own findings.

    A value that did not parse is already NaN in ``frame``; the contract's ``must not be
    missing`` on that same cell is dropped, so each bad cell is reported once.
    """
    found = list(parse_problems)
    unparsed = {problem.column: problem.rows for problem in parse_problems}
    for violation in contract.find_violations(frame):
        if violation.column in unparsed:
            rows = violation.rows & ~unparsed[violation.column]
            if not rows.any():
                continue
            violation = contract.Violation(violation.column, violation.rule, rows)
        found.append(violation)
    return found


def first_violation(found: list[contract.Violation]) -> tuple[contract.Violation, int]:
    """The violation on the lowest row (the first listed, on a tie) and that row, 0-based.

    Every violation here has rows: whole-column problems (a missing or duplicated column)
    are refused by ``check_columns`` before any row is read.
    """
    row, violation = min(((int(np.argmax(v.rows)), v) for v in found), key=lambda pair: pair[0])
    return violation, row


def _score_chunk(model, table: pa.Table, offset: int, job: BatchJob, source: str):
    """Predictions for one chunk, and its rejects table (None unless rows were rejected)."""
    frame, parse_problems = to_frame(table, source)
    if not parse_problems:
        try:
            return _output_table(table, job.id_column, _predict(model, frame)), None
        except InputContractError:
            pass  # it names the first rule broken; the first row, or every bad row, is found below
    found = violations(frame, parse_problems)
    if job.on_error == "fail":
        violation, row = first_violation(found)
        raise BatchError(
            f"input {source}, row {offset + row + 1}: column '{violation.column}': {violation.rule} "
            "(use -P on_error=reject to set bad rows aside)"
        )
    keep = ~np.logical_or.reduce([violation.rows for violation in found])
    predictions = _predict(model, frame[keep].reset_index(drop=True))
    return (
        _output_table(table.filter(pa.array(keep)), job.id_column, predictions),
        _rejects_table(table, found, offset, job.id_column),
    )


def _predict(model, frame: pd.DataFrame) -> np.ndarray:
    predictions = model.predict(frame)
    values = np.asarray(
        predictions[TARGET] if isinstance(predictions, pd.DataFrame) else predictions, dtype=float
    )
    if values.shape != (len(frame),):
        raise BatchError(f"the model returned {values.shape} predictions for {len(frame)} rows")
    return values


def _output_table(table: pa.Table, id_column: str | None, predictions: np.ndarray) -> pa.Table:
    columns = {id_column: table.column(id_column)} if id_column else {}
    columns[TARGET] = pa.array(predictions, type=pa.float64())
    return pa.table(columns)


def _rejects_table(table: pa.Table, found: list, offset: int, id_column: str | None) -> pa.Table:
    """One record per (row, broken rule), in row order: ``[id], row, column, rule``."""
    positions, columns, rules = [], [], []
    for violation in found:
        rows = np.flatnonzero(violation.rows)
        positions.append(rows)
        columns += [violation.column] * len(rows)
        rules += [violation.rule] * len(rows)
    position = np.concatenate(positions)
    order = np.argsort(position, kind="stable")
    position = position[order]
    rejected = {id_column: table.column(id_column).take(pa.array(position))} if id_column else {}
    rejected["row"] = pa.array(position + offset + 1, type=pa.int64())
    rejected["column"] = pa.array(np.asarray(columns, dtype=object)[order], type=pa.string())
    rejected["rule"] = pa.array(np.asarray(rules, dtype=object)[order], type=pa.string())
    return pa.table(rejected)


# ----------------------------------------------------------------------------------------------
# Atomic output: a hidden partial beside the final path, renamed into place.
# ----------------------------------------------------------------------------------------------


def _partial_prefix(final: str) -> str:
    """``.<name>.<host>.``: the name of ``final``'s partials up to the writing process's pid."""
    return f".{final.rstrip('/').rpartition('/')[2]}.{socket.gethostname()}."


def partial_path(final: str) -> str:
    """``<dir>/.<name>.<host>.<pid>.partial``: same directory (the rename is atomic), hidden from readers."""
    parent = final.rstrip("/").rpartition("/")[0]
    return f"{parent + '/' if parent else ''}{_partial_prefix(final)}{os.getpid()}.partial"


def _left_by_dead_process(name: str, final: str, suffix: str = ".partial") -> bool:
    """Whether the file or directory ``name`` is a partial of ``final`` (or, with ``suffix``
    ``.old``, a previous result it moved aside) whose process, on this host, is gone.

    Only this host's pids can be checked; partials of other hosts (on shared storage) are left alone.
    """
    prefix = _partial_prefix(final)
    pid = name[len(prefix) : -len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
    return pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace(partial: Path, final: Path) -> None:
    """Rename the file ``partial`` to ``final``; a directory at ``final`` (a Spark result) is replaced too."""
    if final.is_dir() and not final.is_symlink():
        # os.replace cannot put a file over a directory: move it aside, rename, then delete it.
        aside = partial.with_name(partial.name[: -len(".partial")] + ".old")
        os.replace(final, aside)
        os.replace(partial, final)
        _remove(aside)
    else:
        os.replace(partial, final)
    with contextlib.suppress(OSError):  # not every filesystem can sync a directory
        _fsync(final.parent)


class AtomicTableWriter:
    """Write Arrow tables as CSV or Parquet (by ``final``'s extension) into a partial file.

    ``commit()`` closes, fsyncs and renames it to ``final``; leaving the ``with`` block
    without a commit (an error, Ctrl-C) removes the partial. A SIGKILL leaves it behind,
    hidden, for the next writer of ``final`` to remove.
    """

    def __init__(self, final: Path, schema: pa.Schema):
        self.final = Path(final)
        self.schema = schema
        self.format = file_format(str(final), "output")
        self.partial = Path(partial_path(str(self.final.absolute())))
        self._writer = None
        self._committed = False

    def __enter__(self) -> "AtomicTableWriter":
        if not self.final.parent.is_dir():
            raise BatchError(f"output directory {self.final.parent} does not exist")
        for candidate in self.final.parent.iterdir():
            if _left_by_dead_process(candidate.name, self.final.name):
                _remove(candidate)
        if self.format == "parquet":
            self._writer = pq.ParquetWriter(self.partial, self.schema, compression="snappy")
        else:
            self._writer = pcsv.CSVWriter(self.partial, self.schema)
        return self

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def commit(self) -> None:
        self._writer.close()
        _fsync(self.partial)
        replace(self.partial, self.final)
        self._committed = True

    def __exit__(self, *exc_info) -> None:
        if not self._committed:
            with contextlib.suppress(Exception):
                self._writer.close()
            _remove(self.partial)


# ----------------------------------------------------------------------------------------------
# Spark engine: mlflow.pyfunc.spark_udf over the file, written to a temp directory and renamed.
# ----------------------------------------------------------------------------------------------

_CONTRACT_MESSAGE = re.compile(
    r"invalid input: column '([^']+)'(?:, row \d+)?: (.+?)(?: \(\d+ rows break it\))?$", re.M
)


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
    output must be on storage every executor reaches. The model is downloaded once by the
    driver and shipped to the executors by ``spark_udf``.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    result = BatchResult(model_uri=model_uri, output=job.output, rejects=None)
    own_session = spark is None
    spark = spark or spark_session(job.spark_master)
    started = time.perf_counter()  # the session's start-up (~17 s locally) is not the job's
    hadoop = _HadoopPaths(spark)
    partial = partial_path(job.output)
    try:
        hadoop.clean_after_dead_jobs(job.output)
        if file_format(job.input) == "csv":
            names = _spark_call(lambda: spark.read.option("header", True).csv(job.input).columns, job.input)
            columns = check_columns(names, job.id_column, job.input)
            schema = T.StructType(
                [
                    T.StructField(name, T.DoubleType() if name in NUMERIC_COLUMNS else T.StringType())
                    for name in names
                ]
            )
            frame = spark.read.csv(
                job.input, header=True, schema=schema, mode="FAILFAST", enforceSchema=False
            )
        else:
            frame = _spark_call(lambda: spark.read.parquet(job.input), job.input)
            columns = check_columns(frame.columns, job.id_column, job.input)
            for name in NUMERIC_COLUMNS:
                if name in frame.columns:
                    kind = frame.schema[name].dataType
                    if not isinstance(kind, (T.NumericType, T.StringType, T.NullType)):
                        raise BatchError(
                            f"input {job.input}: column '{name}': {NOT_A_NUMBER} "
                            f"(the file stores it as {kind.simpleString()})"
                        )
                    frame = frame.withColumn(name, F.col(name).cast("double"))
        features = [column for column in FEATURE_COLUMNS if column in columns]
        load_started = time.perf_counter()
        predict = _spark_call(
            lambda: mlflow.pyfunc.spark_udf(
                spark, model_uri, result_type="double", env_manager=job.spark_env_manager
            ),
            job.input,
        )
        result.model_load_seconds = time.perf_counter() - load_started
        selected = [F.col(job.id_column)] if job.id_column else []
        scored = frame.select(*selected, predict(F.struct(*[F.col(c) for c in features])).alias(TARGET))
        writer = scored.write.mode("errorifexists")
        # Spark reads a path as a glob (writes take it literally): the re-read escapes it.
        written_path = re.sub(r"([\\\[\]{}*?])", r"\\\1", partial)
        if file_format(job.output) == "parquet":
            _spark_call(lambda: writer.parquet(partial), job.input)
            written = spark.read.parquet(written_path)
        else:
            _spark_call(lambda: writer.csv(partial, header=True), job.input)
            written = spark.read.csv(written_path, header=True)
        result.rows_read = result.rows_scored = _spark_call(written.count, job.input)
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


def _spark_call(action, source: str):
    """Run a Spark action; turn Spark's failure into one line that quotes no input value."""
    try:
        return action()
    except Exception as error:  # py4j / pyspark errors have no common base worth naming
        text = str(error)
        match = _CONTRACT_MESSAGE.search(text)
        if match:
            raise BatchError(
                f"input {source}: column '{match.group(1)}': {match.group(2)} "
                "(Spark does not know file row numbers; -P engine=local names the row)"
            ) from None
        if "Malformed records are detected" in text or "MALFORMED_RECORD" in text:
            raise BatchError(
                f"input {source}: a value does not parse as its column's type (Spark FAILFAST)"
            ) from None
        if "CAST_INVALID_INPUT" in text:
            raise BatchError(f"input {source}: a numeric column holds text that is not a number") from None
        if "PATH_NOT_FOUND" in text or "Path does not exist" in text:
            raise BatchError(f"input {source}: no such file") from None
        if isinstance(error, MlflowException):
            raise BatchError(f"model: {text.splitlines()[0]}") from None
        raise BatchError(f"spark: {type(error).__name__}: {_arrow_reason(error)}") from None


class _HadoopPaths:
    """Renames and deletes through Hadoop's FileSystem, so Spark's paths mean the same here."""

    def __init__(self, spark):
        self._jvm = spark._jvm
        self._conf = spark._jsc.hadoopConfiguration()

    def _path(self, path: str):
        hadoop_path = self._jvm.org.apache.hadoop.fs.Path(path)
        return hadoop_path, hadoop_path.getFileSystem(self._conf)

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
            if _left_by_dead_process(name, final):
                fs.delete(status.getPath(), True)
            elif _left_by_dead_process(name, final, ".old"):
                if fs.exists(target):
                    fs.delete(status.getPath(), True)
                else:
                    fs.rename(status.getPath(), target)
