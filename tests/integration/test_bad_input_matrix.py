"""The bad-input matrix: malformed and hostile requests against every way the artifact is served.

One table of cases (``DATA_CASES``: what is wrong with the *data*, encoded per target) plus
per-target tables of *format* cases (malformed JSON, content types, V2 shapes, unknown model,
a 50 MB body) drives three targets, all real processes on 127.0.0.1:

* ``mlflow models serve`` — every data case as JSON ``dataframe_split``; a representative handful
  (``OTHER_SERVE_FORMS``) also as ``dataframe_records``, ``inputs`` and CSV, where MLflow parses
  each form its own way;
* the KServe V2 runtime (``python -m mlflowserver``) — every data case;
* ``mlflow models predict`` (the batch CLI) — the 25 cases ``CLI_CASES``, run 2 at a time in the
  background while the HTTP cases run.

For every case: a rejected request gets a 4xx (the CLI: a non-zero exit whose last stderr line
names the problem), the message names the problem, the body never echoes the values sent and
has no stack trace, and the next valid request still succeeds with the right prediction. An
accepted case (documented decisions: extra columns, 0 rows, null ``total_bedrooms``, whole
numbers for doubles, unseen category, 100,000 rows) must give exactly the in-process prediction.

Deviations caused by MLflow itself are not hidden: those cases are ``xfail(strict=True)`` with
``raises=`` the precise deviation (:class:`ServerError`, :class:`Echo`, :class:`StackTrace`,
:class:`Vague`, :class:`Accepted`), so any other failure still fails, and a fix upstream turns
them into an XPASS failure to be cleaned up. The table of cases and outcomes is
docs/reliability.md ("Bad-input matrix").
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from model import packaging
from model.data import CATEGORICAL_COLUMN, FEATURE_COLUMNS, NUMERIC_COLUMNS, TARGET
from model.train import TrainingConfig, fit_model
from tests.integration.servers import VENV_BIN, free_port, running_server, server_env, stop_process_group

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
V2_MODEL = "california-housing"
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
TRACE_SIGNS = ("Traceback (most recent call last)", 'File "', "stack_trace")
FIFTY_MB = 50 * 1024 * 1024
BIG_ROWS = 100_000
HTTP_TIMEOUT = 180
CLI_WORKERS = 2
CLI_TIMEOUT = 600
# The smallest model that is still the real artifact: every target loads it, the CLI once per case.
N_ESTIMATORS = 50


# ------------------------------------------------------------------ deviations (typed, for xfail raises=)


class Deviation(Exception):
    """A case did not behave as required, for a reason recorded in the table."""


class ServerError(Deviation):
    """The server answered 5xx."""


class Accepted(Deviation):
    """A request that should be refused was answered with predictions."""


class Echo(Deviation):
    """The error echoes values from the payload."""


class StackTrace(Deviation):
    """The error body carries a Python stack trace."""


class Vague(Deviation):
    """The error message does not name the column and the problem."""


def known(kinds, reason: str):
    """A known deviation: the test must fail with exactly this kind (strict: a fix makes it XPASS)."""
    return pytest.mark.xfail(strict=True, raises=kinds, reason=reason)


MLFLOW_SCHEMA_ECHO = (
    "MLflow's schema enforcement refuses the input before the model's contract runs, with the input DataFrame "
    "in the message (\"Failed to enforce schema of data '<frame>'\"; `mlflow models serve` adds its own "
    "\"Failed to predict data '<frame>'\" prefix)"
)
MLFLOW_JSON_ECHO = "MLflow's _decode_json_input() puts the whole raw body into the message ('Input: ...')"
MLFLOW_CSV_TRACE = (
    "MLflow's parse_csv_input() returns the pandas error and the full stack trace in the response body"
)
MLFLOW_COERCES = (
    "MLflow's signature enforcement casts the value to double before the model sees it, so the "
    "contract's 'must be a number' cannot fire"
)
MLFLOW_NO_CONTENT_TYPE = (
    "MLflow's /invocations calls content_type.split() on a missing header: AttributeError -> 500"
)
CLI_JSON_ECHO = MLFLOW_JSON_ECHO + ", so the CLI's last stderr line is the payload itself"
CLI_CSV_LAST_LINE = (
    "MLflow's CSV parse error ends with pandas' own newline inside the quoted message, so the last stderr line "
    "is a lone quote (the line before names the problem)"
)
MLFLOW_CONVERT = (
    "MLflow's JSON parsing reports a failed type conversion with the offending value "
    "(\"could not convert string to float: '<value>'\")"
)
MLFLOW_INPUTS_CONVERT = MLFLOW_CONVERT + " and, for the 'inputs' format, without naming the column"
MLFLOW_CSV_CONVERT = (
    "MLflow's parse_csv_input() returns pandas' error (which quotes the value, not the column) and the full "
    "stack trace"
)
MLFLOW_DUPLICATE = (
    "MLflow's schema enforcement fails on a duplicated column with \"'DataFrame' object has no attribute "
    "'dtype'\" (and echoes the input)"
)
PANDAS_CSV_DUPLICATE = (
    "pandas.read_csv renames the second 'households' to 'households.1', an extra column the model ignores"
)
MLFLOW_INPUTS_STR = (
    "for the 'inputs' format MLflow casts the value to str before the model sees it ({}), which the contract "
    "treats as an unseen category"
)


# ------------------------------------------------------------------ the logical data of a request


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP = _Drop()  # a column left out of the request


@dataclass(frozen=True)
class Table:
    """Columns and rows as a client would send them (values may be None, NaN, inf, strings, ...)."""

    columns: Tuple[str, ...]
    rows: Tuple[tuple, ...]

    def records(self) -> list:
        return [dict(zip(self.columns, row)) for row in self.rows]

    def column_values(self, name: str) -> list:
        i = self.columns.index(name)
        return [row[i] for row in self.rows]


def table(n: int = 1, extra: Optional[Mapping[str, object]] = None, **changes) -> Table:
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
    return Table(base.columns + ("households",), (base.rows[0] + (127.0,),))


def empty_table() -> Table:
    return Table(tuple(FEATURE_COLUMNS), ())


def frame_for_reference(data: Table) -> pd.DataFrame:
    """The DataFrame a correct server hands the model for an accepted case."""
    frame = pd.DataFrame([list(r) for r in data.rows], columns=list(data.columns))
    for column in NUMERIC_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column]).astype(float)
    if CATEGORICAL_COLUMN in frame.columns:
        frame[CATEGORICAL_COLUMN] = frame[CATEGORICAL_COLUMN].astype(object)
    return frame


# ------------------------------------------------------------------ expected outcomes


@dataclass(frozen=True)
class Outcome:
    """What a target must do with a case.

    ``status``: 200 = accepted (predictions compared with the in-process model), else the exact
    error status. ``mentions``: case-insensitive substrings the error message must contain (the
    column and the problem).
    """

    status: int = 400
    mentions: Tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.status == 200


ACCEPT = Outcome(200)


def reject(*mentions: str, status: int = 400) -> Outcome:
    return Outcome(status, tuple(mentions))


@dataclass(frozen=True)
class DataCase:
    """A data problem, encoded for every target.

    ``expect`` holds per target (``split``, ``records``, ``inputs``, ``csv``, ``v2``, ``cli``)
    outcomes that differ from ``default``; a target mapped to ``None`` does not apply (the
    format cannot express the case). ``marks`` are per-target xfail marks for known deviations.
    """

    id: str
    data: Table
    default: Outcome
    expect: Mapping[str, Optional[Outcome]] = field(default_factory=dict)
    marks: Mapping[str, object] = field(default_factory=dict)
    cli: bool = False  # also one of the CLI cases (each costs a process start)

    def outcome(self, target: str) -> Optional[Outcome]:
        return self.expect.get(target, self.default)


MLFLOW_JSON = ("split", "records", "inputs")
SERVE_FORMATS = (*MLFLOW_JSON, "csv")


def on(targets: Sequence[str], mark) -> Dict[str, object]:
    return {target: mark for target in targets}


def _null_case(column: str) -> DataCase:
    if column == "total_bedrooms":
        return DataCase(f"null-{column}", table(total_bedrooms=None), ACCEPT, cli=True)
    if column == CATEGORICAL_COLUMN:
        return DataCase(
            f"null-{column}", table(ocean_proximity=None), reject(column, "non-empty string"),
            expect={"v2": reject(column, "null")},
            marks={"inputs": known(Accepted, MLFLOW_INPUTS_STR.format("None -> 'None'"))}, cli=True,
        )
    # V2: null in a column the signature marks required is the runtime's 400 (a number is expected)
    return DataCase(f"null-{column}", table(**{column: None}), reject(column, "row 0", "must not be missing"),
                    expect={"v2": reject(column, "row 0", "null")}, cli=column == "longitude")


def _nan_case(column: str) -> DataCase:
    if column == "total_bedrooms":
        return DataCase(f"nan-{column}", table(total_bedrooms=math.nan), ACCEPT)
    return DataCase(f"nan-{column}", table(**{column: math.nan}), reject(column, "row 0", "must not be missing"),
                    cli=column == "households")


def _inf_case(column: str, sign: int) -> DataCase:
    name = f"{'+' if sign > 0 else '-'}inf-{column}"
    return DataCase(name, table(**{column: sign * math.inf}), reject(column, "row 0", "must be finite"),
                    cli=(column, sign) in (("total_rooms", 1), ("median_income", -1)))


DATA_CASES: Tuple[DataCase, ...] = (
    # --- columns
    DataCase("missing-column-longitude", table(longitude=DROP), reject("longitude", "missing"),
             marks=on((*SERVE_FORMATS, "cli"), known(Echo, MLFLOW_SCHEMA_ECHO)), cli=True),
    DataCase("missing-optional-total_bedrooms", table(total_bedrooms=DROP), ACCEPT),
    DataCase("extra-column", table(extra={"block_id": MARKER}), ACCEPT,
             expect={"v2": reject("unknown input 'block_id'")}, cli=True),
    DataCase("duplicated-column-households", duplicated_column(), reject("households", "more than once"),
             expect={"records": None, "inputs": None},
             marks={"split": known(Vague, MLFLOW_DUPLICATE), "cli": known(Vague, MLFLOW_DUPLICATE),
                    "csv": known(Accepted, PANDAS_CSV_DUPLICATE)}, cli=True),
    # --- types
    DataCase("string-in-numeric-column", table(total_rooms=MARKER), reject("total_rooms"),
             expect={"v2": reject("total_rooms", "expected numbers")},
             marks={"split": known(Echo, MLFLOW_CONVERT), "records": known(Echo, MLFLOW_CONVERT),
                    "cli": known(Echo, MLFLOW_CONVERT),
                    "inputs": known(Vague, MLFLOW_INPUTS_CONVERT), "csv": known(Vague, MLFLOW_CSV_CONVERT)},
             cli=True),
    DataCase("numeric-string", table(total_rooms="880"), reject("total_rooms"),
             expect={"csv": None, "v2": reject("total_rooms", "expected numbers")},
             marks=on((*MLFLOW_JSON, "cli"), known(Accepted, MLFLOW_COERCES)), cli=True),
    DataCase("boolean-in-numeric-column", table(total_rooms=True), reject("total_rooms"),
             expect={"csv": None, "v2": reject("total_rooms", "expected numbers")},
             marks=on(MLFLOW_JSON, known(Accepted, MLFLOW_COERCES))),
    DataCase("int-for-double", table(total_rooms=880, population=322, households=126), ACCEPT, cli=True),
    DataCase("number-for-category", table(ocean_proximity=5), reject("ocean_proximity", "non-empty string"),
             expect={"csv": None, "v2": reject("ocean_proximity")}, marks={"inputs": known(Accepted, MLFLOW_INPUTS_STR.format("5 -> '5'"))}, cli=True),
    # --- missing and non-finite values, in each column
    *(_null_case(c) for c in FEATURE_COLUMNS),
    *(_nan_case(c) for c in NUMERIC_COLUMNS),
    *(_inf_case(c, s) for c in NUMERIC_COLUMNS for s in (1, -1)),
    # --- out of range
    DataCase("latitude-outside-california", table(latitude=55.0), reject("latitude", "california"), cli=True),
    DataCase("longitude-sign-flipped", table(longitude=122.23456), reject("longitude", "california")),
    DataCase("households-zero-in-row-1", with_bad_second_row(households=0.0),
             reject("households", "row 1", "greater than 0"), cli=True),
    DataCase("negative-income", table(median_income=-1.5), reject("median_income", "negative"), cli=True),
    DataCase("negative-total_bedrooms", table(total_bedrooms=-3.0), reject("total_bedrooms", "negative")),
    DataCase("huge-total_rooms", table(total_rooms=1e300), ACCEPT),
    DataCase("empty-category", table(ocean_proximity=""), reject("ocean_proximity", "non-empty string"), cli=True),
    DataCase("long-category", table(ocean_proximity=MARKER + "x" * 100),
             reject("ocean_proximity", "row 0", "at most 100 characters")),
    DataCase("unseen-category", table(ocean_proximity="ON THE MOON"), ACCEPT, cli=True),
    # --- batch sizes
    DataCase("zero-rows", empty_table(), ACCEPT,
             # an empty records list carries no column names; V2 refuses empty batches by design
             expect={"records": reject("missing inputs"), "v2": reject("empty batch")}, cli=True),
)
CASES_BY_ID = {case.id: case for case in DATA_CASES}

# `mlflow models serve` gets every data case as dataframe_split; MLflow parses each other form its own
# way, so a representative handful goes out in those forms too: the cases whose outcome differs there
# (coercions, parse errors, what the form cannot express) plus a refusal by the contract and an
# accepted case in each.
OTHER_SERVE_FORMS: Mapping[str, Tuple[str, ...]] = {
    "records": ("missing-column-longitude", "extra-column", "string-in-numeric-column", "numeric-string",
                "null-longitude", "+inf-households", "households-zero-in-row-1", "zero-rows"),
    "inputs": ("int-for-double", "string-in-numeric-column", "boolean-in-numeric-column", "number-for-category",
               "null-ocean_proximity", "nan-median_income", "households-zero-in-row-1", "zero-rows"),
    "csv": ("missing-column-longitude", "duplicated-column-households", "string-in-numeric-column",
            "null-total_bedrooms", "nan-population", "-inf-latitude", "households-zero-in-row-1", "zero-rows"),
}  # fmt: skip
assert all(i in CASES_BY_ID for ids in OTHER_SERVE_FORMS.values() for i in ids)
assert all(c.outcome(f) is not None for f, ids in OTHER_SERVE_FORMS.items() for c in map(CASES_BY_ID.get, ids))


def serve_cases() -> list:
    """(form, case) pairs sent to `mlflow models serve`: every case as split, then the handful per form."""
    pairs = [("split", case) for case in DATA_CASES if case.outcome("split") is not None]
    return pairs + [(fmt, CASES_BY_ID[i]) for fmt, ids in OTHER_SERVE_FORMS.items() for i in ids]


# ------------------------------------------------------------------ encoders


def _dumps(obj) -> bytes:
    # allow_nan: NaN / Infinity literals are how Python and pandas clients send them
    return json.dumps(obj, allow_nan=True).encode()


def encode_split(data: Table) -> bytes:
    return _dumps({"dataframe_split": {"columns": list(data.columns), "data": [list(r) for r in data.rows]}})


def encode_records(data: Table) -> bytes:
    return _dumps({"dataframe_records": data.records()})


def encode_inputs(data: Table) -> bytes:
    return _dumps({"inputs": {c: data.column_values(c) for c in data.columns}})


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
    return _dumps({"inputs": inputs})


ENCODERS: Dict[str, Tuple[Callable[[Table], bytes], str]] = {
    "split": (encode_split, "application/json"),
    "records": (encode_records, "application/json"),
    "inputs": (encode_inputs, "application/json"),
    "csv": (encode_csv, "text/csv"),
    "v2": (encode_v2, "application/json"),
}


# ------------------------------------------------------------------ format cases (raw requests)


@dataclass(frozen=True)
class RawCase:
    id: str
    body: Callable[[], bytes]
    outcome: Outcome
    content_type: Optional[str] = "application/json"
    path: Optional[str] = None  # default: the target's scoring endpoint
    mark: object = None


def _fifty_mb_category(encoder: Callable[[Table], bytes]) -> Callable[[], bytes]:
    """One valid row whose ocean_proximity is a 50 MB string (the contract's length rule refuses it)."""
    return lambda: encoder(table(ocean_proximity=MARKER + "x" * FIFTY_MB))


FIFTY_MB_REFUSED = reject("ocean_proximity", "row 0", "at most 100 characters")


SERVE_RAW: Tuple[RawCase, ...] = (
    RawCase("malformed-json", lambda: b'{"dataframe_split": {"columns": ["' + MARKER.encode() + b'", ',
            reject("valid JSON"), mark=known(Echo, MLFLOW_JSON_ECHO)),
    RawCase("invalid-utf8", lambda: b'{"dataframe_split": "\xff\xfe' + MARKER.encode() + b'"}',
            reject("valid JSON"), mark=known(Echo, MLFLOW_JSON_ECHO)),
    RawCase("json-top-level-list", lambda: _dumps([list(BASE.values())]), reject("received a list")),
    RawCase("json-no-format-key", lambda: _dumps({"rows": [BASE]}), reject("dataframe_split")),
    RawCase("json-two-format-keys", lambda: _dumps({"dataframe_records": [BASE], "inputs": {"a": [1]}}),
            reject("exactly one of")),
    RawCase("split-data-not-a-list", lambda: _dumps({"dataframe_split": {"columns": list(BASE), "data": MARKER}}),
            reject()),
    RawCase("wrong-content-type", lambda: encode_split(table()), reject("content type", status=415),
            content_type="text/plain"),
    RawCase("non-utf8-charset", lambda: encode_split(table()), reject("utf-8", status=415),
            content_type="application/json; charset=latin-1"),
    RawCase("missing-content-type", lambda: encode_split(table()), reject("content type", status=415),
            content_type=None, mark=known(ServerError, MLFLOW_NO_CONTENT_TYPE)),
    RawCase("csv-ragged-row", lambda: encode_csv(table()) + b"1,2,3,4,5,6,7,8,9,10," + MARKER.encode() + b"\n",
            reject("fields"), content_type="text/csv", mark=known(StackTrace, MLFLOW_CSV_TRACE)),
    RawCase("csv-empty-body", lambda: b"", reject("columns"), content_type="text/csv",
            mark=known(StackTrace, MLFLOW_CSV_TRACE)),
    RawCase("unknown-endpoint", lambda: encode_v2(table()), reject("not found", status=404),
            path=f"/v2/models/{V2_MODEL}/infer"),
    RawCase("50mb-category-string", _fifty_mb_category(encode_split), FIFTY_MB_REFUSED),
)


def _v2_inputs(**overrides) -> list:
    """The V2 inputs of one BASE row, with some inputs replaced by ``overrides[name]`` (None drops it)."""
    inputs = json.loads(encode_v2(table()))["inputs"]
    out = []
    for inp in inputs:
        if inp["name"] in overrides:
            if overrides[inp["name"]] is not None:
                out.append({**inp, **overrides[inp["name"]]})
        else:
            out.append(inp)
    return out


V2_RAW: Tuple[RawCase, ...] = (
    RawCase("malformed-json", lambda: b'{"inputs": [{"name": "' + MARKER.encode() + b'", ', reject("malformed JSON")),
    RawCase("not-an-inference-request", lambda: _dumps({"rows": [BASE]}), reject("inputs", "field required")),
    RawCase("inputs-not-a-list", lambda: _dumps({"inputs": MARKER}), reject("inputs")),
    # no binary-extension header: the body is JSON whatever its Content-Type says (Triton's rule)
    RawCase("wrong-content-type", lambda: encode_v2(table()), ACCEPT, content_type="text/plain"),
    RawCase("missing-content-type", lambda: encode_v2(table()), ACCEPT, content_type=None),
    RawCase("shape-length-mismatch", lambda: _dumps({"inputs": _v2_inputs(total_rooms={"shape": [3]})}),
            reject("total_rooms", "1 elements but shape [3]")),
    RawCase("inputs-of-different-lengths",
            lambda: _dumps({"inputs": _v2_inputs(total_rooms={"shape": [2], "data": [880.0, 881.0]})}),
            reject("different lengths")),
    RawCase("bad-rank", lambda: _dumps({"inputs": _v2_inputs(total_rooms={"shape": [1, 1, 1], "data": [[[880.0]]]})}),
            reject("total_rooms", "bad shape")),
    RawCase("negative-shape", lambda: _dumps({"inputs": _v2_inputs(total_rooms={"shape": [-1]})}),
            reject("total_rooms")),
    RawCase("shape-not-integers", lambda: _dumps({"inputs": _v2_inputs(total_rooms={"shape": [MARKER]})}),
            reject("shape")),
    RawCase("bytes-datatype-for-double", lambda: _dumps({"inputs": _v2_inputs(total_rooms={"datatype": "BYTES",
                                                                                           "data": [MARKER]})}),
            reject("total_rooms", "BYTES")),
    RawCase("fp64-datatype-for-string", lambda: _dumps({"inputs": _v2_inputs(ocean_proximity={"datatype": "FP64",
                                                                                             "data": [1.0]})}),
            reject("ocean_proximity", "FP64")),
    RawCase("unknown-datatype", lambda: _dumps({"inputs": _v2_inputs(total_rooms={"datatype": "FP128"})}),
            reject("total_rooms", "FP128")),
    RawCase("int-beyond-2^53", lambda: _dumps({"inputs": _v2_inputs(total_rooms={"datatype": "INT64",
                                                                                "data": [2**60]})}),
            reject("total_rooms", "exceeds")),
    RawCase("missing-required-input", lambda: _dumps({"inputs": _v2_inputs(households=None)}),
            reject("missing required input 'households'")),
    RawCase("unknown-model", lambda: encode_v2(table()), reject("nope", status=404), path="/v2/models/nope/infer"),
    RawCase("v1-malformed-json", lambda: b'{"instances": [{"a": "' + MARKER.encode() + b'"', reject("request format"),
            path=f"/v1/models/{V2_MODEL}:predict"),
    RawCase("50mb-category-string", _fifty_mb_category(encode_v2), FIFTY_MB_REFUSED),
)


# ------------------------------------------------------------------ the CLI cases


@dataclass(frozen=True)
class CliCase:
    id: str
    content: Callable[["CliContext"], bytes]
    outcome: Outcome
    content_type: str = "json"
    model: Optional[str] = None  # default: the module's model directory
    mark: object = None


@dataclass
class CliContext:
    big_csv: bytes = b""


def _cli_data_case(case: DataCase) -> CliCase:
    return CliCase(f"data-{case.id}", lambda _ctx, c=case: encode_split(c.data), case.outcome("cli"),
                   mark=case.marks.get("cli"))


CLI_CASES: Tuple[CliCase, ...] = (
    *(_cli_data_case(c) for c in DATA_CASES if c.cli),
    CliCase("malformed-json", lambda _ctx: b'{"dataframe_split": {"columns": ["' + MARKER.encode() + b'", ',
            reject("valid JSON"), mark=known(Vague, CLI_JSON_ECHO)),
    CliCase("wrong-content-type", lambda _ctx: encode_split(table()), reject("content type must be one of"),
            content_type="xml"),
    CliCase("csv-ragged-row", lambda _ctx: encode_csv(table()) + b"1,2,3,4,5,6,7,8,9,10," + MARKER.encode() + b"\n",
            reject("fields"), content_type="csv", mark=known(Vague, CLI_CSV_LAST_LINE)),
    CliCase("unknown-model", lambda _ctx: encode_split(table()), reject("nope"), model="nope-no-such-model"),
    CliCase("100k-rows-csv", lambda ctx: ctx.big_csv, ACCEPT, content_type="csv"),
    CliCase("50mb-category-string", lambda _ctx: _fifty_mb_category(encode_split)(), FIFTY_MB_REFUSED),
)
assert len(CLI_CASES) == 25, len(CLI_CASES)


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    predictions: Optional[list]
    seconds: float


class CliRunner:
    """Runs CLI cases, each a fresh `mlflow models predict` process; ``stop()`` kills the ones still running."""

    def __init__(self, model_dir: Path, workdir: Path, ctx: CliContext, env: Mapping[str, str]):
        self.model_dir, self.workdir, self.ctx, self.env = model_dir, workdir, ctx, dict(env)
        self._running: Dict[int, subprocess.Popen] = {}
        self._stopped = False

    def run(self, case: CliCase) -> CliResult:
        if self._stopped:
            raise RuntimeError("CLI runner stopped")
        case_dir = self.workdir / case.id
        case_dir.mkdir(parents=True, exist_ok=True)
        input_path, output_path = case_dir / f"input.{case.content_type}", case_dir / "out.json"
        stdout_path, stderr_path = case_dir / "stdout", case_dir / "stderr"
        input_path.write_bytes(case.content(self.ctx))
        argv = [str(VENV_BIN / "mlflow"), "models", "predict", "-m", case.model or str(self.model_dir),
                "-i", str(input_path), "-o", str(output_path), "-t", case.content_type, "--env-manager", "local"]  # fmt: skip
        started = time.monotonic()
        try:
            returncode = self._run(argv, case_dir, stdout_path, stderr_path)
        finally:
            input_path.unlink(missing_ok=True)  # the 50 MB file
        predictions = None
        if returncode == 0 and output_path.exists():
            predictions = [row[TARGET] for row in json.loads(output_path.read_text())["predictions"]]
        return CliResult(returncode, stdout_path.read_text(errors="replace"), stderr_path.read_text(errors="replace"),
                         predictions, time.monotonic() - started)  # fmt: skip

    def _run(self, argv: Sequence[str], cwd: Path, stdout_path: Path, stderr_path: Path) -> int:
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(list(argv), env=self.env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    cwd=cwd, start_new_session=True)  # fmt: skip
        self._running[proc.pid] = proc
        try:
            return proc.wait(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop_process_group(proc)
            raise
        finally:
            self._running.pop(proc.pid, None)

    def stop(self) -> None:
        self._stopped = True
        for proc in list(self._running.values()):
            stop_process_group(proc, grace=5)


# ------------------------------------------------------------------ fixtures: one model, two servers, the CLI pool

@pytest.fixture(scope="module")
def fitted(split):
    train_frame, _ = split
    return fit_model(train_frame, TrainingConfig(n_estimators=N_ESTIMATORS, cv_folds=0))


@pytest.fixture(scope="module")
def model_dir(fitted, split, tmp_path_factory) -> Path:
    """The real artifact, logged with model.packaging into a temp store and copied to a local directory."""
    root = tmp_path_factory.mktemp("bad-input")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    try:
        experiment = MlflowClient().create_experiment("bad-input", artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = packaging.log_model(fitted, packaging.input_example(split[0]))
        return Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "model")))
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def expected(fitted) -> Callable[[Table], np.ndarray]:
    """In-process predictions for what a correct server hands the model (extra columns dropped)."""

    def predict(data: Table) -> np.ndarray:
        frame = frame_for_reference(data)
        frame = frame[[c for c in frame.columns if c in FEATURE_COLUMNS]]
        return fitted.predict(None, frame)[TARGET].to_numpy()

    return predict


