"""The default model's intervals on the frozen test split: calibrated, never inverted, adaptive;
and the same through the loaded pyfunc, whose signature carries the `interval` parameter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from model.data import FEATURE_COLUMNS, TARGET, TARGET_CAP
from model.intervals import LOWER_COLUMN, UPPER_COLUMN

# The target: within ±2 points of nominal; 0.8 is also the promotion's coverage gate.
TOLERANCE = 0.02


@pytest.fixture(scope="module")
def test_rows(split) -> pd.DataFrame:
    return split[1]


@pytest.fixture(scope="module")
def answers(trained_model, test_rows) -> dict[float, pd.DataFrame]:
    rows = test_rows[list(FEATURE_COLUMNS)]
    return {
        level: trained_model.predict(None, rows, {"interval": level}) for level in (0.5, 0.8, 0.9, 0.95, 0.99)
    }


def coverage(answer: pd.DataFrame, y) -> float:
    return float(np.mean((answer[LOWER_COLUMN] <= y) & (y <= answer[UPPER_COLUMN])))


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9])
def test_coverage_on_the_frozen_test_split_is_within_two_points_of_nominal(answers, test_rows, level):
    assert abs(coverage(answers[level], test_rows[TARGET]) - level) <= TOLERANCE


def test_intervals_never_invert_on_any_test_block_at_any_level(answers):
    for level, answer in answers.items():
        assert (answer[LOWER_COLUMN] <= answer[TARGET]).all(), level
        assert (answer[TARGET] <= answer[UPPER_COLUMN]).all(), level
        assert (answer[LOWER_COLUMN] >= 0).all(), level


def test_a_higher_level_widens_every_interval(answers):
    levels = sorted(answers)
    for narrower, wider in zip(levels, levels[1:]):
        assert (answers[narrower][LOWER_COLUMN] >= answers[wider][LOWER_COLUMN]).all()
        assert (answers[narrower][UPPER_COLUMN] <= answers[wider][UPPER_COLUMN]).all()
        assert (answers[narrower][UPPER_COLUMN] < answers[wider][UPPER_COLUMN]).all()


def test_intervals_adapt_to_how_predictable_a_block_is(answers, test_rows):
    """Wider where the model errs more: the quarter of blocks with the widest intervals has
    several times the typical error of the quarter with the narrowest."""
    answer = answers[0.8]
    width = (answer[UPPER_COLUMN] - answer[LOWER_COLUMN]).to_numpy()
    error = np.abs(answer[TARGET] - test_rows[TARGET]).to_numpy()
    narrow, wide = width <= np.quantile(width, 0.25), width >= np.quantile(width, 0.75)
    assert np.median(error[wide]) > 2.5 * np.median(error[narrow])
    # …and each quarter is still covered near the nominal 80 %.
    y = test_rows[TARGET].to_numpy()
    for group in (narrow, wide):
        assert abs(coverage(answer[group], y[group]) - 0.8) < 0.05


def test_capped_blocks_get_an_upper_bound_at_or_beyond_the_cap_mostly(answers, test_rows):
    """At the 500,001 census cap the recorded value is a floor of the truth: an interval
    covers it when its upper bound reaches the cap (docs/model-quality.md)."""
    capped = (test_rows[TARGET] >= TARGET_CAP).to_numpy()
    assert capped.sum() > 100
    assert coverage(answers[0.9][capped], test_rows[TARGET][capped]) > 0.7


@pytest.fixture(scope="module")
def loaded(served_model):
    """The model as training logs it (compiled trees included), loaded as every server loads it."""
    return served_model


def test_the_loaded_pyfunc_takes_the_level_as_an_inference_parameter(loaded, trained_model, test_rows):
    rows = test_rows[list(FEATURE_COLUMNS)].head(100)
    pd.testing.assert_frame_equal(loaded.predict(rows), trained_model.predict(None, rows), check_exact=True)
    pd.testing.assert_frame_equal(
        loaded.predict(rows, params={"interval": 0.8}),
        trained_model.predict(None, rows, {"interval": 0.8}),
        check_exact=True,
    )
    assert list(loaded.predict(rows, params={"interval": 0.9}).columns) == [
        TARGET,
        LOWER_COLUMN,
        UPPER_COLUMN,
    ]


@pytest.mark.parametrize(
    "value, message",
    [
        (1.5, "invalid parameter 'interval': must be a coverage level from 0.5 to 0.99"),
        ("0.8", "Invalid parameters found"),  # MLflow's own type check, from the ParamSchema
    ],
)
def test_the_loaded_pyfunc_refuses_a_bad_level_as_invalid_parameter(loaded, test_rows, value, message):
    with pytest.raises(MlflowException, match=message) as refused:
        loaded.predict(test_rows[list(FEATURE_COLUMNS)].head(3), params={"interval": value})
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
