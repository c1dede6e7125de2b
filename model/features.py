"""Feature engineering: small scikit-learn estimators applied as plain NumPy.

Every transformer learns its state in ``fit`` (attributes with a trailing ``_``)
and applies it with vectorised NumPy in ``transform``, so one row costs
microseconds on the serving path instead of a pandas/ColumnTransformer round trip.
The estimators opt out of scikit-learn's ``set_output`` wrapping
(``auto_wrap_output_keys=None``): on one row the wrapper cost more than the
transform, and their output is always an array.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import KDTree
from sklearn.base import BaseEstimator, TransformerMixin

from model.data import CATEGORICAL_COLUMN, NUMERIC_COLUMNS

# Degrees of longitude are shorter than degrees of latitude; at California's mean
# latitude (37°N) one degree of longitude spans cos(37°) ≈ 0.8 of a degree of latitude.
_LONGITUDE_SCALE = float(np.cos(np.radians(37.0)))


class MedianImputer(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Replace missing values of one numeric column with the median seen at fit."""

    def fit(self, X, y=None):
        values = np.asarray(X, dtype=float).reshape(-1)
        self.median_ = float(np.nanmedian(values))
        return self

    def transform(self, X):
        values = np.asarray(X, dtype=float).reshape(-1)
        return np.where(np.isnan(values), self.median_, values)


