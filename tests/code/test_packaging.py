from pathlib import Path

import pandas as pd

from model.data import FEATURE_COLUMNS, PROJECT_ROOT
from model.packaging import RUNTIME_PACKAGES, SIGNATURE, input_example, locked_versions, pip_requirements


def test_locked_versions_read_pins_with_extras(tmp_path: Path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "# comment\npsycopg[binary]==3.3.9\n    # via x\nNumPy==2.4.6 ; python_version >= '3.11'\n"
        "Scikit_Learn==1.9.1  # inline comment\n--index-url https://pypi.org/simple\n"
    )
    assert locked_versions(lock) == {"psycopg": "3.3.9", "numpy": "2.4.6", "scikit-learn": "1.9.1"}


def test_artifact_requirements_are_the_locked_versions():
    pins = locked_versions()
    assert pip_requirements() == [f"{package}=={pins[package]}" for package in RUNTIME_PACKAGES]


def test_conda_environment_installs_exactly_the_lock():
    conda = (PROJECT_ROOT / "conda.yaml").read_text()
    assert "python=3.11" in conda and "-r requirements.lock" in conda


def test_signature_is_the_nine_raw_columns_to_the_target_and_its_optional_interval():
    # Spelled out: a change of the inputs changes every caller's API and must be declared in
    # model/signatures.py before a promotion lets it through.
    numbers = ["longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms"]
    numbers += ["population", "households", "median_income"]
    assert SIGNATURE.inputs.to_dict() == [
        *({"type": "double", "name": name, "required": name != "total_bedrooms"} for name in numbers),
        {"type": "string", "name": "ocean_proximity", "required": True},
    ]
    assert SIGNATURE.outputs.to_dict() == [
        {"type": "double", "name": "median_house_value", "required": True},
        {"type": "double", "name": "median_house_value_lower", "required": False},
        {"type": "double", "name": "median_house_value_upper", "required": False},
    ]
    assert SIGNATURE.params.to_dict() == [
        {"name": "interval", "type": "double", "default": None, "shape": None}
    ]


def test_input_example_has_raw_columns_and_a_missing_bedrooms_row(raw_frame: pd.DataFrame):
    example = input_example(raw_frame)
    assert list(example.columns) == list(FEATURE_COLUMNS)
    assert example["total_bedrooms"].isna().sum() == 1
