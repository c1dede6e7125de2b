"""The bad-input matrix as data: every case, what each target must do with it, and MLflow's known
deviations with their reasons (in the terms of ``expectations``). The tests (one file per target)
and the tables in docs/reliability.md (``make docs``) are both generated from this module.

* ``DATA_CASES``: what is wrong with the *data*, sent to every target in its own encoding;
  ``OTHER_SERVE_FORMS``: the handful also sent to `mlflow models serve` as records, inputs
  and CSV; ``DataCase.cli``: also one of the `mlflow models predict` cases.
* ``SERVE_RAW``, ``V2_RAW``, ``CLI_RAW``: *format* cases per target (malformed JSON, content
  types, V2 shapes, unknown model, 50 MB bodies).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from model.data import CATEGORICAL_COLUMN, FEATURE_COLUMNS, NUMERIC_COLUMNS
from testbed.bad_input.bodies import (
    BASE,
    DROP,
    MARKER,
    Table,
    dumps,
    duplicated_column,
    empty_table,
    encode_csv,
    encode_split,
    encode_v2,
    table,
    with_bad_second_row,
)
from testbed.bad_input.expectations import (
    ACCEPT,
    Accepted,
    Echo,
    Known,
    Outcome,
    ServerError,
    StackTrace,
    Vague,
    reject,
)

V2_MODEL = "california-housing"
FIFTY_MB = 50 * 1024 * 1024
BIG_ROWS = 100_000

# The targets: `mlflow models serve` in each request form, the V2 runtime, the CLI.
MLFLOW_JSON = ("split", "records", "inputs")
SERVE_FORMS = (*MLFLOW_JSON, "csv")
TARGETS = (*SERVE_FORMS, "v2", "cli")


# ------------------------------------------------------------------ MLflow's known deviations, their reasons

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


def on(targets: tuple[str, ...], known: Known) -> dict[str, Known]:
    return {target: known for target in targets}


# ------------------------------------------------------------------ data cases


@dataclass(frozen=True)
class DataCase:
    """A data problem, encoded for every target.

    ``expect`` holds per target (``split``, ``records``, ``inputs``, ``csv``, ``v2``, ``cli``)
    outcomes that differ from ``default``; a target mapped to ``None`` does not apply (the
    form cannot express the case). ``known``: per-target known deviations. ``family``: the
    cases generated per column for one problem (``null-``, ``nan-``, ``+inf-``, ``-inf-``).
    """

    id: str
    data: Table
    default: Outcome
    expect: Mapping[str, Outcome | None] = field(default_factory=dict)
    known: Mapping[str, Known] = field(default_factory=dict)
    cli: bool = False  # also one of the CLI cases (each costs a process start)
    family: str = ""

    def outcome(self, target: str) -> Outcome | None:
        return self.expect.get(target, self.default)


def _null_case(column: str) -> DataCase:
    if column == "total_bedrooms":
        return DataCase(f"null-{column}", table(total_bedrooms=None), ACCEPT, cli=True, family="null-")
    if column == CATEGORICAL_COLUMN:
        return DataCase(
            f"null-{column}",
            table(ocean_proximity=None),
            reject(column, "non-empty string"),
            expect={"v2": reject(column, "null")},
            known={"inputs": Known(Accepted, MLFLOW_INPUTS_STR.format("None -> 'None'"))},
            cli=True,
            family="null-",
        )
    # V2: null in a column the signature marks required is the runtime's 400 (a number is expected)
    return DataCase(
        f"null-{column}",
        table(**{column: None}),
        reject(column, "row 0", "must not be missing"),
        expect={"v2": reject(column, "row 0", "null")},
        cli=column == "longitude",
        family="null-",
    )


def _nan_case(column: str) -> DataCase:
    if column == "total_bedrooms":
        return DataCase(f"nan-{column}", table(total_bedrooms=math.nan), ACCEPT, family="nan-")
    return DataCase(
        f"nan-{column}",
        table(**{column: math.nan}),
        reject(column, "row 0", "must not be missing"),
        cli=column == "households",
        family="nan-",
    )


def _inf_case(column: str, sign: int) -> DataCase:
    prefix = f"{'+' if sign > 0 else '-'}inf-"
    return DataCase(
        f"{prefix}{column}",
        table(**{column: sign * math.inf}),
        reject(column, "row 0", "must be finite"),
        cli=(column, sign) in (("total_rooms", 1), ("median_income", -1)),
        family=prefix,
    )


# One case per line: the table reads as the matrix it is.
DATA_CASES: tuple[DataCase, ...] = (
    # --- columns
    DataCase("missing-column-longitude", table(longitude=DROP), reject("longitude", "missing"),
             known=on((*SERVE_FORMS, "cli"), Known(Echo, MLFLOW_SCHEMA_ECHO)), cli=True),
    DataCase("missing-optional-total_bedrooms", table(total_bedrooms=DROP), ACCEPT),
    DataCase("extra-column", table(extra={"block_id": MARKER}), ACCEPT,
             expect={"v2": reject("unknown input 'block_id'")}, cli=True),
    DataCase("duplicated-column-households", duplicated_column(), reject("households", "more than once"),
             expect={"records": None, "inputs": None},
             known={"split": Known(Vague, MLFLOW_DUPLICATE), "cli": Known(Vague, MLFLOW_DUPLICATE),
                    "csv": Known(Accepted, PANDAS_CSV_DUPLICATE)}, cli=True),
    # --- types
    DataCase("string-in-numeric-column", table(total_rooms=MARKER), reject("total_rooms"),
             expect={"v2": reject("total_rooms", "expected numbers")},
             known={"split": Known(Echo, MLFLOW_CONVERT), "records": Known(Echo, MLFLOW_CONVERT),
                    "cli": Known(Echo, MLFLOW_CONVERT),
                    "inputs": Known(Vague, MLFLOW_INPUTS_CONVERT), "csv": Known(Vague, MLFLOW_CSV_CONVERT)},
             cli=True),
    DataCase("numeric-string", table(total_rooms="880"), reject("total_rooms"),
             expect={"csv": None, "v2": reject("total_rooms", "expected numbers")},
             known=on((*MLFLOW_JSON, "cli"), Known(Accepted, MLFLOW_COERCES)), cli=True),
    DataCase("boolean-in-numeric-column", table(total_rooms=True), reject("total_rooms"),
             expect={"csv": None, "v2": reject("total_rooms", "expected numbers")},
             known=on(MLFLOW_JSON, Known(Accepted, MLFLOW_COERCES))),
    DataCase("int-for-double", table(total_rooms=880, population=322, households=126), ACCEPT, cli=True),
    DataCase("number-for-category", table(ocean_proximity=5), reject("ocean_proximity", "non-empty string"),
             expect={"csv": None, "v2": reject("ocean_proximity")},
             known={"inputs": Known(Accepted, MLFLOW_INPUTS_STR.format("5 -> '5'"))}, cli=True),
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
)  # fmt: skip
CASES_BY_ID = {case.id: case for case in DATA_CASES}

# `mlflow models serve` gets every data case as dataframe_split; MLflow parses each other form its own
# way, so a representative handful goes out in those forms too: the cases whose outcome differs there
# (coercions, parse errors, what the form cannot express) plus a refusal by the contract and an
# accepted case in each.
OTHER_SERVE_FORMS: Mapping[str, tuple[str, ...]] = {
    "records": ("missing-column-longitude", "extra-column", "string-in-numeric-column", "numeric-string",
                "null-longitude", "+inf-households", "households-zero-in-row-1", "zero-rows"),
    "inputs": ("int-for-double", "string-in-numeric-column", "boolean-in-numeric-column", "number-for-category",
               "null-ocean_proximity", "nan-median_income", "households-zero-in-row-1", "zero-rows"),
    "csv": ("missing-column-longitude", "duplicated-column-households", "string-in-numeric-column",
            "null-total_bedrooms", "nan-population", "-inf-latitude", "households-zero-in-row-1", "zero-rows"),
}  # fmt: skip


def sent(case: DataCase, target: str) -> bool:
    """Whether ``case`` goes to ``target`` (a form that cannot express it is not sent)."""
    if case.outcome(target) is None:
        return False
    if target in OTHER_SERVE_FORMS:
        return case.id in OTHER_SERVE_FORMS[target]
    return target != "cli" or case.cli


def serve_cases() -> list[tuple[str, DataCase]]:
    """(form, case) pairs sent to `mlflow models serve`: every case as split, then the handful per form."""
    for form, ids in OTHER_SERVE_FORMS.items():
        for case_id in ids:
            if case_id not in CASES_BY_ID or CASES_BY_ID[case_id].outcome(form) is None:
                raise ValueError(f"OTHER_SERVE_FORMS[{form!r}]: {case_id!r} is no case {form} can express")
    return [(form, case) for form in SERVE_FORMS for case in DATA_CASES if sent(case, form)]


# ------------------------------------------------------------------ format cases (raw requests)


@dataclass(frozen=True)
class RawCase:
    """A request no encoder makes: its body, the outcome, and, for the CLI, the file's ``-t`` type."""

    id: str
    body: Callable[[], bytes]
    outcome: Outcome
    content_type: str | None = "application/json"
    path: str | None = None  # default: the target's scoring endpoint
    known: Known | None = None
    model: str | None = None  # the CLI's -m, when not the matrix's model
    why: str = ""  # for the docs table: why a surprising outcome is right


