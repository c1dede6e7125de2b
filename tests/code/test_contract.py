"""The input contract, rule by rule, and as properties (Hypothesis) of the real default model."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException

from model.contract import (
    LATITUDE_RANGE,
    LONGITUDE_RANGE,
    InputContractError,
    _stored_values,
    find_violations,
    validate_input,
)
from model.data import FEATURE_COLUMNS, TARGET

VALID_ROW = {
    "longitude": -122.23,
    "latitude": 37.88,
    "housing_median_age": 41.0,
    "total_rooms": 880.0,
    "total_bedrooms": 129.0,
    "population": 322.0,
    "households": 126.0,
    "median_income": 8.3252,
    "ocean_proximity": "NEAR BAY",
}


def frame(**changes) -> pd.DataFrame:
    rows = pd.DataFrame([VALID_ROW] * 3)
    for column, value in changes.items():
        rows[column] = rows[column].astype(object)
        rows.at[1, column] = value
    return rows


def test_a_valid_frame_passes_and_extra_columns_are_ignored():
    validate_input(frame().assign(comment="x"))
    validate_input(frame(total_bedrooms=None))
    validate_input(frame().drop(columns="total_bedrooms"))


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"households": 0.0}, "column 'households', row 1: must be greater than 0"),
        ({"total_rooms": -5.0}, "column 'total_rooms', row 1: must be greater than 0"),
        ({"population": 0}, "column 'population', row 1: must be greater than 0"),
        ({"total_bedrooms": -1.0}, "column 'total_bedrooms', row 1: must not be negative"),
        ({"median_income": float("inf")}, "column 'median_income', row 1: must be finite"),
        ({"housing_median_age": float("nan")}, "column 'housing_median_age', row 1: must not be missing"),
        ({"latitude": 51.5}, "column 'latitude', row 1: must lie in California"),
        ({"longitude": -0.12}, "column 'longitude', row 1: must lie in California"),
        ({"median_income": "8.3"}, "column 'median_income', row 1: must be a number"),
        ({"households": True}, "column 'households', row 1: must be a number"),
        ({"ocean_proximity": None}, "column 'ocean_proximity', row 1: must be a non-empty string"),
        ({"ocean_proximity": 3}, "column 'ocean_proximity', row 1: must be a non-empty string"),
    ],
)
def test_each_rule_names_column_row_and_rule(changes, named):
    with pytest.raises(InputContractError, match=named) as raised:
        validate_input(frame(**changes))
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"


def test_messages_never_echo_the_values_sent():
    with pytest.raises(InputContractError) as raised:
        validate_input(frame(households=-987654.0))
    assert "987654" not in raised.value.message


def test_a_missing_required_column_and_a_duplicated_column_are_named():
    with pytest.raises(InputContractError, match="column 'median_income': required column is missing"):
        validate_input(frame().drop(columns="median_income"))
    duplicated = pd.concat([frame(), frame()[["households"]]], axis=1)
    with pytest.raises(InputContractError, match="column 'households': column given more than once"):
        validate_input(duplicated)


def test_the_count_of_broken_rows_is_reported():
    rows = pd.DataFrame([VALID_ROW] * 4).assign(households=[1.0, 0.0, 0.0, 2.0])
    with pytest.raises(InputContractError, match=r"row 1: must be greater than 0 \(2 rows break it\)"):
        validate_input(rows)


def test_zero_rows_get_an_empty_answer(trained_model):
    empty = pd.DataFrame([VALID_ROW]).head(0)
    answer = trained_model.predict(None, empty)
    assert list(answer.columns) == [TARGET] and len(answer) == 0


finite = dict(allow_nan=False, allow_infinity=False)
valid_rows = st.fixed_dictionaries(
    {
        "longitude": st.floats(*LONGITUDE_RANGE, **finite),
        "latitude": st.floats(*LATITUDE_RANGE, **finite),
        "housing_median_age": st.floats(0, 200, **finite),
        "total_rooms": st.floats(1e-3, 1e6, **finite),
        "total_bedrooms": st.one_of(st.none(), st.floats(0, 1e6, **finite)),
        "population": st.floats(1e-3, 1e6, **finite),
        "households": st.floats(1e-3, 1e6, **finite),
        "median_income": st.floats(0, 1e3, **finite),
        "ocean_proximity": st.sampled_from(
            ["<1H OCEAN", "INLAND", "ISLAND", "NEAR BAY", "NEAR OCEAN", "ON A BOAT"]
        ),
    }
)
any_number = st.one_of(
    st.floats(), st.integers(-(10**6), 10**6), st.none(), st.text(max_size=3), st.booleans()
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(valid_rows, min_size=1, max_size=5))
def test_any_row_that_passes_validation_gets_a_finite_prediction(trained_model, rows):
    answer = trained_model.predict(None, pd.DataFrame(rows, columns=list(FEATURE_COLUMNS)))
    assert len(answer) == len(rows) and np.isfinite(answer[TARGET]).all()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=valid_rows, column=st.sampled_from(list(FEATURE_COLUMNS)), value=any_number)
def test_any_row_either_predicts_finitely_or_gets_the_contract_error(trained_model, row, column, value):
    """Never a crash, never a NaN: a hostile value in any column gives the 400 error or a finite price."""
    rows = pd.DataFrame([{**row, column: value}], columns=list(FEATURE_COLUMNS))
    try:
        answer = trained_model.predict(None, rows)
    except MlflowException as error:
        assert isinstance(error, InputContractError) and f"column '{column}'" in error.message
    else:
        assert np.isfinite(answer[TARGET]).all()


def test_a_server_cannot_prefix_the_message_with_the_payload():
    # What MLflow's scoring server does to a model's MlflowException before answering.
    error = InputContractError("households", 1, "must be greater than 0")
    error.message = f"Failed to predict data '{frame()}'. \nError: {error.message}"
    assert error.message == "invalid input: column 'households', row 1: must be greater than 0"
    assert "NEAR BAY" not in error.serialize_as_json()


def test_an_overlong_category_is_refused_without_echoing_it():
    with pytest.raises(
        InputContractError, match="column 'ocean_proximity', row 1: must be at most 100 characters"
    ) as raised:
        validate_input(frame(ocean_proximity="NEAR BAY" * 1000))
    assert "NEAR BAYNEAR BAY" not in raised.value.message


def test_find_violations_lists_every_broken_rule_with_its_rows():
    rows = frame(households=0.0, latitude=51.5)
    rows.at[2, "median_income"] = "8.3"
    found = {(v.column, v.rule.split(",")[0]): np.flatnonzero(v.rows).tolist() for v in find_violations(rows)}
    assert found == {
        ("latitude", "must lie in California"): [1],
        ("households", "must be greater than 0"): [1],
        ("median_income", "must be a number"): [2],
    }
    assert find_violations(frame()) == []
    (missing,) = find_violations(frame().drop(columns="households"))
    assert (missing.column, missing.rows) == ("households", None)


@pytest.mark.parametrize(
    "values",
    [
        [1.5, np.nan, 3.0],
        [1, 2, 3],
        [True, False, True],
        pd.array([1.5, None, 3.0], dtype="Float64"),
        ["a", None, "c"],
        pd.array(["a", None, "c"], dtype="string"),
        pd.array(["a", None, "c"], dtype="string[pyarrow]"),
        pd.Categorical(["a", None, "c"]),
    ],
    ids=["float64", "int64", "bool", "Float64", "object", "string", "string[pyarrow]", "category"],
)
def test_a_column_read_without_building_a_series_holds_what_frame_name_holds(values):
    rows = frame().assign(extra=values)
    stored = _stored_values(rows, list(rows.columns).index("extra"))
    pd.testing.assert_series_equal(pd.Series(stored, index=rows.index, name="extra"), rows["extra"])


def test_text_dtypes_of_ocean_proximity_validate_like_objects():
    expected = validate_input(frame())["ocean_proximity"].tolist()
    for dtype in ("string", "string[pyarrow]", "category"):
        rows = frame().astype({"ocean_proximity": dtype})
        assert validate_input(rows)["ocean_proximity"].tolist() == expected
