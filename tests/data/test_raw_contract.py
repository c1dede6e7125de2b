"""The raw file's contract: what every stage downstream may rely on."""

import pandas as pd

from model.data import OCEAN_PROXIMITY_CATEGORIES, RAW_COLUMNS, TARGET, TARGET_CAP, file_md5, pinned_md5


def test_bytes_are_the_dvc_pinned_ones(raw_data_path):
    assert raw_data_path.stat().st_size == 1_423_529
    assert file_md5(raw_data_path) == pinned_md5()


def test_columns_and_types(raw_frame: pd.DataFrame):
    assert tuple(raw_frame.columns) == RAW_COLUMNS
    assert len(raw_frame) == 20_640
    numeric = raw_frame.drop(columns="ocean_proximity")
    assert all(pd.api.types.is_float_dtype(dtype) for dtype in numeric.dtypes)


def test_missing_values_only_in_total_bedrooms(raw_frame: pd.DataFrame):
    missing = raw_frame.isna().sum()
    assert missing["total_bedrooms"] == 207
    assert missing.drop("total_bedrooms").sum() == 0


def test_categories(raw_frame: pd.DataFrame):
    counts = raw_frame["ocean_proximity"].value_counts()
    assert set(counts.index) == set(OCEAN_PROXIMITY_CATEGORIES)
    assert counts["ISLAND"] == 5


def test_ranges(raw_frame: pd.DataFrame):
    assert raw_frame["longitude"].between(-124.35, -114.31).all()
    assert raw_frame["latitude"].between(32.54, 41.95).all()
    assert raw_frame["housing_median_age"].between(1, 52).all()
    assert raw_frame["median_income"].between(0.4999, 15.0001).all()
    for count in ("total_rooms", "population", "households"):
        assert (raw_frame[count] > 0).all(), count
    assert (raw_frame["total_bedrooms"].dropna() > 0).all()


def test_target_is_top_coded_at_the_census_cap(raw_frame: pd.DataFrame):
    assert raw_frame[TARGET].max() == TARGET_CAP
    assert (raw_frame[TARGET] == TARGET_CAP).sum() == 965
    assert raw_frame[TARGET].min() >= 14_999


def test_the_frozen_split_is_geron_s(split):
    train, test = split
    assert (len(train), len(test)) == (16_512, 4_128)