def _fifty_mb_category(encoder: Callable[[Table], bytes]) -> Callable[[], bytes]:
    """One valid row whose ocean_proximity is a 50 MB string (the contract's length rule refuses it)."""
    return lambda: encoder(table(ocean_proximity=MARKER + "x" * FIFTY_MB))


def _v2_inputs(**overrides) -> list[dict]:
    """The V2 inputs of one BASE row, with some inputs replaced by ``overrides[name]`` (None drops it)."""
    inputs = json.loads(encode_v2(table()))["inputs"]
    out = []
    for inp in inputs:
        if inp["name"] not in overrides:
            out.append(inp)
        elif overrides[inp["name"]] is not None:
            out.append({**inp, **overrides[inp["name"]]})
    return out


def _v2(**overrides) -> Callable[[], bytes]:
    return lambda: dumps({"inputs": _v2_inputs(**overrides)})


FIFTY_MB_REFUSED = reject("ocean_proximity", "row 0", "at most 100 characters")
MALFORMED_SPLIT = b'{"dataframe_split": {"columns": ["' + MARKER.encode() + b'", '
RAGGED_CSV = encode_csv(table()) + b"1,2,3,4,5,6,7,8,9,10," + MARKER.encode() + b"\n"

SERVE_RAW: tuple[RawCase, ...] = (
    RawCase("malformed-json", lambda: MALFORMED_SPLIT, reject("valid JSON"), known=Known(Echo, MLFLOW_JSON_ECHO)),
    RawCase("invalid-utf8", lambda: b'{"dataframe_split": "\xff\xfe' + MARKER.encode() + b'"}',
            reject("valid JSON"), known=Known(Echo, MLFLOW_JSON_ECHO)),
    RawCase("json-top-level-list", lambda: dumps([list(BASE.values())]), reject("received a list")),
    RawCase("json-no-format-key", lambda: dumps({"rows": [BASE]}), reject("dataframe_split")),
    RawCase("json-two-format-keys", lambda: dumps({"dataframe_records": [BASE], "inputs": {"a": [1]}}),
            reject("exactly one of")),
    RawCase("split-data-not-a-list", lambda: dumps({"dataframe_split": {"columns": list(BASE), "data": MARKER}}),
            reject()),
    RawCase("wrong-content-type", lambda: encode_split(table()), reject("content type", status=415),
            content_type="text/plain"),
    RawCase("non-utf8-charset", lambda: encode_split(table()), reject("utf-8", status=415),
            content_type="application/json; charset=latin-1"),
    RawCase("missing-content-type", lambda: encode_split(table()), reject("content type", status=415),
            content_type=None, known=Known(ServerError, MLFLOW_NO_CONTENT_TYPE)),
    RawCase("csv-ragged-row", lambda: RAGGED_CSV, reject("fields"), content_type="text/csv",
            known=Known(StackTrace, MLFLOW_CSV_TRACE)),
    RawCase("csv-empty-body", lambda: b"", reject("columns"), content_type="text/csv",
            known=Known(StackTrace, MLFLOW_CSV_TRACE)),
    RawCase("unknown-endpoint", lambda: encode_v2(table()), reject("not found", status=404),
            path=f"/v2/models/{V2_MODEL}/infer"),
    RawCase("50mb-category-string", _fifty_mb_category(encode_split), FIFTY_MB_REFUSED),
)  # fmt: skip