class OneHotCategories(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """One-hot encode one categorical column; a category unseen at fit encodes as all zeros."""

    def fit(self, X, y=None):
        self.categories_ = np.array(sorted(pd.unique(np.asarray(X, dtype=object).reshape(-1))), dtype=object)
        return self

    def transform(self, X):
        values = np.asarray(X, dtype=object).reshape(-1, 1)
        return (values == self.categories_[np.newaxis, :]).astype(float)


def ratio_features(rooms, bedrooms, population, households) -> np.ndarray:
    """Per-household and per-room ratios: the block's size, not its count, drives price."""
    return np.column_stack(
        [
            rooms / households,
            bedrooms / rooms,
            population / households,
            rooms / population,
        ]
    )


class NeighbourhoodTargetEncoder(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Statistics of the target over the k nearest training blocks in latitude/longitude.

    ``X`` has three columns: latitude, longitude, median_income; ``transform``
    reads only the coordinates, so no statistic depends on the block's own income
    (which keeps the regressor's monotone constraint on income a guarantee). For
    each k in ``n_neighbors`` the encoder emits the neighbours' mean and median
    target, the distance to the k-th neighbour, their mean price-per-income ratio
    and their mean income; plus the spread of log target over the largest
    neighbourhood.

    ``fit_transform`` computes each training row's statistics leave-one-out: its
    neighbours are the k nearest *other* training blocks, so no row ever sees its own
    target, and a training row's neighbourhood is as dense as a served block's (K-fold
    statistics would see only (K-1)/K of it; measured in docs/model-quality.md).
    ``transform`` uses every training row, as serving does.

    Parameters
    ----------
    n_neighbors : tuple of int
        Neighbourhood sizes.
    """

    def __init__(self, n_neighbors=(5, 15, 50)):
        self.n_neighbors = n_neighbors

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        # SciPy's KDTree rather than scikit-learn's: the latter validates its input on
        # every query, which cost more than the query itself on a one-row request.
        self.tree_ = KDTree(_scaled_coordinates(X))
        self.target_ = np.asarray(y, dtype=float)
        self.income_ = X[:, 2].copy()
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=float)
        return _neighbourhood_statistics(self.tree_, self.target_, self.income_, X, tuple(self.n_neighbors))

    def fit_transform(self, X, y):
        X = np.asarray(X, dtype=float)
        self.fit(X, y)
        leave_one_out = _LeaveOneOut(self.tree_)
        return _neighbourhood_statistics(
            leave_one_out, self.target_, self.income_, X, tuple(self.n_neighbors)
        )

    def get_feature_names_out(self, input_features=None):
        names = []
        for k in self.n_neighbors:
            names += [
                f"nb{k}_target_mean",
                f"nb{k}_target_median",
                f"nb{k}_distance",
                f"nb{k}_price_per_income",
                f"nb{k}_income_mean",
            ]
        return np.array([*names, f"nb{max(self.n_neighbors)}_log_target_std"], dtype=object)


class _LeaveOneOut:
    """A KD-tree over the training points whose query of training point ``i`` (queried
    in training order) skips point ``i`` itself."""

    def __init__(self, tree: KDTree):
        self.tree = tree

    def query(self, points: np.ndarray, k: list[int]):
        k_max = max(k)
        distance, index = self.tree.query(points, k=[*k, k_max + 1])
        is_self = index == np.arange(len(points))[:, np.newaxis]
        # Duplicated coordinates tie at distance 0 and may push the point itself past the
        # k+1 nearest; the point is then simply not among them, and the farthest is dropped.
        is_self[~is_self.any(axis=1), -1] = True
        keep = ~is_self
        return distance[keep].reshape(len(points), k_max), index[keep].reshape(len(points), k_max)


def _scaled_coordinates(X: np.ndarray) -> np.ndarray:
    return np.column_stack([X[:, 0], X[:, 1] * _LONGITUDE_SCALE])


def _neighbourhood_statistics(tree, target, income, X, n_neighbors) -> np.ndarray:
    distance, index = tree.query(_scaled_coordinates(X), k=[*range(1, max(n_neighbors) + 1)])
    neighbour_target = target[index]
    neighbour_income = income[index]
    price_per_income = neighbour_target / neighbour_income
    statistics = np.empty((len(X), 5 * len(n_neighbors) + 1))
    for position, k in enumerate(n_neighbors):
        first = 5 * position
        # sum / k is what np.mean computes, bit for bit, without its per-call overhead.
        statistics[:, first] = neighbour_target[:, :k].sum(axis=1) / k
        statistics[:, first + 1] = _row_medians(neighbour_target[:, :k])
        statistics[:, first + 2] = distance[:, k - 1]
        statistics[:, first + 3] = price_per_income[:, :k].sum(axis=1) / k
        statistics[:, first + 4] = neighbour_income[:, :k].sum(axis=1) / k
    statistics[:, -1] = np.log(neighbour_target).std(axis=1)
    return statistics


def _row_medians(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=1)`` without its per-call overhead (in a profile, a large share of a
    one-row transform)."""
    ordered = np.sort(values, axis=1)
    middle = values.shape[1] // 2
    if values.shape[1] % 2:
        return ordered[:, middle]
    return (ordered[:, middle - 1] + ordered[:, middle]) / 2


class HousingFeatures(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """The nine raw input columns → the regressor's feature matrix.

    Median-imputes ``total_bedrooms``, one-hot encodes ``ocean_proximity``, adds
    ratio features, rotated coordinates and neighbourhood target statistics.
    ``X`` is a DataFrame, or the mapping of column name → array that
    ``model.contract.validate_input`` returns (the serving path: columns converted
    once); a missing ``total_bedrooms`` column means missing on every row.

    Parameters
    ----------
    n_neighbors : tuple of int
        Neighbourhood sizes of :class:`NeighbourhoodTargetEncoder`.
    """

    def __init__(self, n_neighbors=(5, 15, 50)):
        self.n_neighbors = n_neighbors

    def fit(self, X, y):
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X, y):
        numeric = _numeric_columns(X)
        self.bedrooms_imputer_ = MedianImputer().fit(numeric["total_bedrooms"])
        self.ocean_proximity_encoder_ = OneHotCategories().fit(
            np.asarray(X[CATEGORICAL_COLUMN], dtype=object)
        )
        self.neighbourhood_encoder_ = NeighbourhoodTargetEncoder(self.n_neighbors)
        neighbourhood = self.neighbourhood_encoder_.fit_transform(_location_and_income(numeric), y)
        return self._assemble(numeric, X[CATEGORICAL_COLUMN], neighbourhood)

    def transform(self, X) -> np.ndarray:
        numeric = _numeric_columns(X)
        neighbourhood = self.neighbourhood_encoder_.transform(_location_and_income(numeric))
        return self._assemble(numeric, X[CATEGORICAL_COLUMN], neighbourhood)

    def _assemble(self, numeric: dict, categories, neighbourhood: np.ndarray) -> np.ndarray:
        numeric["total_bedrooms"] = self.bedrooms_imputer_.transform(numeric["total_bedrooms"])
        longitude, latitude = numeric["longitude"], numeric["latitude"]
        blocks = [
            np.column_stack(list(numeric.values())),
            ratio_features(
                numeric["total_rooms"],
                numeric["total_bedrooms"],
                numeric["population"],
                numeric["households"],
            ),
            np.column_stack([longitude + latitude, longitude - latitude]),
            self.ocean_proximity_encoder_.transform(np.asarray(categories, dtype=object)),
            neighbourhood,
        ]
        return np.concatenate(blocks, axis=1)

    def get_feature_names_out(self, input_features=None):
        return np.array(
            [
                *NUMERIC_COLUMNS,
                "rooms_per_household",
                "bedrooms_per_room",
                "population_per_household",
                "rooms_per_person",
                "longitude_plus_latitude",
                "longitude_minus_latitude",
                *(f"{CATEGORICAL_COLUMN}_{c}" for c in self.ocean_proximity_encoder_.categories_),
                *self.neighbourhood_encoder_.get_feature_names_out(),
            ],
            dtype=object,
        )


def _numeric_columns(X) -> dict[str, np.ndarray]:
    n_rows = len(X[CATEGORICAL_COLUMN])
    return {
        column: np.asarray(X[column], dtype=float) if column in X else np.full(n_rows, np.nan)
        for column in NUMERIC_COLUMNS
    }


def _location_and_income(numeric: dict[str, np.ndarray]) -> np.ndarray:
    return np.column_stack([numeric["latitude"], numeric["longitude"], numeric["median_income"]])
