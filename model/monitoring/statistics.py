"""The monitor's statistics and its verdict, on one window of served rows.

Drift, one column at a time, against the version's reference (``model.monitoring.reference``),
computed by Evidently (its report is the run's HTML artifact):

* a numeric column (and the prediction): the Wasserstein distance between the window's values
  and the reference's, divided by the reference's standard deviation: how far, in standard
  deviations, the values had to move on average;
* ``ocean_proximity``: the Jensen-Shannon distance between the category shares;
* every column: the change in its share of missing values (a column that stops arriving is
  drift, and one with no value left has no distribution to compare).

With true values: the live RMSE of the served predictions, and the live coverage of the
served intervals (the share of true values inside the bounds the caller got), each beside the
version's own figure on the test split.

The verdict: ``degraded`` when the live RMSE or the live coverage is worse than the version's
test figure by more than its threshold; else ``drift`` when any column or the prediction
drifted; else ``ok``. ``THRESHOLDS`` are the defaults; docs/workflows/monitoring.md shows how
they were chosen from measured windows (``model.monitoring.calibration``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from model.data import TARGET
from model.intervals import LOWER_COLUMN, UPPER_COLUMN
from model.metrics import rmse
from model.monitoring.reference import CATEGORICAL, PREDICTION, Reference

OK, DRIFT, DEGRADED = "ok", "drift", "degraded"
VERDICTS = (OK, DRIFT, DEGRADED)
NUMERIC_METHOD, CATEGORICAL_METHOD = "wasserstein", "jensenshannon"
# Rows sampled from the reference for the tests: its quantile points, one row each.
REFERENCE_ROWS = 2000
# A window's true value (from the labels) and the interval level each row was served at.
TRUE_VALUE = f"true_{TARGET}"
LEVEL = "interval_level"


@dataclass(frozen=True)
class Thresholds:
    """When the monitor calls a window drifted or degraded.

    Parameters
    ----------
    numeric_drift : float
        Normed Wasserstein distance at or above which a numeric column (or the prediction) drifted.
    categorical_drift : float
        Jensen-Shannon distance at or above which a categorical column drifted.
    missing_share : float
        Change in a column's share of missing values (0-1) at or above which it drifted.
    rmse_ratio : float
        Live RMSE / the version's test RMSE above which the window is degraded.
    coverage_drop : float
        Points (0-1) by which live interval coverage may fall below the version's test coverage
        at the served level before the window is degraded.
    """

    numeric_drift: float = 0.2
    categorical_drift: float = 0.1
    missing_share: float = 0.05
    rmse_ratio: float = 1.25
    coverage_drop: float = 0.05


THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float  # nan when the window has no value in the column
    threshold: float
    missing_share: float
    reference_missing_share: float
    drifted: bool


@dataclass(frozen=True)
class LiveQuality:
    """The served predictions against true values; coverage only for rows that got an interval."""

    rows: int
    rmse: float
    test_rmse: float
    interval_rows: int = 0
    level: float | None = None
    coverage: float | None = None
    test_coverage: float | None = None


@dataclass
class Assessment:
    rows: int
    columns: list[ColumnDrift]
    quality: LiveQuality | None
    thresholds: Thresholds
    verdict: str = OK
    reasons: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.column != PREDICTION]

    @property
    def prediction(self) -> ColumnDrift:
        return next(c for c in self.columns if c.column == PREDICTION)

    @property
    def drifted_share(self) -> float:
        return sum(c.drifted for c in self.inputs) / len(self.inputs)

    def metrics(self) -> dict[str, float]:
        """What the monitoring run logs (NaN-free)."""
        values = {
            "rows": self.rows,
            "drifted_columns": sum(c.drifted for c in self.inputs),
            "drifted_share": self.drifted_share,
            "prediction_drift_score": self.prediction.score,
        }
        for c in self.columns:
            values[f"drift_score_{c.column}"] = c.score
            values[f"missing_share_{c.column}"] = c.missing_share
        if self.quality is not None:
            q = self.quality
            values |= {"labelled_rows": q.rows, "live_rmse": q.rmse, "test_rmse": q.test_rmse}
            values["live_rmse_ratio"] = q.rmse / q.test_rmse
            if q.coverage is not None:
                values |= {"interval_rows": q.interval_rows, "live_coverage": q.coverage}
                values |= {"served_level": q.level, "test_coverage": q.test_coverage}
        return {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}


def _evidently():
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry: off
    import evidently

    return evidently


def column_drift(reference: Reference, window: pd.DataFrame, thresholds: Thresholds = THRESHOLDS):
    """Each reference column's drift in ``window`` (input columns and ``PREDICTION``).

    The scores are Evidently's own stat tests, the functions its report runs (``report`` draws
    the same numbers; tests/code/test_monitoring.py checks they agree); called directly, a
    window costs milliseconds instead of the report's second of chart building.
    """
    _evidently()
    from evidently.legacy.calculations.stattests import jensenshannon_stat_test, wasserstein_stat_test
    from evidently.legacy.core import ColumnType

    sample = reference.frame(REFERENCE_ROWS)
    drifts = []
    for name, expected in reference.columns.items():
        categorical = expected.kind == CATEGORICAL
        test = jensenshannon_stat_test if categorical else wasserstein_stat_test
        threshold = thresholds.categorical_drift if categorical else thresholds.numeric_drift
        current = window[name]
        score = float("nan")
        if (
            current.notna().any()
        ):  # a column with no value left has no distribution: its missing share says it
            result = test(
                sample[name].dropna(),
                current.dropna(),
                ColumnType.Categorical if categorical else ColumnType.Numerical,
                threshold,
            )
            score = float(result.drift_score)
        missing = float(current.isna().mean())
        moved = abs(missing - expected.missing_share) >= thresholds.missing_share
        drifted = bool(score >= threshold) or moved
        method = CATEGORICAL_METHOD if categorical else NUMERIC_METHOD
        drifts.append(ColumnDrift(name, method, score, threshold, missing, expected.missing_share, drifted))
    return drifts


def report(reference: Reference, window: pd.DataFrame, thresholds: Thresholds = THRESHOLDS):
    """Evidently's report (a snapshot: ``save_html``) of the same tests, with each column's
    distributions against the reference's and its missing values."""
    _evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MissingValueCount, ValueDrift

    columns = list(reference.columns)
    categorical = [n for n in columns if reference.columns[n].kind == CATEGORICAL]
    current = window[columns].reset_index(drop=True)
    drifts = {d.column: d for d in column_drift(reference, window, thresholds)}
    definition = DataDefinition(
        numerical_columns=[n for n in columns if n not in categorical], categorical_columns=categorical
    )
    metrics = [
        ValueDrift(column=n, method=drifts[n].method, threshold=drifts[n].threshold)
        for n in columns
        if np.isfinite(drifts[n].score)
    ]
    return Report(metrics + [MissingValueCount(column=n) for n in columns]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference.frame(REFERENCE_ROWS), data_definition=definition),
    )


