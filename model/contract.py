"""The input contract every server inherits: the artifact checks its own input.

Rules (docs/codebase/input-contract.md): the nine raw columns must be present (extra
columns are ignored); numbers must be finite, with ``total_bedrooms`` the only one that
may be missing (it is imputed); counts cannot be negative and ``total_rooms``,
``population`` and ``households`` must be positive (they are denominators); the block
must lie in California's bounding box; ``ocean_proximity`` must be a non-empty string
(a category training never saw encodes as no category). A broken rule raises an
``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which MLflow's scoring server and
the KServe runtime answer with 400, naming the column, the first offending row
(0-based position in the batch) and the rule — never the values sent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from model.data import CATEGORICAL_COLUMN, NUMERIC_COLUMNS

# California's bounding box, with a small margin around the census blocks' extent.
LATITUDE_RANGE = (32.0, 42.5)
LONGITUDE_RANGE = (-125.0, -114.0)
NULLABLE_COLUMNS = frozenset({"total_bedrooms"})
POSITIVE_COLUMNS = frozenset({"total_rooms", "population", "households"})
NON_NEGATIVE_COLUMNS = frozenset({"housing_median_age", "total_bedrooms", "median_income"})
BOUNDED_COLUMNS = {"latitude": LATITUDE_RANGE, "longitude": LONGITUDE_RANGE}


class InputContractError(MlflowException):
    """A request broke the input contract; the caller's fault (HTTP 400)."""

    def __init__(self, column: str, row: int | None, rule: str, n_rows: int = 1):
        where = f"column '{column}'" if row is None else f"column '{column}', row {row}"
        more = f" ({n_rows} rows break it)" if n_rows > 1 else ""
        super().__init__(f"invalid input: {where}: {rule}{more}", error_code=INVALID_PARAMETER_VALUE)


def validate_input(frame: pd.DataFrame) -> None:
    """Raise :class:`InputContractError` for the first rule ``frame`` breaks."""
    if not isinstance(frame, pd.DataFrame):
        raise InputContractError("*", None, f"expected a table with named columns, got {type(frame).__name__}")
    for column in (*NUMERIC_COLUMNS, CATEGORICAL_COLUMN):
        if column not in frame.columns and column not in NULLABLE_COLUMNS:
            raise InputContractError(column, None, "required column is missing")
    if frame.columns.duplicated().any():
        raise InputContractError(str(frame.columns[frame.columns.duplicated()][0]), None, "column given more than once")
    for column in NUMERIC_COLUMNS:
        if column in frame.columns:
            _check_numeric(column, frame[column])
    _check_category(frame[CATEGORICAL_COLUMN])


def _check_numeric(column: str, series: pd.Series) -> None:
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        _fail_where(column, ~(series.isna() | series.map(_is_number)).to_numpy(), "must be a number")
    values = series.to_numpy(dtype=float, na_value=np.nan)
    missing = np.isnan(values)
    if column not in NULLABLE_COLUMNS:
        _fail_where(column, missing, "must not be missing")
    _fail_where(column, np.isinf(values), "must be finite")
    present = values[~missing]
    if column in POSITIVE_COLUMNS:
        _fail_where(column, _scatter(~missing, present <= 0), "must be greater than 0")
    if column in NON_NEGATIVE_COLUMNS:
        _fail_where(column, _scatter(~missing, present < 0), "must not be negative")
    if column in BOUNDED_COLUMNS:
        low, high = BOUNDED_COLUMNS[column]
        outside = _scatter(~missing, (present < low) | (present > high))
        _fail_where(column, outside, f"must lie in California, between {low} and {high}")


def _check_category(series: pd.Series) -> None:
    values = series.to_numpy(dtype=object)
    is_text = np.fromiter((isinstance(value, str) and value.strip() != "" for value in values), bool, len(values))
    _fail_where(CATEGORICAL_COLUMN, ~is_text, "must be a non-empty string")


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _scatter(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` computed on ``mask``'s rows, placed back on all rows (False elsewhere)."""
    full = np.zeros(len(mask), dtype=bool)
    full[mask] = values
    return full


def _first(broken) -> int:
    return int(np.flatnonzero(np.asarray(broken, dtype=bool))[0])


def _fail_where(column: str, broken: np.ndarray, rule: str) -> None:
    if broken.any():
        raise InputContractError(column, _first(broken), rule, int(broken.sum()))
