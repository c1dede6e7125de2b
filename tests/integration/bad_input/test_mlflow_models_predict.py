"""The bad-input matrix against `mlflow models predict`: the data cases marked ``cli`` as a
``dataframe_split`` JSON file, the format cases, and 100,000 rows as CSV. Each case is a fresh
process."""

from __future__ import annotations

import pytest

from testbed.bad_input.bodies import encode_split
from testbed.bad_input.cases import BIG_ROWS, CLI_RAW, DATA_CASES, DataCase, RawCase, sent
from testbed.bad_input.expectations import ACCEPT
from tests.integration.bad_input.judging import judge_cli, mlflow_models_predict, param

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "case",
    [param(c.id, c, known=c.known.get("cli")) for c in DATA_CASES if sent(c, "cli")],
)
def test_data(model_dir, expected, tmp_path, case: DataCase):
    outcome = case.outcome("cli")
    result = mlflow_models_predict(str(model_dir), encode_split(case.data), "json", tmp_path)
    judge_cli(outcome, result, expected(case.data) if outcome.accepted else None)


@pytest.mark.parametrize("case", [param(c.id, c, known=c.known) for c in CLI_RAW])
def test_format(model_dir, tmp_path, case: RawCase):
    result = mlflow_models_predict(case.model or str(model_dir), case.body(), case.content_type, tmp_path)
    judge_cli(case.outcome, result, None)


def test_100k_rows_csv_get_100k_correct_predictions(model_dir, big_batch, big_expected, tmp_path):
    result = mlflow_models_predict(str(model_dir), big_batch.to_csv(index=False).encode(), "csv", tmp_path)
    judge_cli(ACCEPT, result, big_expected)
    assert len(result.predictions) == BIG_ROWS