def report_scores(snapshot) -> dict[str, float]:
    """Column → drift score, as the report computed them."""
    return {
        m["config"]["column"]: float(m["value"])
        for m in snapshot.dict()["metrics"]
        if m["config"].get("type", "").endswith(":ValueDrift")
    }


def live_quality(window: pd.DataFrame, test_figures: dict[str, float]) -> LiveQuality:
    """RMSE of the served predictions and coverage of the served intervals, on rows with a true value.

    ``window`` has the served ``TARGET`` prediction, the true value in ``TRUE_VALUE`` and, for
    rows that asked for one, the interval's bounds and its level (``LEVEL``). The coverage is
    measured at the level most rows asked for; ``test_figures`` maps ``rmse`` and
    ``coverage_<level>`` to the version's figures on the test split.
    """
    truth = window[TRUE_VALUE].to_numpy(dtype=float)
    served = window[TARGET].to_numpy(dtype=float)
    quality = LiveQuality(rows=len(window), rmse=rmse(truth, served), test_rmse=test_figures["rmse"])
    if LEVEL not in window or not window[LEVEL].notna().any():
        return quality
    level = float(window[LEVEL].mode().iloc[0])
    asked = window[window[LEVEL] == level]
    inside = (asked[LOWER_COLUMN] <= asked[TRUE_VALUE]) & (asked[TRUE_VALUE] <= asked[UPPER_COLUMN])
    return LiveQuality(
        rows=quality.rows,
        rmse=quality.rmse,
        test_rmse=quality.test_rmse,
        interval_rows=len(asked),
        level=level,
        coverage=float(inside.mean()),
        test_coverage=test_figures.get(f"coverage_{level:g}", level),
    )


