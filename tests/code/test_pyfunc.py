"""The averaged boosters give the same bits through LightGBM and through their compiled trees, one
row or many at a time; what pickling keeps; the pyfunc's answer with and without the interval
parameter."""

from concurrent.futures import ThreadPoolExecutor

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from model.compiled_trees import CompiledTrees
from model.contract import validate_input
from model.data import FEATURE_COLUMNS, TARGET
from model.intervals import LOWER_COLUMN, UPPER_COLUMN, InvalidParameterError
from model.pyfunc import AveragedBoosters


@pytest.fixture(scope="module")
def test_features(trained_model, split):
    rows = split[1][list(FEATURE_COLUMNS)].head(300)
    return trained_model.features.transform(validate_input(rows))


def one_at_a_time(regressor, X):
    return np.concatenate([regressor.predict(X[i : i + 1]) for i in range(len(X))])


def compiled(boosters) -> AveragedBoosters:
    regressor = AveragedBoosters(boosters)
    regressor.use_compiled(regressor.compile())
    return regressor


@pytest.fixture(scope="module")
def compiled_regressor(trained_model) -> AveragedBoosters:
    return compiled(trained_model.regressor.boosters)


# Two boosters, the default, on every row of the dataset: tests/model/test_compiled_trees.py.
@pytest.mark.parametrize("n_boosters", [1, 3])
def test_compiled_trees_give_lightgbms_predictions_bit_for_bit_one_row_or_many(
    trained_model, test_features, n_boosters
):
    boosters = [trained_model.regressor.boosters[i % 2] for i in range(n_boosters)]
    lightgbm_path = AveragedBoosters(boosters).predict(test_features)
    regressor = compiled(boosters)
    np.testing.assert_array_equal(regressor.predict(test_features), lightgbm_path)
    np.testing.assert_array_equal(one_at_a_time(regressor, test_features), lightgbm_path)
    assert len(np.unique(lightgbm_path)) > 250  # the rows really differ


def test_served_one_row_requests_equal_one_batch_request(served_model, split):
    rows = split[1][list(FEATURE_COLUMNS)].head(50)
    singles = np.concatenate([served_model.predict(rows.iloc[[i]])[TARGET].to_numpy() for i in range(50)])
    np.testing.assert_array_equal(singles, served_model.predict(rows)[TARGET].to_numpy())


def test_pickling_keeps_the_boosters_as_text_and_not_the_session(compiled_regressor, test_features):
    restored = cloudpickle.loads(cloudpickle.dumps(compiled_regressor))
    assert restored.compiled is None  # a logged model loads its compiled trees from its artifact
    # Pickled again before anything parsed its boosters: the text travels as it is.
    again = cloudpickle.loads(cloudpickle.dumps(restored))
    expected = compiled_regressor.predict(test_features)
    np.testing.assert_array_equal(restored.predict(test_features), expected)
    np.testing.assert_array_equal(again.predict(test_features), expected)


def test_compiled_trees_are_safe_to_share_between_threads(trained_model, compiled_regressor, test_features):
    expected = AveragedBoosters(trained_model.regressor.boosters).predict(test_features)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: one_at_a_time(compiled_regressor, test_features), range(4)))
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_a_row_of_the_wrong_width_is_refused_before_it_reaches_the_trees(compiled_regressor, test_features):
    assert isinstance(compiled_regressor.compiled, CompiledTrees)
    width = test_features.shape[1]
    with pytest.raises(
        ValueError, match=rf"expected rows of {width} features, got an array of shape \(1, {width - 1}\)"
    ):
        compiled_regressor.predict(test_features[:1, :-1])


@pytest.fixture(scope="module")
def test_rows(split):
    return split[1][list(FEATURE_COLUMNS)].head(300)


@pytest.mark.parametrize("params", [None, {}, {"interval": None}])
def test_without_an_interval_the_answer_is_the_one_column_of_the_regressor_bit_for_bit(
    trained_model, test_rows, params
):
    answer = trained_model.predict(None, test_rows, params)
    assert list(answer.columns) == [TARGET]
    expected = trained_model.regressor.predict(trained_model.features.transform(validate_input(test_rows)))
    np.testing.assert_array_equal(answer[TARGET].to_numpy(), expected)


@pytest.mark.parametrize("level", [0.5, 0.8, 0.99])
def test_an_interval_adds_bounds_around_the_unchanged_point(trained_model, test_rows, level):
    point = trained_model.predict(None, test_rows)[TARGET].to_numpy()
    answer = trained_model.predict(None, test_rows, {"interval": level})
    assert list(answer.columns) == [TARGET, LOWER_COLUMN, UPPER_COLUMN]
    assert answer.index.equals(test_rows.index)
    np.testing.assert_array_equal(answer[TARGET].to_numpy(), point)
    assert (answer[LOWER_COLUMN] <= answer[TARGET]).all() and (answer[TARGET] <= answer[UPPER_COLUMN]).all()
    assert (answer[UPPER_COLUMN] > answer[LOWER_COLUMN]).all()


def test_one_row_intervals_equal_their_batch_rows_bit_for_bit(trained_model, test_rows):
    rows = test_rows.head(40)
    batch = trained_model.predict(None, rows, {"interval": 0.8})
    singles = pd.concat(
        [trained_model.predict(None, rows.iloc[[i]], {"interval": 0.8}) for i in range(len(rows))]
    )
    pd.testing.assert_frame_equal(singles, batch, check_exact=True)


def test_no_rows_with_an_interval_give_the_three_columns_and_no_rows(trained_model, test_rows):
    answer = trained_model.predict(None, test_rows.head(0), {"interval": 0.8})
    assert list(answer.columns) == [TARGET, LOWER_COLUMN, UPPER_COLUMN] and len(answer) == 0


def test_a_level_outside_the_range_is_refused_before_any_work(trained_model, test_rows):
    with pytest.raises(
        InvalidParameterError,
        match=r"^invalid parameter 'interval': must be a coverage level from 0.5 to 0.99",
    ):
        trained_model.predict(None, test_rows.assign(households=0.0), {"interval": 1.2})
