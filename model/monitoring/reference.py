"""What a version learned from, as monitoring compares against it: one small JSON per version.

``log_reference`` runs inside the training run that registers a version and logs
``monitoring/reference.json``: for each numeric input column its share of missing values
and ``QUANTILE_POINTS`` quantiles of the rest (the empirical distribution at 1/2000
resolution), for ``ocean_proximity`` its category shares, and the same for the model's
predictions on those blocks. No row of the training data is stored, and none is needed at
monitoring time: ``Reference.frame`` rebuilds, column by column, a sample with the same
distributions for the drift tests, which compare one column at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from model.data import FEATURE_COLUMNS, TARGET

ARTIFACT = "monitoring/reference.json"
FORMAT = 1
QUANTILE_POINTS = 2000
# The model's prediction as a drift column: named apart from the true value a label file carries.
PREDICTION = f"predicted_{TARGET}"
NUMERIC, CATEGORICAL = "numeric", "categorical"


class ReferenceError(LookupError):
    """A version has no usable monitoring reference."""


@dataclass(frozen=True)
class ColumnReference:
    """One column's distribution: ``points`` (sorted quantiles of the non-missing values) for a
    numeric column, ``shares`` (category → share of rows) for a categorical one."""

    kind: str
    missing_share: float = 0.0
    points: tuple[float, ...] = ()
    shares: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, values: pd.Series) -> ColumnReference:
        missing = float(values.isna().mean())
        present = values.dropna()
        if pd.api.types.is_numeric_dtype(values):
            levels = (np.arange(QUANTILE_POINTS) + 0.5) / QUANTILE_POINTS
            points = np.quantile(present.to_numpy(dtype=float), levels, method="inverted_cdf")
            return cls(NUMERIC, missing, tuple(float(p) for p in points))
        shares = present.astype(str).value_counts(normalize=True) * (1 - missing)
        return cls(CATEGORICAL, missing, shares={str(k): float(v) for k, v in shares.sort_index().items()})

    def sample(self, n: int) -> np.ndarray:
        """``n`` values distributed as the column: missing ones first (NaN or None), then the rest."""
        missing = round(n * self.missing_share)
        present = n - missing
        if self.kind == NUMERIC:
            levels = (np.arange(present) + 0.5) / present
            values = np.quantile(np.asarray(self.points), levels, method="inverted_cdf")
            return np.concatenate([np.full(missing, np.nan), values])
        counts = _largest_remainder(np.array(list(self.shares.values())) / (1 - self.missing_share), present)
        values = np.repeat(np.array(list(self.shares), dtype=object), counts)
        return np.concatenate([np.full(missing, None, dtype=object), values])


@dataclass(frozen=True)
class Reference:
    """The training blocks' input columns and the model's predictions on them, as distributions."""

    rows: int
    columns: dict[str, ColumnReference]

    @classmethod
    def of(cls, inputs: pd.DataFrame, predictions: np.ndarray) -> Reference:
        columns = {name: ColumnReference.of(inputs[name]) for name in FEATURE_COLUMNS}
        columns[PREDICTION] = ColumnReference.of(pd.Series(np.asarray(predictions, dtype=float)))
        return cls(len(inputs), columns)

    def numeric_columns(self) -> list[str]:
        return [name for name, column in self.columns.items() if column.kind == NUMERIC]

    def frame(self, n: int = QUANTILE_POINTS) -> pd.DataFrame:
        """A sample of ``n`` rows per column with the reference's distributions (columns are
        independent of each other: only one-column tests may use it)."""
        return pd.DataFrame({name: column.sample(n) for name, column in self.columns.items()})

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "rows": self.rows,
            "columns": {
                name: {"kind": c.kind, "missing_share": c.missing_share}
                | ({"points": list(c.points)} if c.kind == NUMERIC else {"shares": c.shares})
                for name, c in self.columns.items()
            },
        }

    @classmethod
    def from_dict(cls, document: dict) -> Reference:
        if document.get("format") != FORMAT:
            raise ReferenceError(f"reference format {document.get('format')!r} is not {FORMAT}")
        columns = {
            name: ColumnReference(
                kind=c["kind"],
                missing_share=float(c["missing_share"]),
                points=tuple(c.get("points", ())),
                shares=dict(c.get("shares", {})),
            )
            for name, c in document["columns"].items()
        }
        missing = [name for name in (*FEATURE_COLUMNS, PREDICTION) if name not in columns]
        if missing:
            raise ReferenceError(f"reference lacks columns {missing}")
        return cls(int(document["rows"]), columns)


def reference_of(model: mlflow.pyfunc.PythonModel, train_frame: pd.DataFrame) -> Reference:
    """The reference of a fitted model and its training blocks.

    The predictions are the model's on its own training blocks: the distribution it was built
    to produce. docs/workflows/monitoring.md measures how far they sit from its predictions on
    unseen blocks (far below the drift threshold).
    """
    inputs = train_frame[list(FEATURE_COLUMNS)]
    return Reference.of(inputs, model.predict(None, inputs)[TARGET].to_numpy(dtype=float))


def log_reference(model: mlflow.pyfunc.PythonModel, train_frame: pd.DataFrame) -> None:
    """Log the reference into the active run (the run that registers the version)."""
    mlflow.log_dict(reference_of(model, train_frame).to_dict(), ARTIFACT)


def load_reference(run_id: str) -> Reference:
    """The reference logged by the run ``run_id`` (the version's source run)."""
    try:
        document = mlflow.artifacts.load_dict(f"runs:/{run_id}/{ARTIFACT}")
    except (MlflowException, OSError, json.JSONDecodeError) as error:
        raise ReferenceError(
            f"run {run_id} has no monitoring reference ({ARTIFACT}): versions registered before "
            f"monitoring existed need retraining ({type(error).__name__})"
        ) from None
    return Reference.from_dict(document)


def _largest_remainder(shares: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to ``n`` closest to ``shares * n``."""
    exact = shares * n
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact)[: n - counts.sum()]] += 1
    return counts
