"""What a bad-input case sends: the logical table of a request and its body in each request form."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from model.data import CATEGORICAL_COLUMN, FEATURE_COLUMNS

MARKER = "MARKER-b4d1"  # a value that must never come back in an error
# One valid block with distinctive values: if any of these strings shows up in an error body,
# the server echoed the payload (pandas prints these floats exactly like this).
BASE = {
    "longitude": -122.23456,
    "latitude": 37.87654,
    "housing_median_age": 41.0,
    "total_rooms": 880.0,
    "total_bedrooms": 129.0,
    "population": 322.0,
    "households": 126.0,
    "median_income": 8.32521,
    "ocean_proximity": "NEAR BAY",
}
FINGERPRINTS = ("-122.23456", "37.87654", "8.32521", "NEAR BAY", MARKER)


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP = _Drop()  # a column left out of the request


@dataclass(frozen=True)
class Table:
    """Columns and rows as a client would send them (values may be None, NaN, inf, strings, ...)."""

    columns: tuple[str, ...]
    rows: tuple[tuple, ...]

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row)) for row in self.rows]

    def column_values(self, name: str) -> list:
        i = self.columns.index(name)
        return [row[i] for row in self.rows]


def table(n: int = 1, extra: Mapping[str, object] | None = None, **changes) -> Table:
    """``n`` copies of BASE with ``changes`` applied (DROP removes a column), ``extra`` columns appended."""
    row = {**BASE, **changes, **(extra or {})}
    columns = tuple(name for name, value in row.items() if value is not DROP)
    return Table(columns, tuple(tuple(row[c] for c in columns) for _ in range(n)))


def with_bad_second_row(**changes) -> Table:
    """Two rows: BASE, then BASE with ``changes`` (the message must name row 1)."""
    good, bad = table(), table(**changes)
    return Table(good.columns, good.rows + bad.rows)


def duplicated_column() -> Table:
    base = table()
    return Table((*base.columns, "households"), (base.rows[0] + (127.0,),))


def empty_table() -> Table:
    return Table(tuple(FEATURE_COLUMNS), ())


# ------------------------------------------------------------------ encoders: one request body per form


def dumps(obj) -> bytes:
    # allow_nan: NaN / Infinity literals are how Python and pandas clients send them
    return json.dumps(obj, allow_nan=True).encode()


def encode_split(data: Table) -> bytes:
    return dumps({"dataframe_split": {"columns": list(data.columns), "data": [list(r) for r in data.rows]}})


def encode_records(data: Table) -> bytes:
    return dumps({"dataframe_records": data.records()})


def encode_inputs(data: Table) -> bytes:
    return dumps({"inputs": {c: data.column_values(c) for c in data.columns}})


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return str(value)


def encode_csv(data: Table) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(data.columns)
    for row in data.rows:
        writer.writerow([_csv_cell(v) for v in row])
    return out.getvalue().encode()


def encode_v2(data: Table) -> bytes:
    inputs = []
    for column in data.columns:
        values = data.column_values(column)
        datatype = "BYTES" if column == CATEGORICAL_COLUMN else "FP64"
        inputs.append({"name": column, "shape": [len(values)], "datatype": datatype, "data": values})
    return dumps({"inputs": inputs})


# (encoder, Content-Type) per form
ENCODERS: dict[str, tuple[Callable[[Table], bytes], str]] = {
    "split": (encode_split, "application/json"),
    "records": (encode_records, "application/json"),
    "inputs": (encode_inputs, "application/json"),
    "csv": (encode_csv, "text/csv"),
    "v2": (encode_v2, "application/json"),
}