def judge(
    rows: int, drifts: list[ColumnDrift], quality: LiveQuality | None, thresholds: Thresholds = THRESHOLDS
) -> Assessment:
    """The verdict on a window from its drift and (with labels) live quality."""
    assessment = Assessment(rows, drifts, quality, thresholds)
    reasons = assessment.reasons
    if quality is not None:
        if quality.rmse > thresholds.rmse_ratio * quality.test_rmse:
            reasons.append(
                f"live RMSE {quality.rmse:,.0f} USD is {quality.rmse / quality.test_rmse:.2f}x the test "
                f"RMSE {quality.test_rmse:,.0f} (limit {thresholds.rmse_ratio:g}x)"
            )
        if (
            quality.coverage is not None
            and quality.coverage < quality.test_coverage - thresholds.coverage_drop
        ):
            reasons.append(
                f"live coverage of the {quality.level:.0%} intervals is {quality.coverage:.1%}, "
                f"test {quality.test_coverage:.1%} (limit {thresholds.coverage_drop * 100:g} points lower)"
            )
    if reasons:
        assessment.verdict = DEGRADED
    drifted = [c for c in drifts if c.drifted]
    for c in drifted:
        reasons.append(_drift_reason(c, thresholds))
    if drifted and not assessment.verdict == DEGRADED:
        assessment.verdict = DRIFT
    return assessment


def _drift_reason(c: ColumnDrift, thresholds: Thresholds) -> str:
    what = "the prediction" if c.column == PREDICTION else c.column
    if abs(c.missing_share - c.reference_missing_share) >= thresholds.missing_share:
        return (
            f"{what} is missing in {c.missing_share:.1%} of rows (reference {c.reference_missing_share:.1%})"
        )
    return f"{what} drifted ({c.method} {c.score:.3f} ≥ {c.threshold:g})"


def paragraph(assessment: Assessment, version: str, window: str) -> str:
    """The one-paragraph verdict the command prints."""
    a = assessment
    text = [f"Verdict: {a.verdict.upper()} for {version} on {a.rows:,} rows of {window}."]
    drifted = [c.column for c in a.inputs if c.drifted]
    text.append(
        f"{len(drifted)} of {len(a.inputs)} input columns drifted"
        + (f" ({', '.join(drifted)})" if drifted else "")
        + f"; prediction drift {a.prediction.score:.3f}"
        + (" (drifted)." if a.prediction.drifted else f" (limit {a.prediction.threshold:g}).")
    )
    q = a.quality
    if q is None:
        text.append("No true values were given: live error and coverage were not measured.")
    else:
        text.append(
            f"On {q.rows:,} rows with true values, live RMSE {q.rmse:,.0f} USD (test {q.test_rmse:,.0f})"
        )
        if q.coverage is not None:
            text[-1] += (
                f"; {q.level:.0%} intervals covered {q.coverage:.1%} of {q.interval_rows:,} rows "
                f"(test {q.test_coverage:.1%})"
            )
        text[-1] += "."
    if a.reasons:
        text.append("Why: " + "; ".join(a.reasons) + ".")
    return " ".join(text)


def assess(
    reference: Reference,
    window: pd.DataFrame,
    test_figures: dict[str, float],
    thresholds: Thresholds = THRESHOLDS,
) -> Assessment:
    """The :class:`Assessment` of ``window``: the input columns, the served prediction
    (``TARGET``), and with labels ``TRUE_VALUE`` (and the interval columns)."""
    frame = drift_frame(window)
    labelled = frame[frame[TRUE_VALUE].notna()] if TRUE_VALUE in frame else frame.iloc[:0]
    quality = live_quality(labelled, test_figures) if len(labelled) else None
    return judge(len(frame), column_drift(reference, frame, thresholds), quality, thresholds)


def drift_frame(window: pd.DataFrame) -> pd.DataFrame:
    """``window`` with the served prediction as the ``PREDICTION`` drift column."""
    return window.assign(**{PREDICTION: window[TARGET]})
