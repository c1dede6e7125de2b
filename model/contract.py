"""The input contract every server inherits: the artifact checks its own input.

Rules (docs/codebase/input-contract.md): the nine raw columns must be present (extra
columns are ignored); numbers must be finite, and only ``NULLABLE_COLUMNS``
(``total_bedrooms``) may be missing (it is imputed); counts cannot be negative and ``total_rooms``,
``population`` and ``households`` must be positive (they are denominators); the block
must lie in California's bounding box; ``ocean_proximity`` must be a non-empty string
of at most 100 characters (a category training never saw encodes as no category). A broken rule raises an
``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which MLflow's scoring server and
the KServe runtime answer with 400, naming the column, the first offending row
(0-based position in the batch) and the rule — never the values sent.

Validation converts each column to a NumPy array once and hands those arrays on, so
the serving path does not pay for a second conversion in the feature transform.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema

# The nine input columns, in the order the signature lists them; the raw dataset is these
# plus its target (model.data.RAW_COLUMNS).
NUMERIC_COLUMNS = (
    "longitude",
    "latitude",
    "housing_median_age",
    "total_rooms",
    "total_bedrooms",
    "population",
    "households",
    "median_income",
)
CATEGORICAL_COLUMN = "ocean_proximity"
FEATURE_COLUMNS = (*NUMERIC_COLUMNS, CATEGORICAL_COLUMN)
# The one input that may be missing (null, or the column left out): the model imputes it.
NULLABLE_COLUMNS = frozenset({"total_bedrooms"})
# What every server advertises and enforces before the model's own rules run.
INPUT_SCHEMA = Schema(
    [ColSpec("double", column, required=column not in NULLABLE_COLUMNS) for column in NUMERIC_COLUMNS]
    + [ColSpec("string", CATEGORICAL_COLUMN)]
)

# California's bounding box, with a small margin around the census blocks' extent.
LATITUDE_RANGE = (32.0, 42.5)
LONGITUDE_RANGE = (-125.0, -114.0)
# Categories are a few words; a longer string is garbage (or a 50 MB attack), not a place.
MAX_CATEGORY_LENGTH = 100
POSITIVE_COLUMNS = frozenset({"total_rooms", "population", "households"})
NON_NEGATIVE_COLUMNS = frozenset({"housing_median_age", "total_bedrooms", "median_income"})
BOUNDED_COLUMNS = {"latitude": LATITUDE_RANGE, "longitude": LONGITUDE_RANGE}
NOT_A_NUMBER = "must be a number"


@dataclass(frozen=True)
class Violation:
    """One broken rule: the column, the rule, and the rows breaking it.

    ``rows`` is a boolean mask over the batch's rows, or ``None`` when the column as a
    whole is wrong (missing, duplicated), which no single row can be blamed for.
    """

    column: str
    rule: str
    rows: np.ndarray | None = None

    def error(self) -> InputContractError:
        if self.rows is None:
            return InputContractError(self.column, None, self.rule)
        broken = np.flatnonzero(self.rows)
        return InputContractError(self.column, int(broken[0]), self.rule, len(broken))


class CallerError(MlflowException):
    """A request the caller got wrong (``INVALID_PARAMETER_VALUE``: HTTP 400 from every server),
    with a message fixed once set.

    MLflow's scoring server rewrites a model's error message as "Failed to predict data
    '<the whole input frame>'. Error: …" before answering (pyfunc/scoring_server,
    invocations()), which would echo the caller's rows back. The message is fixed once
    set, so every server answers with exactly the model's words.
    """

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


class InputContractError(CallerError):
    """A request broke the input contract; the caller's fault (HTTP 400).

    ``column``, ``row`` (0-based position in the batch, ``None`` for the whole column)
    and ``rule`` say what broke, for callers that report it their own way.
    """

    def __init__(self, column: str, row: int | None, rule: str, n_rows: int = 1):
        self.column, self.row, self.rule = column, row, rule
        where = f"column '{column}'" if row is None else f"column '{column}', row {row}"
        more = f" ({n_rows} rows break it)" if n_rows > 1 else ""
        super().__init__(f"invalid input: {where}: {rule}{more}")


def validate_input(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The input's columns as arrays (numbers as float64, NaN where a nullable column is
    missing; ``ocean_proximity`` as objects), or :class:`InputContractError`
    for the first rule ``frame`` breaks."""
    columns: dict[str, np.ndarray] = {}
    for violation in _violations(frame, columns, stop_early=True):
        raise violation.error()
    return columns


def find_violations(frame: pd.DataFrame) -> list[Violation]:
    """Every rule ``frame`` breaks, each with the rows that break it (for routing bad rows
    aside); column-level violations come first and stop the search."""
    return list(_violations(frame, {}, stop_early=False))


