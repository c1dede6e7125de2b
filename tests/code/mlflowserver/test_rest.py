"""Unit tests of mlflowserver.rest: the body rewrites of the REST middleware (capped errors, null
fields omitted), the infer route answered from ASGI with kserve's statuses, driven in process with
ASGI messages on the tiny pyfunc (the real server: tests/integration/test_mlflowserver_server.py)."""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import orjson
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady
from kserve.model_repository import ModelRepository

from mlflowserver.limits import PayloadTooLarge, ServerBusy
from mlflowserver.rest import V2Infer, _error_status, capped_error, drop_null_fields, without_nulls
from mlflowserver.server import MLflowDataPlane


def test_capped_error_bounds_any_error_message():
    headers = [(b"content-type", b"application/json"), (b"content-length", b"1")]
    long = orjson.dumps({"error": "x\n" * 10_000})
    kept, body = capped_error(headers, long)
    message = orjson.loads(body)["error"]
    assert len(message) == 513 and message.endswith("…") and "\n" not in message
    assert (b"content-length", str(len(body)).encode()) in kept
    assert capped_error(headers, b'{"error": "short"}') == (headers, b'{"error": "short"}')


def test_null_optional_fields_are_dropped_at_the_top_and_in_each_output_only():
    document = {
        "model_name": "m",
        "model_version": None,
        "versions": None,
        "parameters": None,
        "outputs": [{"name": "y", "parameters": None, "data": [None]}, "not an output"],
    }
    assert drop_null_fields(document) is True
    assert document == {"model_name": "m", "outputs": [{"name": "y", "data": [None]}, "not an output"]}
    assert drop_null_fields(document) is False


def test_without_nulls_drops_null_optional_fields_from_json_and_binary_responses():
    doc = b'{"model_name":"m","model_version":null,"id":"1","parameters":null,"outputs":[{"name":"y","parameters":null,"data":[null]}]}'
    headers, body = without_nulls([(b"content-type", b"application/json"), (b"content-length", b"999")], doc)
    assert body == b'{"model_name":"m","id":"1","outputs":[{"name":"y","data":[null]}]}'
    assert (b"content-length", str(len(body)).encode()) in headers and (
        b"content-length",
        b"999",
    ) not in headers
    head = b'{"model_version":null,"outputs":[{"name":"y","parameters":{"binary_data_size":8}}]}'
    headers, body = without_nulls(
        [(b"inference-header-content-length", str(len(head)).encode())], head + b"\x00" * 8
    )
    new_head = b'{"outputs":[{"name":"y","parameters":{"binary_data_size":8}}]}'
    assert body == new_head + b"\x00" * 8
    assert (b"inference-header-content-length", str(len(new_head)).encode()) in headers
    untouched = [(b"content-length", b"2")]
    assert without_nulls(untouched, b"[]") == (untouched, b"[]")


async def _not_the_infer_route(scope, receive, send):
    raise AssertionError(f"{scope['method']} {scope['path']} reached kserve's app")


def infer(model, path: str, body: bytes) -> tuple[int, dict, bytes]:
    """``POST path`` through V2Infer serving ``model``: the status, headers and body it sends."""
    registry = ModelRepository()
    registry.update(model)
    handler = V2Infer(_not_the_infer_route, MLflowDataPlane(registry))
    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-type", b"text/plain")]}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(handler(scope, receive, send))
    start, answer = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert headers["content-length"] == str(len(answer["body"]))
    return start["status"], headers, answer["body"]


def test_the_infer_route_answers_without_null_fields_and_errors_in_kserves_form(model):
    body = b'{"id": "1", "inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 2.5]},'
    body += b' {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["ab", "c"]}]}'
    status, headers, answer = infer(model, "/v2/models/tiny/infer", body)
    assert (status, headers["content-type"]) == (200, "application/json")
    assert orjson.loads(answer) == {
        "id": "1",
        "model_name": "tiny",
        "outputs": [{"name": "y", "shape": [2], "datatype": "FP64", "data": [4.0, 6.0]}],
    }
    status, _, answer = infer(model, "/v2/models/nope/infer", body)
    assert (status, orjson.loads(answer)) == (404, {"error": "Model with name nope does not exist."})
    status, _, answer = infer(model, "/v2/models/tiny/infer", b'{"inputs": ')
    assert status == 400 and orjson.loads(answer)["error"].startswith("invalid request body: malformed JSON")


def test_the_infer_route_gives_kserves_statuses_and_no_internals():
    assert _error_status(InvalidInput("bad")) == (400, "bad")
    assert _error_status(ModelNotFound("m")) == (404, "Model with name m does not exist.")
    assert _error_status(ModelNotReady("m"))[0] == 503
    assert _error_status(PayloadTooLarge("big")) == (413, "big")
    assert _error_status(ServerBusy("busy")) == (503, "busy")
    assert _error_status(InferenceError("model failed")) == (500, "model failed")
    assert _error_status(KeyError("secret detail")) == (500, "internal error (KeyError); see the server log")