V2_RAW: tuple[RawCase, ...] = (
    RawCase("malformed-json", lambda: b'{"inputs": [{"name": "' + MARKER.encode() + b'", ', reject("malformed JSON")),
    RawCase("not-an-inference-request", lambda: dumps({"rows": [BASE]}), reject("inputs", "field required")),
    RawCase("inputs-not-a-list", lambda: dumps({"inputs": MARKER}), reject("inputs")),
    RawCase("wrong-content-type", lambda: encode_v2(table()), ACCEPT, content_type="text/plain",
            why="a body without the binary-extension header is JSON whatever its Content-Type, as in Triton: "
                "docs/codebase/kserve-runtime.md"),
    RawCase("missing-content-type", lambda: encode_v2(table()), ACCEPT, content_type=None,
            why="same: tritonclient.http's JSON mode and `curl -d` send no JSON Content-Type"),
    RawCase("shape-length-mismatch", _v2(total_rooms={"shape": [3]}), reject("total_rooms", "1 elements but shape [3]")),
    RawCase("inputs-of-different-lengths", _v2(total_rooms={"shape": [2], "data": [880.0, 881.0]}),
            reject("different lengths")),
    RawCase("bad-rank", _v2(total_rooms={"shape": [1, 1, 1], "data": [[[880.0]]]}), reject("total_rooms", "bad shape")),
    RawCase("negative-shape", _v2(total_rooms={"shape": [-1]}), reject("total_rooms")),
    RawCase("shape-not-integers", _v2(total_rooms={"shape": [MARKER]}), reject("shape")),
    RawCase("bytes-datatype-for-double", _v2(total_rooms={"datatype": "BYTES", "data": [MARKER]}),
            reject("total_rooms", "BYTES")),
    RawCase("fp64-datatype-for-string", _v2(ocean_proximity={"datatype": "FP64", "data": [1.0]}),
            reject("ocean_proximity", "FP64")),
    RawCase("unknown-datatype", _v2(total_rooms={"datatype": "FP128"}), reject("total_rooms", "FP128")),
    RawCase("int-beyond-2^53", _v2(total_rooms={"datatype": "INT64", "data": [2**60]}), reject("total_rooms", "exceeds")),
    RawCase("missing-required-input", _v2(households=None), reject("missing required input 'households'")),
    RawCase("unknown-model", lambda: encode_v2(table()), reject("nope", status=404), path="/v2/models/nope/infer"),
    RawCase("v1-malformed-json", lambda: b'{"instances": [{"a": "' + MARKER.encode() + b'"', reject("request format"),
            path=f"/v1/models/{V2_MODEL}:predict"),
    RawCase("50mb-category-string", _fifty_mb_category(encode_v2), FIFTY_MB_REFUSED),
)  # fmt: skip

# `mlflow models predict -t <content_type>`.
CLI_RAW: tuple[RawCase, ...] = (
    RawCase("malformed-json", lambda: MALFORMED_SPLIT, reject("valid JSON"), content_type="json",
            known=Known(Vague, CLI_JSON_ECHO)),
    RawCase("wrong-content-type", lambda: encode_split(table()), reject("content type must be one of"),
            content_type="xml"),
    RawCase("csv-ragged-row", lambda: RAGGED_CSV, reject("fields"), content_type="csv",
            known=Known(Vague, CLI_CSV_LAST_LINE)),
    RawCase("unknown-model", lambda: encode_split(table()), reject("nope"), content_type="json",
            model="nope-no-such-model"),
    RawCase("50mb-category-string", _fifty_mb_category(encode_split), FIFTY_MB_REFUSED, content_type="json"),
)  # fmt: skip
