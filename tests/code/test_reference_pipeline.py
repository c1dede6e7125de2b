"""The lean serving transform equals the textbook scikit-learn pipeline it replaces.

``HousingFeatures`` applies its fitted state with plain NumPy so a one-row request
costs microseconds; this reference builds the same features the obvious way —
``ColumnTransformer`` + ``SimpleImputer`` + ``OneHotEncoder`` + ``FunctionTransformer``
and ``NearestNeighbors`` with pandas-free but unoptimised statistics — fitted
independently on the same training rows, and the two must agree to 1e-9.
"""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from model.contract import validate_input
from model.data import CATEGORICAL_COLUMN, FEATURE_COLUMNS, NUMERIC_COLUMNS, TARGET

BEDROOMS = NUMERIC_COLUMNS.index("total_bedrooms")


def _ratios(numeric: np.ndarray) -> np.ndarray:
    column = {name: numeric[:, i] for i, name in enumerate(NUMERIC_COLUMNS)}
    return np.column_stack(
        [
            column["total_rooms"] / column["households"],
            column["total_bedrooms"] / column["total_rooms"],
            column["population"] / column["households"],
            column["total_rooms"] / column["population"],
        ]
    )


def _rotations(coordinates: np.ndarray) -> np.ndarray:
    longitude, latitude = coordinates[:, 0], coordinates[:, 1]
    return np.column_stack([longitude + latitude, longitude - latitude])


class ReferenceNeighbourhood(TransformerMixin, BaseEstimator):
    """k-nearest-neighbour statistics of the target, one neighbourhood at a time."""

    def __init__(self, n_neighbors):
        self.n_neighbors = n_neighbors

    def fit(self, X, y):
        self.search_ = NearestNeighbors(n_neighbors=max(self.n_neighbors) + 1).fit(self._scaled(X))
        self.target_ = np.asarray(y, dtype=float)
        self.income_ = np.asarray(X)[:, 2].astype(float)
        return self

    @staticmethod
    def _scaled(X):
        X = np.asarray(X, dtype=float)
        return np.column_stack([X[:, 0], X[:, 1] * np.cos(np.radians(37.0))])

    def neighbours(self, X):
        return self.search_.kneighbors(self._scaled(X))

    def transform(self, X):
        distance, index = self.neighbours(X)
        columns = []
        for k in self.n_neighbors:
            target, income = self.target_[index[:, :k]], self.income_[index[:, :k]]
            columns += [
                np.mean(target, axis=1),
                np.median(target, axis=1),
                distance[:, k - 1],
                np.mean(target / income, axis=1),
                np.mean(income, axis=1),
            ]
        columns.append(np.std(np.log(self.target_[index[:, : max(self.n_neighbors)]]), axis=1))
        return np.column_stack(columns)


def reference_pipeline(n_neighbors) -> ColumnTransformer:
    numeric = list(NUMERIC_COLUMNS)
    return ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), numeric),
            (
                "ratios",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("ratios", FunctionTransformer(_ratios))]
                ),
                numeric,
            ),
            ("rotations", FunctionTransformer(_rotations, validate=True), ["longitude", "latitude"]),
            ("ocean", OneHotEncoder(handle_unknown="ignore", sparse_output=False), [CATEGORICAL_COLUMN]),
            (
                "neighbourhood",
                ReferenceNeighbourhood(n_neighbors),
                ["latitude", "longitude", "median_income"],
            ),
        ]
    )


@pytest.fixture(scope="module")
def reference(split, trained_model):
    train_frame, _ = split
    pipeline = reference_pipeline(tuple(trained_model.features.n_neighbors))
    return pipeline.fit(train_frame[list(FEATURE_COLUMNS)], train_frame[TARGET])


def _rows_without_boundary_ties(reference, rows, n_neighbors) -> np.ndarray:
    """Rows whose k-th and (k+1)-th neighbours are at different distances for every k.

    Thousands of blocks share coordinates; where the k-th neighbour ties with the next
    one, which of them is "the k nearest" is arbitrary and differs between tree libraries.
    """
    distance, _ = reference.named_transformers_["neighbourhood"].neighbours(
        rows[["latitude", "longitude", "median_income"]]
    )
    return np.all([distance[:, k - 1] < distance[:, k] for k in n_neighbors], axis=0)


def test_lean_features_equal_the_reference_pipeline(reference, trained_model, split):
    rows = split[1][list(FEATURE_COLUMNS)].assign(
        total_bedrooms=lambda f: f["total_bedrooms"].mask(f.index % 7 == 0)  # imputation exercised
    )
    names = trained_model.features.get_feature_names_out()
    neighbourhood = np.char.startswith(names.astype(str), "nb")
    distance = np.char.endswith(names.astype(str), "_distance")
    untied = _rows_without_boundary_ties(reference, rows, tuple(trained_model.features.n_neighbors))
    assert untied.mean() > 0.1  # a real sample, not a handful

    lean = trained_model.features.transform(validate_input(rows))
    expected = reference.transform(rows)
    np.testing.assert_allclose(lean[:, ~neighbourhood], expected[:, ~neighbourhood], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(lean[untied], expected[untied], rtol=1e-9, atol=1e-9)
    # On tied rows the neighbourhood's extent (the k-th distance) is still the same.
    np.testing.assert_allclose(lean[:, distance], expected[:, distance], rtol=1e-9)


def test_served_predictions_equal_the_regressor_on_reference_features(reference, trained_model, split):
    rows = split[1][list(FEATURE_COLUMNS)]
    untied = _rows_without_boundary_ties(reference, rows, tuple(trained_model.features.n_neighbors))
    expected_features = reference.transform(rows)
    # The two tree libraries list a row's k neighbours in different orders, so some sums differ
    # in the last bits (the features test bounds that by 1e-9); a tree split can fall between
    # such twins, so predictions are compared where the reference features agree to the bit.
    comparable = untied & (trained_model.features.transform(rows) == expected_features).all(axis=1)
    assert comparable.mean() > 0.1, comparable.sum()
    served = trained_model.predict(None, rows)[TARGET].to_numpy()
    expected = trained_model.regressor.predict(expected_features)
    np.testing.assert_allclose(served[comparable], expected[comparable], rtol=1e-9, atol=1e-9)


def test_one_row_requests_take_the_same_path_as_batches(trained_model, split):
    rows = split[1][list(FEATURE_COLUMNS)].head(25)
    one_at_a_time = np.concatenate(
        [trained_model.features.transform(validate_input(rows.iloc[[i]])) for i in range(25)]
    )
    np.testing.assert_array_equal(one_at_a_time, trained_model.features.transform(validate_input(rows)))
    np.testing.assert_array_equal(one_at_a_time, trained_model.features.transform(rows))
