"""Reading the input: a CSV or Parquet file as a stream of Arrow tables of exactly ``chunk_size`` rows.

Only the columns scoring needs are read. A CSV's columns are all read as text (the local
engine parses numbers per chunk, where a bad value can be given its row number); memory
is bounded by the chunk, not the file.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from model.batch.job import BatchError, check_columns, error_summary, file_format

CSV_BLOCK_BYTES = 1 << 20


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
    def open(cls, path: str, id_column: str | None, chunk_size: int) -> Source:
        fmt = file_format(path, "input")
        if not Path(path).is_file():
            raise BatchError(f"input {path}: no such file")
        try:
            if fmt == "parquet":
                # pre_buffer=False: with it, iter_batches keeps every row group's buffers
                # until the end, so memory grew with the file.
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
                f"input {path}: not a readable {fmt.upper()} file ({error_summary(error)})"
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
        # Every column as text: numbers are parsed per chunk (local.to_frame), where a bad value can
        # be given its row number (Arrow's own conversion error names neither row nor column, and
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
            return f"input {self.name}: unreadable after row {rows_ok} ({error_summary(error)})"
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
