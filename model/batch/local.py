"""The local engine: pyarrow streams the input in, the pyfunc scores each chunk, pyarrow streams out.

Each chunk of ``chunk_size`` rows becomes the model's input frame (:func:`to_frame`) and
goes through the loaded pyfunc once, which enforces the signature and the input contract.
A chunk the contract refuses is searched for its bad rows with the contract's own
:func:`model.contract.find_violations`: the job fails on the lowest one
(``on_error=fail``) or sets every bad row aside into the rejects file (``on_error=reject``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from model import contract
from model.batch import predictor
from model.batch.job import BatchError, BatchJob, BatchResult, first_violation
from model.batch.output import AtomicTableWriter
from model.batch.source import Source
from model.contract import NOT_A_NUMBER, InputContractError, Violation
from model.data import CATEGORICAL_COLUMN, NUMERIC_COLUMNS


def score_local(job: BatchJob, model_uri: str, progress: bool | None = None) -> BatchResult:
    rejects_path = job.rejects_path()
    source = Source.open(job.input, job.id_column, job.chunk_size)
    result = BatchResult(model_uri=model_uri, output=job.output, rejects=rejects_path)
    started = time.perf_counter()
    model = predictor.load(model_uri, job)
    result.model_load_seconds = time.perf_counter() - started

    id_field = [pa.field(job.id_column, source.id_type)] if job.id_column else []
    output_schema = pa.schema([*id_field, *(pa.field(name, pa.float64()) for name in job.output_columns())])
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
    """Rows done (``progress`` None: shown), as training shows its folds (``model.progress``): a
    bar redrawn on a terminal, else a line every ``LOG_INTERVAL`` seconds from the first such
    interval on, so a short job's log (or its one-line error) has nothing else."""
    from tqdm import tqdm

    from model.progress import LOG_INTERVAL, LogLines

    on_terminal = sys.stderr.isatty()
    return tqdm(
        total=total,
        unit=" rows",
        unit_scale=True,
        desc="batch_predict",
        file=sys.stderr if on_terminal else LogLines(sys.stderr),
        mininterval=0.1 if on_terminal else LOG_INTERVAL,
        delay=0 if on_terminal else LOG_INTERVAL,
        disable=False if progress is None else not progress,
        dynamic_ncols=on_terminal,
        smoothing=0.1,
    )


def to_frame(table: pa.Table, source: str) -> pd.DataFrame:
    """The model's input frame for ``table``: numbers as float64, ``ocean_proximity`` as objects.

    Integers, decimals and numbers stored as text become float64 here. Text that is not a
    number stays text in an object column, for the input contract to refuse on its row
    (``must be a number``): the contract alone decides what is a number. A column whose
    Arrow type can never hold the rule's values (say, a boolean longitude) fails the whole
    job; ``source`` names the input in that error.
    """
    columns: dict[str, np.ndarray] = {}
    for name in NUMERIC_COLUMNS:
        if name not in table.column_names:
            continue
        values = table.column(name)
        if not (_is_numeric_type(values.type) or _is_text_type(values.type)):
            raise BatchError(
                f"input {source}: column '{name}': {NOT_A_NUMBER} (the file stores it as {values.type})"
            )
        columns[name] = _numbers(values)
    category = table.column(CATEGORICAL_COLUMN)
    if pa.types.is_dictionary(category.type):
        category = pc.cast(category, category.type.value_type)
    if not (_is_text_type(category.type) or pa.types.is_null(category.type)):
        raise BatchError(
            f"input {source}: column '{CATEGORICAL_COLUMN}': must be a non-empty string "
            f"(the file stores it as {category.type})"
        )
    columns[CATEGORICAL_COLUMN] = category.to_numpy(zero_copy_only=False).astype(object)
    return pd.DataFrame(columns)


def _numbers(values: pa.ChunkedArray) -> np.ndarray:
    """float64 (NaN where missing), or, when some text is not a number, objects holding the
    parsed numbers and that text as it is."""
    try:
        # safe=False: an integer beyond 2**53 becomes the nearest float, as pandas would make it.
        return pc.cast(values, pa.float64(), safe=False).to_numpy()
    except pa.ArrowInvalid:  # text that is not all numbers
        text = pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
        parsed = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
        # Blank text is a missing value (as an empty CSV field is), "nan" a NaN; the rest is text.
        missing = text.isna() | text.str.strip().str.lower().isin(["", "nan", "-nan", "+nan"])
        not_parsed = np.isnan(parsed) & ~missing.to_numpy(dtype=bool)
        if not not_parsed.any():
            return parsed
        return np.where(not_parsed, text.to_numpy(), parsed.astype(object))


def _is_numeric_type(kind: pa.DataType) -> bool:
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_null(kind)
    )


def _is_text_type(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _score_chunk(
    model, table: pa.Table, offset: int, job: BatchJob, source: str
) -> tuple[pa.Table, pa.Table | None]:
    """Predictions for one chunk, and its rejects table (None unless rows were rejected)."""
    frame = to_frame(table, source)
    all_numbers = all(frame[name].dtype == np.float64 for name in NUMERIC_COLUMNS if name in frame)
    if all_numbers:
        try:
            return _output_table(table, job.id_column, predictor.predict(model, frame, job)), None
        except InputContractError:
            pass  # it names the first rule broken; the first row, or every bad row, is found below
    found = contract.find_violations(frame)
    if job.on_error == "fail":
        violation, row = first_violation(found)
        raise BatchError(
            f"input {source}, row {offset + row + 1}: column '{violation.column}': {violation.rule} "
            "(use -P on_error=reject to set bad rows aside)"
        )
    keep = ~np.logical_or.reduce([violation.rows for violation in found])
    # Kept rows hold only numbers (or nothing): columns that carried text become float64 again.
    kept = frame[keep].reset_index(drop=True)
    kept = kept.astype(
        {name: float for name in NUMERIC_COLUMNS if name in kept and kept[name].dtype == object}
    )
    return (
        _output_table(table.filter(pa.array(keep)), job.id_column, predictor.predict(model, kept, job)),
        _rejects_table(table, found, offset, job.id_column),
    )


def _output_table(table: pa.Table, id_column: str | None, predictions: dict[str, np.ndarray]) -> pa.Table:
    columns = {id_column: table.column(id_column)} if id_column else {}
    columns.update((name, pa.array(values, type=pa.float64())) for name, values in predictions.items())
    return pa.table(columns)


def _rejects_table(table: pa.Table, found: list[Violation], offset: int, id_column: str | None) -> pa.Table:
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
