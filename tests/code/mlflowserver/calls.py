"""Calls into mlflowserver as kserve makes them: a model loaded from a directory, V2 requests and
inputs built with kserve's own classes, and the model's answer read back."""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse, RequestedOutput

from mlflowserver.model import MLflowModel


def served(path, name: str) -> MLflowModel:
    model = MLflowModel(name, str(path))
    assert model.load() is True
    return model


def predict(model: MLflowModel, payload):
    """What kserve's ``Model.__call__`` does with an async ``predict``."""
    return asyncio.run(model.predict(payload))


def inp(name, datatype, data, shape=None):
    return InferInput(
        name=name, shape=shape if shape is not None else [len(data)], datatype=datatype, data=data
    )


def req(*inputs, request_id="r1", parameters=None, outputs=None):
    requested = [RequestedOutput(name) for name in outputs] if outputs else None
    return InferRequest(
        "m", list(inputs), request_id=request_id, parameters=parameters, request_outputs=requested
    )


def outputs_of(response: InferResponse) -> dict:
    return {o.name: (o.datatype, o.shape, list(o.data)) for o in response.outputs}


def predict_y(model, *inputs):
    (datatype, shape, data) = outputs_of(predict(model, req(*inputs)))["y"]
    assert datatype == "FP64"
    return shape, data
