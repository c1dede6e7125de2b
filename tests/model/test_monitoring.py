"""The monitor's statistics on the real model and data, with the default thresholds.

Windows of 1,000 held-out test blocks, served by the default model with 80 % intervals
(``model.monitoring.study``, which measures the same scenarios for docs/workflows/monitoring.md):
unchanged windows raise at most one false alarm in 20, every listed shift is flagged in 20 of 20,
a market that moved is ``degraded``, and unchanged labelled windows are ``ok`` with the served
intervals covering what the version's test split says. The 4,128 test blocks hold only four
disjoint 1,000-row windows, so each window is its own random sample of them.
"""

from __future__ import annotations

import numpy as np
import pytest

from model.data import FEATURE_COLUMNS
from model.monitoring import study
from model.monitoring.reference import PREDICTION, Reference, reference_of
from model.monitoring.statistics import DEGRADED, DRIFT, OK, TRUE_VALUE, assess

WINDOWS = 20


@pytest.fixture(scope="module")
def reference(trained_model, split) -> Reference:
    return reference_of(trained_model, split[0])


@pytest.fixture(scope="module")
def figures(trained_model, split) -> dict[str, float]:
    return study.test_figures(trained_model, split[1])


def assessments(trained_model, split, reference, figures, shift: str, labelled: bool, seed: int):
    result = []
    for blocks in study.windows(split[1], shift, WINDOWS, seed):
        window = study.served_window(trained_model, blocks)
        result.append(assess(reference, window if labelled else window.drop(columns=[TRUE_VALUE]), figures))
    return result


def test_the_reference_rebuilds_the_training_distributions(reference, split):
    train = split[0]
    sample = reference.frame()
    for column in ("median_income", "population"):
        assert np.quantile(sample[column], [0.1, 0.5, 0.9]) == pytest.approx(
            np.quantile(train[column], [0.1, 0.5, 0.9]), rel=0.01
        )
    assert sample["total_bedrooms"].isna().mean() == pytest.approx(
        train["total_bedrooms"].isna().mean(), abs=1e-3
    )
    shares = train["ocean_proximity"].value_counts(normalize=True)
    assert sample["ocean_proximity"].value_counts(normalize=True)["INLAND"] == pytest.approx(
        shares["INLAND"], abs=1e-3
    )
    assert set(reference.columns) == {*FEATURE_COLUMNS, PREDICTION}


def test_unchanged_windows_raise_at_most_one_false_alarm_in_20(trained_model, split, reference, figures):
    verdicts = [a.verdict for a in assessments(trained_model, split, reference, figures, "", True, seed=100)]
    assert verdicts.count(DRIFT) <= 1, verdicts
    assert verdicts.count(DEGRADED) == 0, verdicts


@pytest.mark.parametrize(
    ("shift", "column"),
    [
        ("income_x1.2", "median_income"),
        ("inland_only", "ocean_proximity"),
        ("bedrooms_missing", "total_bedrooms"),
        ("population_thousands", "population"),
    ],
)
def test_each_listed_shift_is_flagged_in_20_of_20_windows(
    trained_model, split, reference, figures, shift, column
):
    found = assessments(trained_model, split, reference, figures, shift, False, seed=200)
    assert [a.verdict for a in found] == [DRIFT] * WINDOWS
    assert all(next(c for c in a.columns if c.column == column).drifted for a in found)


def test_a_market_that_moved_is_degraded_through_rmse_and_coverage(trained_model, split, reference, figures):
    found = assessments(trained_model, split, reference, figures, "prices_x1.3", True, seed=300)
    assert [a.verdict for a in found] == [DEGRADED] * WINDOWS
    for a in found:
        assert a.quality.rmse > a.thresholds.rmse_ratio * a.quality.test_rmse
        assert a.quality.coverage < a.quality.test_coverage - a.thresholds.coverage_drop


def test_labelled_test_blocks_are_ok_and_their_intervals_cover_as_on_the_test_split(
    trained_model, split, reference, figures
):
    found = assessments(trained_model, split, reference, figures, "", True, seed=400)
    assert [a.verdict for a in found] == [OK] * WINDOWS
    served = sum(a.quality.interval_rows for a in found)
    covered = sum(a.quality.coverage * a.quality.interval_rows for a in found)
    assert abs(covered / served - found[0].quality.test_coverage) <= 0.03
    assert found[0].quality.level == study.SERVED_LEVEL
