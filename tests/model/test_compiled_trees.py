"""The default model as every server runs it — its trees compiled at training time and run by
ONNX Runtime — predicts exactly what the fitted model predicts with LightGBM, on every row of
the dataset, one at a time and in one batch, with and without an interval, and on rows with
missing values and category edge cases."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from model.compiled_trees import CompiledTrees
from model.contract import validate_input
from model.data import FEATURE_COLUMNS, TARGET


@pytest.fixture(scope="module")
def served(served_model):
    return served_model.unwrap_python_model()


@pytest.fixture(scope="module")
def every_row(raw_frame) -> pd.DataFrame:
    rows = raw_frame[list(FEATURE_COLUMNS)]
    assert len(rows) == 20_640 and rows["total_bedrooms"].isna().sum() == 207
    return rows


def test_the_loaded_model_runs_its_compiled_trees(served):
    for ensemble in served.tree_ensembles().values():
        assert isinstance(ensemble.compiled, CompiledTrees)


def test_a_server_loading_and_calling_it_never_imports_lightgbm(served_model_path, every_row, tmp_path):
    """The boosters stay LightGBM text inside the artifact: no import, no parse at load."""
    rows = tmp_path / "rows.pkl"
    every_row.head(20).to_pickle(rows)
    script = (
        "import sys, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "model.predict(pd.read_pickle(sys.argv[2]), params={'interval': 0.8})\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'lightgbm'))\n"
    )
    # Outside the project, as a server runs: the model's code comes from the artifact.
    command = [sys.executable, "-c", script, str(served_model_path), str(rows)]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines()[-1] == "[]"


def test_every_row_of_the_dataset_gets_lightgbms_prediction_and_interval_bit_for_bit(
    served_model, trained_model, every_row
):
    for params in (None, {"interval": 0.8}):
        pd.testing.assert_frame_equal(
            served_model.predict(every_row, params=params),
            trained_model.predict(None, every_row, params),
            check_exact=True,
        )


def test_every_row_alone_gets_lightgbms_prediction_bit_for_bit(served, trained_model, every_row):
    X = served.features.transform(validate_input(every_row))
    for name, ensemble in served.tree_ensembles().items():
        reference = trained_model.tree_ensembles()[name]
        assert reference.compiled is None  # the fitted model predicts with LightGBM
        one_at_a_time = np.concatenate([ensemble.predict(X[i : i + 1]) for i in range(len(X))])
        np.testing.assert_array_equal(one_at_a_time, reference.predict(X), err_msg=name)


def edge_rows(every_row: pd.DataFrame) -> pd.DataFrame:
    """Missing bedrooms with every category, categories training never saw or spelt otherwise,
    the rarest one, and values at and beyond the data's extremes."""
    base = every_row.iloc[[0, 1, 2, 3, 4]].reset_index(drop=True)
    categories = ["ISLAND", "UNSEEN", "near bay", "NEAR  BAY", "x" * 100, " INLAND"]
    missing = pd.concat([base.assign(total_bedrooms=np.nan, ocean_proximity=c) for c in categories])
    extremes = pd.concat(
        [
            base.assign(median_income=every_row["median_income"].min()),
            base.assign(median_income=every_row["median_income"].max() * 10),
            base.assign(population=1.0, households=1.0, total_rooms=1.0, total_bedrooms=1.0),
            base.assign(housing_median_age=0.0, median_income=0.0, longitude=-125.0, latitude=42.5),
            base.assign(total_rooms=1e9, total_bedrooms=0.0, longitude=-114.0, latitude=32.0),
        ]
    )
    return pd.concat([missing, extremes], ignore_index=True)


def test_missing_values_and_category_edge_cases_get_lightgbms_prediction(
    served_model, trained_model, every_row
):
    rows = edge_rows(every_row)
    for params in (None, {"interval": 0.9}):
        served_answer = served_model.predict(rows, params=params)
        pd.testing.assert_frame_equal(
            served_answer, trained_model.predict(None, rows, params), check_exact=True
        )
        assert served_answer[TARGET].notna().all()
