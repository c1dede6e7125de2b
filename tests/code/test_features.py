import numpy as np
import pandas as pd
import pytest

from model.data import FEATURE_COLUMNS
from model.features import (
    HousingFeatures,
    MedianImputer,
    NeighbourhoodTargetEncoder,
    OneHotCategories,
    ratio_features,
)


def blocks(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    households = rng.integers(10, 500, n).astype(float)
    return pd.DataFrame(
        {
            "longitude": rng.uniform(-124, -115, n),
            "latitude": rng.uniform(33, 41, n),
            "housing_median_age": rng.integers(1, 52, n).astype(float),
            "total_rooms": households * rng.uniform(3, 7, n),
            "total_bedrooms": households * rng.uniform(0.8, 1.3, n),
            "population": households * rng.uniform(2, 4, n),
            "households": households,
            "median_income": rng.uniform(0.5, 15, n),
            "ocean_proximity": rng.choice(["<1H OCEAN", "INLAND", "NEAR BAY"], n),
        }
    )


def test_median_imputer_fills_only_missing_values_with_the_fitted_median():
    imputer = MedianImputer().fit(np.array([1.0, np.nan, 3.0, 10.0]))
    assert imputer.median_ == 3.0
    np.testing.assert_array_equal(imputer.transform(np.array([np.nan, 7.0])), [3.0, 7.0])


def test_one_hot_encodes_known_categories_and_unseen_as_all_zeros():
    encoder = OneHotCategories().fit(np.array(["INLAND", "NEAR BAY", "INLAND"], dtype=object))
    assert encoder.categories_.tolist() == ["INLAND", "NEAR BAY"]
    np.testing.assert_array_equal(
        encoder.transform(np.array(["NEAR BAY", "ISLAND", "INLAND"], dtype=object)),
        [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]],
    )


def test_ratio_features_are_per_household_and_per_room():
    ratios = ratio_features(
        rooms=np.array([600.0]),
        bedrooms=np.array([120.0]),
        population=np.array([300.0]),
        households=np.array([100.0]),
    )
    np.testing.assert_allclose(ratios, [[6.0, 0.2, 3.0, 2.0]])


def test_neighbourhood_statistics_of_a_training_row_never_use_its_own_target():
    frame = blocks(400)
    X = frame[["latitude", "longitude", "median_income"]].to_numpy()
    y = np.random.default_rng(1).uniform(1e5, 5e5, len(X))
    before = NeighbourhoodTargetEncoder(n_neighbors=(3, 10)).fit_transform(X, y)
    y_changed = y.copy()
    y_changed[17] = 9e9
    after = NeighbourhoodTargetEncoder(n_neighbors=(3, 10)).fit_transform(X, y_changed)
    np.testing.assert_array_equal(before[17], after[17])
    assert not np.array_equal(before, after), "the row's neighbours must see the changed target"


def test_a_training_row_gets_what_serving_it_would_give_if_it_were_not_in_the_training_set():
    frame = blocks(120, seed=3)
    X = frame[["latitude", "longitude", "median_income"]].to_numpy()
    y = np.random.default_rng(3).uniform(1e5, 5e5, len(X))
    fitted = NeighbourhoodTargetEncoder(n_neighbors=(2, 7)).fit_transform(X, y)
    for row in (0, 41, 119):
        others = np.arange(len(X)) != row
        served = NeighbourhoodTargetEncoder(n_neighbors=(2, 7)).fit(X[others], y[others]).transform(X[[row]])
        np.testing.assert_allclose(fitted[row], served[0], rtol=1e-12)


@pytest.mark.parametrize("k", [3, 5])
def test_a_training_row_sharing_its_coordinates_with_others_still_never_sees_its_own_target(k):
    # Six blocks at one point tie at distance 0, so the KD-tree's k+1 nearest of a block
    # may or may not include the block itself (with k=3 both happen here).
    X = np.array([[34.0, -118.0, 3.0]] * 6 + [[38.0, -121.0, 3.0]] * 6)
    encoder = NeighbourhoodTargetEncoder(n_neighbors=(k,))
    mean = encoder.get_feature_names_out().tolist().index(f"nb{k}_target_mean")
    for row in range(6):
        y = np.array([100.0] * 6 + [500.0] * 6)
        y[row] = 9e9
        assert encoder.fit_transform(X, y)[row, mean] == 100.0


def test_neighbourhood_transform_of_a_training_point_uses_its_nearest_targets():
    X = np.array([[34.0, -118.0, 3.0], [34.0, -118.001, 3.0], [40.0, -122.0, 5.0]])
    encoder = NeighbourhoodTargetEncoder(n_neighbors=(1, 2)).fit(X, [100.0, 200.0, 900.0])
    statistics = encoder.transform(np.array([[34.0, -118.0, 6.0]]))
    names = encoder.get_feature_names_out().tolist()
    assert len(names) == statistics.shape[1]
    assert statistics[0, names.index("nb1_target_mean")] == 100.0
    assert statistics[0, names.index("nb2_target_mean")] == 150.0
    assert statistics[0, names.index("nb1_income_mean")] == 3.0
    np.testing.assert_array_equal(statistics, encoder.transform(np.array([[34.0, -118.0, 99.0]])))


def test_housing_features_names_match_columns_and_training_rows_get_leave_one_out_statistics():
    frame = blocks(300)
    y = np.random.default_rng(2).uniform(1e5, 5e5, len(frame))
    features = HousingFeatures(n_neighbors=(3, 8))
    fitted = features.fit_transform(frame, y)
    served = features.transform(frame)
    names = features.get_feature_names_out()
    assert fitted.shape == served.shape == (300, len(names))
    row_columns = [i for i, name in enumerate(names) if not name.startswith("nb")]
    np.testing.assert_array_equal(fitted[:, row_columns], served[:, row_columns])
    assert not np.array_equal(fitted, served), "fit_transform must not reuse the in-sample neighbourhood"


def test_housing_features_impute_missing_bedrooms_and_ignore_extra_columns():
    frame = blocks(50)
    features = HousingFeatures(n_neighbors=(3,)).fit(frame, np.arange(50.0) + 1)
    row = frame.iloc[[0]].copy()
    row["total_bedrooms"] = np.nan
    row["unused"] = "x"
    transformed = features.transform(row)
    bedrooms = list(features.get_feature_names_out()).index("total_bedrooms")
    assert transformed[0, bedrooms] == pytest.approx(frame["total_bedrooms"].median())
    assert np.isfinite(transformed).all()
    assert list(FEATURE_COLUMNS) == list(frame.columns)


def test_an_absent_total_bedrooms_column_is_imputed_like_missing_values():
    frame = blocks(40)
    features = HousingFeatures(n_neighbors=(3,)).fit(frame, np.arange(40.0) + 1)
    rows = frame.head(5)
    np.testing.assert_array_equal(
        features.transform(rows.drop(columns="total_bedrooms")),
        features.transform(rows.assign(total_bedrooms=np.nan)),
    )
