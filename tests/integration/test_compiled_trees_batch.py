"""Both batch engines score with the compiled trees the artifact carries. The trees give
LightGBM's bits, so an equal answer cannot tell which ran: here the artifact's regressor trees
are replaced by those of its first booster twice, and the local engine and Spark's
``spark_udf`` (one local Spark session) both answer what that booster alone predicts, not the
two boosters' average that LightGBM would give."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from model import packaging
from model.batch import BatchJob
from model.batch.local import score_local
from model.batch.spark import score_spark, spark_session
from model.compiled_trees import compile_boosters
from model.contract import validate_input
from model.data import FEATURE_COLUMNS, TARGET
from model.train import TrainingConfig, fit_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_model(split):
    return fit_model(split[0].head(4000), TrainingConfig(n_estimators=30, cv_folds=0))


@pytest.fixture(scope="module")
def rows(split) -> pd.DataFrame:
    frame = split[1].head(200)[list(FEATURE_COLUMNS)].reset_index(drop=True)
    frame.insert(0, "block_id", np.arange(len(frame)))
    return frame


def test_the_local_and_the_spark_engine_run_the_artifacts_trees(small_model, rows, tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    packaging.save_model(small_model, model_dir)
    first = small_model.regressor.boosters[0]
    (model_dir / "artifacts" / "regressor_trees.onnx").write_bytes(compile_boosters([first, first]))
    X = small_model.features.transform(validate_input(rows[list(FEATURE_COLUMNS)]))
    first_alone = first.predict(X)
    assert not np.array_equal(first_alone, small_model.regressor.predict(X))
    rows.to_parquet(tmp_path / "in.parquet", index=False)

    local = BatchJob(str(tmp_path / "in.parquet"), str(tmp_path / "local.parquet"), id_column="block_id")
    score_local(local, str(model_dir), progress=False)
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "local.parquet")[TARGET], first_alone)

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    spark = spark_session("local[1]")
    try:
        spark.sparkContext.setLogLevel("ERROR")
        job = BatchJob(
            str(tmp_path / "in.parquet"),
            str(tmp_path / "spark.parquet"),
            id_column="block_id",
            engine="spark",
        )
        score_spark(job, str(model_dir), spark)
    finally:
        spark.stop()
    scored = pd.read_parquet(tmp_path / "spark.parquet").sort_values("block_id")
    np.testing.assert_array_equal(scored[TARGET], first_alone)
