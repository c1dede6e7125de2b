"""schemathesis (PyPI) against the V2 runtime's own OpenAPI document: no request may get a 5xx.

One ``python -m mlflowserver`` on 127.0.0.1 serves a foreign pyfunc (tests/foreign_models.py,
``params``: a column input, a ParamSchema, optional outputs). schemathesis loads
``/openapi.json`` and, for every operation in it, sends generated requests (valid and invalid
per the schema; the path's ``model_name`` set to the served model), applying its
``not_a_server_error`` check to each answer. Bounded: ``EXAMPLES`` per operation and generation
mode, derandomized (a fixed seed), no example database. Once it found kserve's 501 for a ``model_version`` and
503 for loading a model; those are 404s now (docs/codebase/kserve-runtime.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from testbed.mlflow_cli import mlflowserver
from testbed.processes import free_port, process_env, running_server
from tests import foreign_models

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = "params"
EXAMPLES = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = foreign_models.build(MODEL, tmp_path_factory.mktemp("fuzz"))
    port = free_port()
    cmd = mlflowserver(model.path, MODEL, port)
    health = f"/v2/models/{MODEL}/ready"
    with running_server(cmd, port, health, env=process_env(), timeout=180, cwd=REPO) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server):
    return schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")


# The operations of kserve 0.21's document (checked below): one test each, so a failure names it.
OPERATIONS = [
    "GET /",
    "GET /metrics",
    "GET /v1/models",
    "GET /v1/models/{model_name}",
    "POST /v1/models/{model_name}:predict",
    "POST /v1/models/{model_name}:explain",
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models",
    "GET /v2/models/{model_name}",
    "GET /v2/models/{model_name}/ready",
    "GET /v2/models/{model_name}/versions/{model_version}/ready",
    "POST /v2/models/{model_name}/infer",
    "POST /v2/repository/models/{model_name}/load",
    "POST /v2/repository/models/{model_name}/unload",
]


def test_the_document_has_these_operations(api):
    assert sorted(result.ok().label for result in api.get_all_operations()) == sorted(OPERATIONS)


# Positive cases for every operation, with the served model's name; negative ones (invalid per
# the schema, any model name) for the operations with something other than strings to get
# wrong: a body or a query (any string is a valid path parameter).
NEGATIVE = [
    "GET /v2/models/{model_name}",
    "GET /v2/models/{model_name}/ready",
    "POST /v2/models/{model_name}/infer",
]
RUNS = [(label, GenerationMode.POSITIVE) for label in OPERATIONS]
RUNS += [(label, GenerationMode.NEGATIVE) for label in NEGATIVE]


@pytest.mark.parametrize("label,mode", RUNS, ids=[f"{label}-{mode.value}" for label, mode in RUNS])
def test_no_server_errors(api, label, mode):
    operation = api.find_operation_by_label(label)
    positive = mode == GenerationMode.POSITIVE and "{model_name}" in label
    fixed = {"model_name": MODEL} if positive else None
    session = requests.Session()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
    def check(case):
        case.call_and_validate(session=session, checks=[not_a_server_error], timeout=30)

    check()


def test_the_model_still_answers_after_the_fuzzing(server):
    # generated load/unload requests named the served model: it must still be there
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [2.0]}]}
    r = requests.post(f"{server.base_url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2.0]
