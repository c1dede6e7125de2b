"""The bad-input matrix against the KServe V2 runtime (``python -m mlflowserver``): every data case as
a V2 ``InferRequest``, the format cases, and 100,000 rows. After every case the next valid
request must still get the right prediction."""

from __future__ import annotations

import json

import pytest

from model.data import CATEGORICAL_COLUMN, PROJECT_ROOT
from testbed.bad_input.bodies import dumps, encode_v2, table
from testbed.bad_input.cases import BIG_ROWS, DATA_CASES, V2_MODEL, V2_RAW, DataCase, RawCase, sent
from testbed.mlflow_cli import mlflowserver
from testbed.processes import free_port, running_server
from tests.integration.bad_input.judging import (
    assert_predictions,
    judge_http,
    param,
    post,
    short,
    v2_message,
    v2_predictions,
)

pytestmark = pytest.mark.integration

INFER = f"/v2/models/{V2_MODEL}/infer"


@pytest.fixture(scope="module")
def v2_url(model_dir) -> str:
    port = free_port()
    # The 50 MB case must reach the model's contract (its length rule), not the body limit
    # (docs/reliability.md#request-limits; the limit itself: test_mlflowserver_hostile.py).
    command = mlflowserver(model_dir, V2_MODEL, port, None, f"--max_body_bytes={64 * 2**20}")
    with running_server(command, port, "/v2/health/ready", timeout=240, cwd=PROJECT_ROOT) as server:
        yield server.base_url


def assert_still_answers(v2_url: str, expected) -> None:
    response = post(v2_url + INFER, encode_v2(table()), "application/json")
    assert response.status_code == 200, f"the next valid request failed: HTTP {response.status_code}"
    assert_predictions(v2_predictions(response), expected(table()))


@pytest.mark.parametrize(
    "case", [param(c.id, c, known=c.known.get("v2")) for c in DATA_CASES if sent(c, "v2")]
)
def test_data(v2_url, expected, case: DataCase):
    outcome = case.outcome("v2")
    response = post(v2_url + INFER, encode_v2(case.data), "application/json")
    assert_still_answers(v2_url, expected)
    values = expected(case.data) if outcome.accepted else None
    judge_http(outcome, response, v2_message(response), v2_predictions(response), values)


@pytest.mark.parametrize("case", [param(case.id, case, known=case.known) for case in V2_RAW])
def test_format(v2_url, expected, case: RawCase):
    response = post(v2_url + (case.path or INFER), case.body(), case.content_type)
    assert_still_answers(v2_url, expected)
    judge_http(
        case.outcome,
        response,
        v2_message(response),
        v2_predictions(response),
        expected(table()) if case.outcome.accepted else None,
    )


def test_100k_rows_get_100k_correct_predictions(v2_url, expected, big_batch, big_expected):
    inputs = [
        {
            "name": c,
            "shape": [len(big_batch)],
            "datatype": "BYTES" if c == CATEGORICAL_COLUMN else "FP64",
            "data": json.loads(big_batch[c].to_json(orient="values")),
        }
        for c in big_batch.columns
    ]
    response = post(v2_url + INFER, dumps({"inputs": inputs}), "application/json")
    assert response.status_code == 200, short(response.text)
    predictions = v2_predictions(response)
    assert len(predictions) == BIG_ROWS
    assert_predictions(predictions, big_expected)
    assert_still_answers(v2_url, expected)
