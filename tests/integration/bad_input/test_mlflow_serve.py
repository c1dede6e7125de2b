"""The bad-input matrix against `mlflow models serve`: every data case as ``dataframe_split``, a
handful also as ``dataframe_records``, ``inputs`` and CSV, the format cases, and 100,000 rows.
After every case the next valid request must still get the right prediction."""

from __future__ import annotations

import pytest

from testbed.bad_input.bodies import ENCODERS, table
from testbed.bad_input.cases import BIG_ROWS, SERVE_RAW, DataCase, RawCase, serve_cases
from testbed.mlflow_cli import mlflow_models_serve
from testbed.processes import free_port, running_server
from tests.integration.bad_input.judging import (
    assert_predictions,
    judge_http,
    param,
    post,
    serve_message,
    serve_predictions,
    short,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def serve_url(model_dir) -> str:
    port = free_port()
    command = mlflow_models_serve(model_dir, port)
    with running_server(command, port, "/ping", timeout=240) as server:
        yield server.base_url


def assert_still_answers(serve_url: str, form: str, expected) -> None:
    encode, content_type = ENCODERS[form]
    response = post(f"{serve_url}/invocations", encode(table()), content_type)
    assert response.status_code == 200, f"the next valid request failed: HTTP {response.status_code}"
    assert_predictions(serve_predictions(response), expected(table()))


@pytest.mark.parametrize(
    "form, case",
    [param(f"{form}-{case.id}", form, case, known=case.known.get(form)) for form, case in serve_cases()],
)
def test_data(serve_url, expected, form: str, case: DataCase):
    encode, content_type = ENCODERS[form]
    outcome = case.outcome(form)
    response = post(f"{serve_url}/invocations", encode(case.data), content_type)
    assert_still_answers(serve_url, form, expected)
    values = expected(case.data) if outcome.accepted else None
    judge_http(outcome, response, serve_message(response), serve_predictions(response), values)


@pytest.mark.parametrize("case", [param(case.id, case, known=case.known) for case in SERVE_RAW])
def test_format(serve_url, expected, case: RawCase):
    response = post(serve_url + (case.path or "/invocations"), case.body(), case.content_type)
    assert_still_answers(serve_url, "split", expected)
    judge_http(case.outcome, response, serve_message(response), serve_predictions(response), None)


def test_100k_rows_get_100k_correct_predictions(serve_url, expected, big_batch, big_expected):
    body = b'{"dataframe_split": ' + big_batch.to_json(orient="split", index=False).encode() + b"}"
    response = post(f"{serve_url}/invocations", body, "application/json")
    assert response.status_code == 200, short(response.text)
    predictions = serve_predictions(response)
    assert len(predictions) == BIG_ROWS
    assert_predictions(predictions, big_expected)
    assert_still_answers(serve_url, "split", expected)
