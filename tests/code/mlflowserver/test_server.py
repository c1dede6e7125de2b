"""Unit tests of mlflowserver.server: the data plane's body rule, extensions and short names, the
repository and the listen address (no server started: tests/integration/test_mlflowserver_server.py
starts one)."""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import pytest
from kserve.errors import InvalidInput, ModelNotFound
from kserve.model_repository import ModelRepository
from kserve.protocol.infer_type import InferInput, InferRequest

from mlflowserver.model import MLflowModel
from mlflowserver.server import MLflowDataPlane, ServedModelRepository, listen_address


def test_a_body_is_json_whatever_its_content_type_unless_the_binary_header_is_there():
    plane = MLflowDataPlane(ModelRepository())
    body = b'{"id": "7", "inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [NaN]}]}'
    request = plane.decode_inference_request(body, {}, "m")
    assert request.id == "7" and request.inputs[0].name == "a" and np.isnan(request.inputs[0].data[0])
    a = InferInput("a", [2], "FP64")
    a.set_data_from_numpy(np.array([1.0, 2.0]), binary_data=True)
    body, json_length = InferRequest("m", [a]).to_rest()
    headers = {"inference-header-content-length": str(json_length)}
    assert plane.decode_inference_request(body, headers, "m").inputs[0].data == [1.0, 2.0]
    assert plane.metadata()["extensions"] == ["binary_tensor_data", "parameters"]


def test_names_in_the_data_planes_404s_are_cut_short():
    long = "n" * 10_000
    plane = MLflowDataPlane(ModelRepository())
    with pytest.raises(ModelNotFound) as info:
        plane.get_model_from_registry(long)
    assert info.value.reason == f"Model with name {'n' * 64}… does not exist."
    with pytest.raises(ModelNotFound) as info:
        asyncio.run(plane.model_ready(long))
    assert len(info.value.reason) < 100


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
