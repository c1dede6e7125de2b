"""The averaged boosters: LightGBM's one-row C path gives exactly what the batch path gives."""

from concurrent.futures import ThreadPoolExecutor

import cloudpickle
import numpy as np
import pytest

from model.contract import validate_input
from model.data import FEATURE_COLUMNS, TARGET
from model.pyfunc import AveragedBoosters


@pytest.fixture(scope="module")
def test_features(trained_model, split):
    rows = split[1][list(FEATURE_COLUMNS)].head(300)
    return trained_model.features.transform(validate_input(rows))


def one_at_a_time(regressor, X):
    return np.concatenate([regressor.predict(X[i : i + 1]) for i in range(len(X))])


@pytest.mark.parametrize("n_boosters", [1, 2, 3])
def test_one_row_predictions_equal_batch_predictions_bit_for_bit(trained_model, test_features, n_boosters):
    boosters = trained_model.regressor.boosters
    regressor = AveragedBoosters([boosters[i % len(boosters)] for i in range(n_boosters)])
    batch = regressor.predict(test_features)
    np.testing.assert_array_equal(one_at_a_time(regressor, test_features), batch)
    assert len(np.unique(batch)) > 250  # the rows really differ


def test_served_one_row_requests_equal_one_batch_request(trained_model, split):
    rows = split[1][list(FEATURE_COLUMNS)].head(50)
    singles = np.concatenate([trained_model.predict(None, rows.iloc[[i]])[TARGET].to_numpy() for i in range(50)])
    np.testing.assert_array_equal(singles, trained_model.predict(None, rows)[TARGET].to_numpy())


def test_unpickled_regressor_rebuilds_its_one_row_path(trained_model, test_features):
    restored = cloudpickle.loads(cloudpickle.dumps(trained_model.regressor))
    np.testing.assert_array_equal(
        one_at_a_time(restored, test_features), trained_model.regressor.predict(test_features)
    )


def test_one_row_path_is_safe_to_share_between_threads(trained_model, test_features):
    expected = trained_model.regressor.predict(test_features)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: one_at_a_time(trained_model.regressor, test_features), range(4)))
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_a_row_of_the_wrong_width_is_refused_before_it_reaches_c(trained_model, test_features):
    with pytest.raises(ValueError, match=f"expected {test_features.shape[1]} features, got {test_features.shape[1] - 1}"):
        trained_model.regressor.predict(test_features[:1, :-1])
