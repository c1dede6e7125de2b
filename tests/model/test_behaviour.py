"""Behavioural tests of the default model trained on the real data (Ribeiro et al.'s CheckList style)."""

import numpy as np
import pandas as pd
import pytest

from model.data import FEATURE_COLUMNS, TARGET
from model.metrics import regression_metrics
from model.train import DEFAULT_RMSE_CEILING, predict


@pytest.fixture(scope="module")
def test_rows(split) -> pd.DataFrame:
    return split[1]


def test_quality_on_the_frozen_test_split(trained_model, test_rows):
    metrics = regression_metrics(test_rows[TARGET], predict(trained_model, test_rows))
    assert metrics["rmse"] <= DEFAULT_RMSE_CEILING, metrics
    assert metrics["r2"] >= 0.88, metrics


def test_higher_income_never_lowers_the_prediction(trained_model, test_rows):
    rows = test_rows.sample(200, random_state=0)
    base = predict(trained_model, rows)
    richer = rows.assign(median_income=rows["median_income"] * 1.5)
    assert (predict(trained_model, richer) >= base).all()


def test_large_income_rise_raises_the_typical_prediction(trained_model, test_rows):
    rows = test_rows.sample(200, random_state=1)
    base = predict(trained_model, rows)
    richer = predict(trained_model, rows.assign(median_income=rows["median_income"] + 3.0))
    assert np.median(richer - base) > 10_000


def test_row_order_does_not_change_predictions(trained_model, test_rows):
    rows = test_rows.head(300)
    shuffled = rows.sample(frac=1.0, random_state=2)
    np.testing.assert_array_equal(
        pd.Series(predict(trained_model, rows), index=rows.index).loc[shuffled.index].to_numpy(),
        predict(trained_model, shuffled),
    )


def test_column_order_and_extra_columns_do_not_change_predictions(trained_model, test_rows):
    rows = test_rows.head(300)[list(FEATURE_COLUMNS)]
    reordered = rows[list(reversed(FEATURE_COLUMNS))].assign(extra_column="ignored")
    np.testing.assert_array_equal(
        trained_model.predict(None, rows)[TARGET], trained_model.predict(None, reordered)[TARGET]
    )


def test_one_row_prediction_equals_its_batch_prediction(trained_model, test_rows):
    rows = test_rows.head(50)[list(FEATURE_COLUMNS)]
    batch = trained_model.predict(None, rows)[TARGET].to_numpy()
    single = [trained_model.predict(None, rows.iloc[[i]])[TARGET].iloc[0] for i in range(len(rows))]
    np.testing.assert_allclose(single, batch, rtol=0, atol=1e-9)


def test_missing_bedrooms_still_predict(trained_model, test_rows):
    rows = test_rows.head(20)[list(FEATURE_COLUMNS)].assign(total_bedrooms=np.nan)
    assert np.isfinite(trained_model.predict(None, rows)[TARGET]).all()