def _violations(frame, columns: dict[str, np.ndarray], stop_early: bool) -> Iterator[Violation]:
    """Yield what ``frame`` breaks, filling ``columns`` with the converted arrays on the way."""
    if not isinstance(frame, pd.DataFrame):
        yield Violation("*", f"expected a table with named columns, got {type(frame).__name__}")
        return
    missing = [
        c
        for c in (*NUMERIC_COLUMNS, CATEGORICAL_COLUMN)
        if c not in frame.columns and c not in NULLABLE_COLUMNS
    ]
    if missing:
        yield Violation(missing[0], "required column is missing")
        return
    duplicated = frame.columns.duplicated()
    if duplicated.any():
        yield Violation(str(frame.columns[duplicated][0]), "column given more than once")
        return
    position = {name: i for i, name in enumerate(frame.columns)}
    not_numbers = {}
    for column in NUMERIC_COLUMNS:
        # An optional column left out is missing on every row.
        if column not in position:
            columns[column] = np.full(len(frame), np.nan)
            continue
        stored = _stored_values(frame, position[column])
        if isinstance(stored, np.ndarray) and stored.dtype == np.float64:  # what every server hands over
            columns[column] = stored
        else:
            columns[column] = yield from _numeric_column(column, frame[column], not_numbers)
    # One vectorised pass over all numeric columns decides the common case (no rule
    # broken); only a broken batch pays for the column-by-column search.
    if not stop_early or _breaks_a_numeric_rule(columns):
        for column in NUMERIC_COLUMNS:
            # A row already blamed for holding no number is not blamed again for missing one.
            missing_ok = not_numbers.get(column)
            yield from _numeric_rules(column, columns[column], missing_ok)
    columns[CATEGORICAL_COLUMN] = categories = np.asarray(
        _stored_values(frame, position[CATEGORICAL_COLUMN]), dtype=object
    )
    if not all(isinstance(v, str) and v.strip() for v in categories):
        is_text = np.fromiter(
            (isinstance(v, str) and v.strip() != "" for v in categories), bool, len(categories)
        )
        yield Violation(CATEGORICAL_COLUMN, "must be a non-empty string", ~is_text)
    if not all(len(v) <= MAX_CATEGORY_LENGTH for v in categories if isinstance(v, str)):
        too_long = np.fromiter(
            (isinstance(v, str) and len(v) > MAX_CATEGORY_LENGTH for v in categories), bool
        )
        yield Violation(CATEGORICAL_COLUMN, f"must be at most {MAX_CATEGORY_LENGTH} characters", too_long)


def _stored_values(frame: pd.DataFrame, position: int):
    """The array pandas stores for the column at ``position``, without building a Series.

    Every public accessor of one column (``frame[name]``, ``iloc``, ``.array``) builds a
    Series first, which on the fresh frame every server hands the model costs more than
    all the rules' checks together; ``frame.to_numpy()`` is cheap but turns mixed columns
    into one object array. ``DataFrame._get_column_array`` is pandas' own internal
    accessor: pinned in the lock, used here only, checked against ``frame[name]`` for every
    dtype a server hands over (tests/code/test_contract.py); docs/codebase/overview.md
    lists it among the private APIs the project uses.
    """
    return frame._get_column_array(position)


_REQUIRED = np.array([column not in NULLABLE_COLUMNS for column in NUMERIC_COLUMNS])
_LOWER_BOUND = np.array(
    [
        BOUNDED_COLUMNS[c][0]
        if c in BOUNDED_COLUMNS
        else 0.0
        if c in NON_NEGATIVE_COLUMNS | POSITIVE_COLUMNS
        else -np.inf
        for c in NUMERIC_COLUMNS
    ]
)
_UPPER_BOUND = np.array([BOUNDED_COLUMNS[c][1] if c in BOUNDED_COLUMNS else np.inf for c in NUMERIC_COLUMNS])
_STRICTLY_POSITIVE = np.array([column in POSITIVE_COLUMNS for column in NUMERIC_COLUMNS])


def _breaks_a_numeric_rule(columns: dict[str, np.ndarray]) -> bool:
    values = np.column_stack([columns[column] for column in NUMERIC_COLUMNS])
    missing = np.isnan(values)
    with np.errstate(invalid="ignore"):
        in_range = (
            np.isfinite(values)
            & (values >= _LOWER_BOUND)
            & (values <= _UPPER_BOUND)
            & ~((values == 0) & _STRICTLY_POSITIVE)
        )
    # Missing values fail every comparison: they are fine exactly where allowed.
    return not (in_range | (missing & ~_REQUIRED)).all()


def _numeric_column(column: str, series: pd.Series, not_numbers: dict):
    """Generator returning the column as float64 (NaN where missing or not a number),
    after yielding a violation for the rows that hold something other than a number
    (recorded in ``not_numbers``)."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=float, na_value=np.nan)
    values = series.to_numpy(dtype=object)
    is_missing = pd.isna(values)
    is_number = np.fromiter((_is_number(v) for v in values), bool, len(values))
    not_a_number = ~(is_missing | is_number)
    if not_a_number.any():
        not_numbers[column] = not_a_number
        yield Violation(column, NOT_A_NUMBER, not_a_number)
    return np.where(is_number, values, np.nan).astype(float)


def _numeric_rules(column: str, values: np.ndarray, missing_ok: np.ndarray | None) -> Iterator[Violation]:
    missing = np.isnan(values) if missing_ok is None else np.isnan(values) & ~missing_ok
    if column not in NULLABLE_COLUMNS and missing.any():
        yield Violation(column, "must not be missing", missing)
    infinite = np.isinf(values)
    if infinite.any():
        yield Violation(column, "must be finite", infinite)
    # NaN compares False, so missing values break none of the range rules below.
    with np.errstate(invalid="ignore"):
        if column in POSITIVE_COLUMNS and (broken := values <= 0).any():
            yield Violation(column, "must be greater than 0", broken)
        if column in NON_NEGATIVE_COLUMNS and (broken := values < 0).any():
            yield Violation(column, "must not be negative", broken)
        if column in BOUNDED_COLUMNS:
            low, high = BOUNDED_COLUMNS[column]
            if (broken := (values < low) | (values > high)).any():
                yield Violation(column, f"must lie in California, between {low} and {high}", broken)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
