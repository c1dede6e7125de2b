"""Unit tests of mlflowserver.server: request bodies to kserve requests, the REST middleware's
body rewrites, the repository, the listen address and the infer handler's statuses (no server
started: tests/integration/test_mlflowserver_server.py starts one)."""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import orjson
import pytest
from kserve.errors import InferenceError, InvalidInput, ModelNotFound
from kserve.model_repository import ModelRepository
from kserve.protocol.infer_type import InferInput, InferRequest

from mlflowserver.limits import PayloadTooLarge
from mlflowserver.model import MLflowModel
from mlflowserver.server import (
    MLflowDataPlane,
    ServedModelRepository,
    binary_request,
    capped_error,
    json_request,
    listen_address,
    without_nulls,
)


def test_json_body_without_content_type_is_an_inference_request():
    body = b'{"id": "7", "inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [NaN]}]}'
    plane = MLflowDataPlane(ModelRepository())
    request = plane.decode_inference_request(body, {}, "m")
    assert request.id == "7" and request.inputs[0].name == "a" and np.isnan(request.inputs[0].data[0])
    with pytest.raises(
        InvalidInput, match=r"invalid request body: malformed JSON at position 11 \(Expecting"
    ):
        json_request(b'{"inputs": ')
    with pytest.raises(InvalidInput, match="invalid request body: inputs: Field required"):
        json_request(b'{"rows": []}')
    assert plane.metadata()["extensions"] == ["binary_tensor_data", "parameters"]


def test_binary_requests_are_parsed_by_kserve_and_malformed_ones_are_400():
    a = InferInput("a", [2], "FP64")
    a.set_data_from_numpy(np.array([1.0, 2.0]), binary_data=True)
    body, json_length = InferRequest("m", [a]).to_rest()
    request = binary_request(body, str(json_length), "m")
    assert request.inputs[0].data == [1.0, 2.0]
    for header in ("x", "0", str(len(body) + 1)):
        with pytest.raises(InvalidInput, match="inference-header-content-length header must be the length"):
            binary_request(body, header, "m")
    with pytest.raises(InvalidInput, match="binary_data_size, datatype and shape match"):
        binary_request(body[:-4], str(json_length), "m")
    bad_utf8 = InferInput("s", [1], "BYTES")
    bad_utf8.set_data_from_numpy(np.array([b"\xff"], dtype=object), binary_data=True)
    body, json_length = InferRequest("m", [bad_utf8]).to_rest()
    with pytest.raises(InvalidInput, match="BYTES data are not valid UTF-8"):
        binary_request(body, str(json_length), "m")


@pytest.mark.parametrize("levels", [2_000, 100_000])
def test_deeply_nested_json_is_400_naming_the_depth(levels):
    body = b'{"inputs": [{"name": "a", "data": ' + b"[" * levels + b"1" + b"]" * levels + b"}]}"
    with pytest.raises(InvalidInput, match="^invalid request body: JSON nested too deeply$"):
        json_request(body)
    with pytest.raises(InvalidInput, match="depth limit exceeded"):
        binary_request(b"[" * levels, str(levels), "m")


def test_json_numbers_nan_and_infinity_are_accepted_as_python_clients_send_them():
    request = json_request(
        b'{"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [NaN, Infinity]}]}'
    )
    assert np.isnan(request.inputs[0].data[0]) and request.inputs[0].data[1] == np.inf


def test_capped_error_bounds_any_error_message():
    headers = [(b"content-type", b"application/json"), (b"content-length", b"1")]
    long = orjson.dumps({"error": "x\n" * 10_000})
    kept, body = capped_error(headers, long)
    message = orjson.loads(body)["error"]
    assert len(message) == 513 and message.endswith("…") and "\n" not in message
    assert (b"content-length", str(len(body)).encode()) in kept
    assert capped_error(headers, b'{"error": "short"}') == (headers, b'{"error": "short"}')


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


def test_served_model_repository_loads_nothing_new_and_unloads_nothing():
    registry = ModelRepository()
    registry.update(MLflowModel("m", "unused"))
    repository = ServedModelRepository(registry)
    assert asyncio.run(repository.load("m")) == {"name": "m", "load": True}
    with pytest.raises(ModelNotFound, match="nope"):
        asyncio.run(repository.load("nope"))
    with pytest.raises(InvalidInput, match="model 'm' cannot be unloaded"):
        asyncio.run(repository.unload("m"))
    assert registry.get_model("m") is not None


def test_listen_address():
    assert listen_address("127.0.0.1", 81) == "127.0.0.1:81"
    assert listen_address("::", 81) == "[::]:81" and listen_address("[::1]", 81) == "[::1]:81"


def test_the_infer_handler_gives_kserves_statuses_and_no_internals():
    from kserve.errors import ModelNotReady

    from mlflowserver.limits import ServerBusy
    from mlflowserver.server import _error_status

    assert _error_status(InvalidInput("bad")) == (400, "bad")
    assert _error_status(ModelNotFound("m")) == (404, "Model with name m does not exist.")
    assert _error_status(ModelNotReady("m"))[0] == 503
    assert _error_status(PayloadTooLarge("big")) == (413, "big")
    assert _error_status(ServerBusy("busy")) == (503, "busy")
    assert _error_status(InferenceError("model failed")) == (500, "model failed")
    assert _error_status(KeyError("secret detail")) == (500, "internal error (KeyError); see the server log")