@pytest.fixture(scope="module")
def big_batch(split) -> pd.DataFrame:
    """100,000 real rows (the test split repeated; some total_bedrooms are missing)."""
    test = split[1][list(FEATURE_COLUMNS)].reset_index(drop=True)
    test[CATEGORICAL_COLUMN] = test[CATEGORICAL_COLUMN].astype(str)
    return pd.concat([test] * -(-BIG_ROWS // len(test)), ignore_index=True).head(BIG_ROWS)


@pytest.fixture(scope="module")
def big_expected(fitted, split, big_batch) -> np.ndarray:
    test = big_batch.head(len(split[1]))
    once = fitted.predict(None, test)[TARGET].to_numpy()
    return np.resize(once, BIG_ROWS)


def _selected_cli_cases(request) -> list:
    """The CLI cases this session will run (after -k / node-id selection)."""
    return [
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_mlflow_models_predict" and item.module is request.module
    ]


@pytest.fixture(scope="module")
def cli_runs(request, model_dir, big_batch, tmp_path_factory) -> Dict[str, "Future[CliResult]"]:
    """The selected CLI cases, CLI_WORKERS processes at a time, in the background; tests wait for their own."""
    workdir = tmp_path_factory.mktemp("cli")
    ctx = CliContext(big_batch.to_csv(index=False).encode())
    runner = CliRunner(model_dir, workdir, ctx, server_env())
    slow_first = sorted(_selected_cli_cases(request), key=lambda c: not c.id.startswith(("100k", "50mb")))
    pool = ThreadPoolExecutor(CLI_WORKERS, thread_name_prefix="mlflow-models-predict")
    try:
        yield {case.id: pool.submit(runner.run, case) for case in slow_first}
    finally:
        runner.stop()  # kills what still runs when the module ends early
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module", autouse=True)
def _start_early(request):
    """Start the CLI cases in the background, so they overlap the servers' start and the HTTP cases."""
    if _selected_cli_cases(request):
        request.getfixturevalue("cli_runs")


@pytest.fixture(scope="module")
def servers(model_dir) -> Dict[str, str]:
    """`mlflow models serve` and the V2 runtime on the same artifact, started in parallel; base URLs."""
    env = server_env()
    serve_port, v2_port = free_port(), free_port()
    managers = {
        "serve": running_server(
            ["mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(serve_port)],
            serve_port, f"http://127.0.0.1:{serve_port}/ping", env=env, timeout=240,
        ),
        "v2": running_server(
            [sys.executable, "-m", "mlflowserver", f"--model_name={V2_MODEL}", f"--model_dir={model_dir}",
             f"--http_port={v2_port}"],
            v2_port, f"http://127.0.0.1:{v2_port}/v2/health/ready", env=env, timeout=240, cwd=str(REPO),
        ),
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(len(managers)) as pool:
            entering = {name: pool.submit(manager.__enter__) for name, manager in managers.items()}
        started, failure = {}, None
        for name, future in entering.items():
            try:
                started[name] = future.result().base_url
                stack.push(managers[name].__exit__)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the other server is stopped
                failure = failure or exc
        if failure is not None:
            raise failure
        yield started


# ------------------------------------------------------------------ judging one answer


def _mentions_missing(outcome: Outcome, message: str) -> list:
    return [m for m in outcome.mentions if m.lower() not in message.lower()]


def _short(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def raise_deviations(deviations: Sequence[Tuple[type, str]]) -> None:
    if deviations:
        raise deviations[0][0]("; ".join(detail for _, detail in deviations))


def judge_http(outcome: Outcome, response: requests.Response, message: str, predictions, expected_values) -> None:
    status = response.status_code
    if status >= 500:
        raise ServerError(f"HTTP {status}: {_short(message)}")
    if outcome.accepted:
        assert status == 200, f"expected predictions, got HTTP {status}: {_short(message)}"
        assert len(predictions) == len(expected_values)
        np.testing.assert_allclose(predictions, expected_values, rtol=1e-9, atol=1e-6)
        return
    if status == 200:
        raise Accepted(f"answered 200 with {len(predictions)} prediction(s) instead of refusing")
    assert status == outcome.status, f"expected HTTP {outcome.status}, got {status}: {_short(message)}"
    deviations = []
    if missing := _mentions_missing(outcome, message):
        deviations.append((Vague, f"message does not mention {missing}: {_short(message)!r}"))
    text = response.text
    if any(sign in text for sign in TRACE_SIGNS):
        deviations.append((StackTrace, "the error body carries a stack trace"))
    if echoed := [f for f in FINGERPRINTS if f in text]:
        deviations.append((Echo, f"the error body echoes payload values {echoed}"))
    raise_deviations(deviations)


def post(url: str, body: bytes, content_type: Optional[str]) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(url, data=body, headers=headers, timeout=HTTP_TIMEOUT)


def serve_message(response: requests.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        body = response.json()
        return str(body.get("message", body))
    return response.text


def serve_predictions(response: requests.Response):
    if response.status_code != 200:
        return None
    return [row[TARGET] for row in response.json()["predictions"]]


def v2_message(response: requests.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
        return str(response.json()["error"])
    return response.text


def v2_predictions(response: requests.Response):
    if response.status_code != 200:
        return None
    (output,) = [o for o in response.json()["outputs"] if o["name"] == TARGET]
    return output["data"]


def assert_serve_still_answers(base_url: str, fmt: str, expected) -> None:
    encode, content_type = ENCODERS[fmt if fmt in ENCODERS else "split"]
    response = post(f"{base_url}/invocations", encode(table()), content_type)
    assert response.status_code == 200, f"the next valid request failed: HTTP {response.status_code}"
    np.testing.assert_allclose(serve_predictions(response), expected(table()), rtol=1e-9, atol=1e-6)


def assert_v2_still_answers(base_url: str, expected) -> None:
    response = post(f"{base_url}/v2/models/{V2_MODEL}/infer", encode_v2(table()), "application/json")
    assert response.status_code == 200, f"the next valid request failed: HTTP {response.status_code}"
    np.testing.assert_allclose(v2_predictions(response), expected(table()), rtol=1e-9, atol=1e-6)


# ------------------------------------------------------------------ mlflow models serve


def _params(pairs):
    return [pytest.param(*values, id=id_, marks=[mark] if mark else []) for id_, mark, values in pairs]


SERVE_DATA_PARAMS = _params((f"{fmt}-{case.id}", case.marks.get(fmt), (fmt, case)) for fmt, case in serve_cases())


@pytest.mark.parametrize("fmt,case", SERVE_DATA_PARAMS)
def test_mlflow_serve_data(servers, expected, fmt: str, case: DataCase):
    encode, content_type = ENCODERS[fmt]
    outcome = case.outcome(fmt)
    response = post(f"{servers['serve']}/invocations", encode(case.data), content_type)
    assert_serve_still_answers(servers["serve"], fmt, expected)
    judge_http(outcome, response, serve_message(response), serve_predictions(response),
               expected(case.data) if outcome.accepted else None)


@pytest.mark.parametrize("case", _params((c.id, c.mark, (c,)) for c in SERVE_RAW))
def test_mlflow_serve_format(servers, expected, case: RawCase):
    response = post(servers["serve"] + (case.path or "/invocations"), case.body(), case.content_type)
    assert_serve_still_answers(servers["serve"], "split", expected)
    judge_http(case.outcome, response, serve_message(response), serve_predictions(response), None)


# ------------------------------------------------------------------ the KServe V2 runtime


@pytest.mark.parametrize(
    "case",
    _params((c.id, c.marks.get("v2"), (c,)) for c in DATA_CASES if c.outcome("v2") is not None),
)
def test_v2_runtime_data(servers, expected, case: DataCase):
    outcome = case.outcome("v2")
    response = post(f"{servers['v2']}/v2/models/{V2_MODEL}/infer", encode_v2(case.data), "application/json")
    assert_v2_still_answers(servers["v2"], expected)
    judge_http(outcome, response, v2_message(response), v2_predictions(response),
               expected(case.data) if outcome.accepted else None)


@pytest.mark.parametrize("case", _params((c.id, c.mark, (c,)) for c in V2_RAW))
def test_v2_runtime_format(servers, expected, case: RawCase):
    path = case.path or f"/v2/models/{V2_MODEL}/infer"
    response = post(servers["v2"] + path, case.body(), case.content_type)
    assert_v2_still_answers(servers["v2"], expected)
    judge_http(case.outcome, response, v2_message(response), v2_predictions(response),
               expected(table()) if case.outcome.accepted else None)


# ------------------------------------------------------------------ 100,000 rows: one correct answer per row


def _big_body(target: str, big: pd.DataFrame) -> Tuple[str, bytes, str]:
    if target == "split":
        return "/invocations", b'{"dataframe_split": ' + big.to_json(orient="split", index=False).encode() + b"}", \
            "application/json"  # fmt: skip
    inputs = [
        {"name": c, "shape": [len(big)], "datatype": "BYTES" if c == CATEGORICAL_COLUMN else "FP64",
         "data": json.loads(big[c].to_json(orient="values"))}
        for c in big.columns
    ]  # fmt: skip
    return f"/v2/models/{V2_MODEL}/infer", _dumps({"inputs": inputs}), "application/json"


@pytest.mark.parametrize("target", ["split", "v2"])
def test_100k_rows_get_100k_correct_predictions(servers, expected, big_batch, big_expected, target: str):
    path, body, content_type = _big_body(target, big_batch)
    base_url = servers["v2" if target == "v2" else "serve"]
    response = post(base_url + path, body, content_type)
    assert response.status_code == 200, _short(response.text)
    predictions = v2_predictions(response) if target == "v2" else serve_predictions(response)
    assert len(predictions) == BIG_ROWS
    np.testing.assert_allclose(predictions, big_expected, rtol=1e-9, atol=1e-6)
    if target == "v2":
        assert_v2_still_answers(base_url, expected)
    else:
        assert_serve_still_answers(base_url, target, expected)


# ------------------------------------------------------------------ mlflow models predict


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("case", _params((c.id, c.mark, (c,)) for c in CLI_CASES))
def test_mlflow_models_predict(cli_runs, expected, big_expected, case: CliCase):
    result = cli_runs[case.id].result(timeout=CLI_TIMEOUT * 2)
    final = last_line(result.stderr)
    if case.outcome.accepted:
        assert result.returncode == 0, f"exit {result.returncode}: {_short(final)}"
        if case.id.startswith("100k"):
            values = big_expected
        else:
            (data_case,) = [c for c in DATA_CASES if f"data-{c.id}" == case.id]
            values = expected(data_case.data)
        assert len(result.predictions) == len(values)
        np.testing.assert_allclose(result.predictions, values, rtol=1e-9, atol=1e-6)
        return
    if result.returncode == 0:
        raise Accepted(f"exit 0 with {len(result.predictions or [])} prediction(s) instead of refusing")
    deviations = []
    if missing := _mentions_missing(case.outcome, final):
        deviations.append((Vague, f"the last stderr line does not mention {missing}: {_short(final)!r}"))
    if echoed := [f for f in FINGERPRINTS if f in result.stderr]:
        deviations.append((Echo, f"stderr echoes payload values {echoed}"))
    raise_deviations(deviations)
