from pathlib import Path

import pandas as pd
import pytest

from model.data import (
    TEST_SIZE,
    DataContractError,
    fetch_verified,
    file_md5,
    income_category,
    pinned_md5,
    split_train_test,
    validate_raw,
)


def test_pinned_md5_is_read_from_the_dvc_file():
    assert pinned_md5() == "d1c47305887e2252bf1ccbd74ff159a6"


def test_fetch_refuses_one_changed_byte_and_leaves_nothing_behind(tmp_path: Path, raw_data_path: Path):
    corrupted = tmp_path / "corrupted.csv"
    data = bytearray(raw_data_path.read_bytes())
    data[1000] ^= 0x01
    corrupted.write_bytes(bytes(data))
    destination = tmp_path / "raw" / "housing.csv"
    with pytest.raises(DataContractError, match="does not match the pinned"):
        fetch_verified(str(corrupted), destination, file_md5(raw_data_path))
    assert list(destination.parent.iterdir()) == []


def test_fetch_places_verified_bytes(tmp_path: Path, raw_data_path: Path):
    destination = tmp_path / "housing.csv"
    fetch_verified(str(raw_data_path), destination, file_md5(raw_data_path))
    assert destination.read_bytes() == raw_data_path.read_bytes()


def test_fetch_reports_an_unreadable_source(tmp_path: Path):
    with pytest.raises(DataContractError, match="cannot read"):
        fetch_verified(str(tmp_path / "absent.csv"), tmp_path / "housing.csv", pinned_md5())


def test_validate_raw_names_the_missing_column(raw_frame: pd.DataFrame):
    with pytest.raises(DataContractError, match="median_income"):
        validate_raw(raw_frame.drop(columns="median_income"), source="frame")


def test_validate_raw_rejects_an_unknown_category(raw_frame: pd.DataFrame):
    frame = raw_frame.head(3).copy()
    frame.loc[frame.index[0], "ocean_proximity"] = "ON THE MOON"
    with pytest.raises(DataContractError, match="ON THE MOON"):
        validate_raw(frame, source="frame")


def test_split_is_frozen_and_stratified_on_income_category(raw_frame: pd.DataFrame):
    train, test = split_train_test(raw_frame)
    again_train, again_test = split_train_test(raw_frame)
    assert train.index.equals(again_train.index) and test.index.equals(again_test.index)
    assert len(test) == round(TEST_SIZE * len(raw_frame)) and len(train) + len(test) == len(raw_frame)
    overall = income_category(raw_frame["median_income"]).value_counts(normalize=True)
    in_test = income_category(test["median_income"]).value_counts(normalize=True)
    assert (overall - in_test).abs().max() <= 1 / len(test)  # each income category within one row
