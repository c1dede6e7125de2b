"""Unit tests of mlflowserver.grpc_server: the servicer's refusals (a model version, no slot free)
and kserve's gRPC service on a loopback address in process, on the tiny pyfunc (every hostile
gRPC input, and the error details cut to one line, against the real server:
tests/integration/test_mlflowserver_hostile.py)."""

from __future__ import annotations

import asyncio
import os
import struct

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pytest
from grpc import StatusCode, aio
from grpc_interceptor.exceptions import ResourceExhausted
from kserve.model_repository import ModelRepository
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from mlflowserver.errors import ModelVersionNotFound
from mlflowserver.grpc_server import BoundGRPCServer, VersionlessServicer
from mlflowserver.limits import Limits, Slots
from mlflowserver.server import MLflowDataPlane, ServedModelRepository, listen_address
from testbed.processes import free_port

VERSION_REFUSED = "model 'tiny' has no version '2': this server serves unversioned models"


def served(model) -> tuple[MLflowDataPlane, ServedModelRepository]:
    registry = ModelRepository()
    registry.update(model)
    return MLflowDataPlane(registry), ServedModelRepository(registry)


def infer_request(version: str = "") -> pb.ModelInferRequest:
    """a = 1.0, s = "ab" as raw contents, as tritonclient.grpc sends them."""
    a = pb.ModelInferRequest.InferInputTensor(name="a", datatype="FP64", shape=[1])
    s = pb.ModelInferRequest.InferInputTensor(name="s", datatype="BYTES", shape=[1])
    raw = [struct.pack("<d", 1.0), struct.pack("<I", 2) + b"ab"]
    return pb.ModelInferRequest(
        model_name="tiny", model_version=version, inputs=[a, s], raw_input_contents=raw
    )


def test_the_servicer_refuses_a_model_version_and_a_request_without_a_slot(model):
    servicer = VersionlessServicer(*served(model), Slots(Limits()))
    assert asyncio.run(servicer.ModelReady(pb.ModelReadyRequest(name="tiny", version=""), None)).ready
    for call in (
        servicer.ModelReady(pb.ModelReadyRequest(name="tiny", version="2"), None),
        servicer.ModelMetadata(pb.ModelMetadataRequest(name="tiny", version="2"), None),
        servicer.ModelInfer(infer_request(version="2"), None),
    ):
        with pytest.raises(ModelVersionNotFound, match=VERSION_REFUSED):
            asyncio.run(call)
    slots = Slots(Limits(max_inflight=1, max_waiting=0))
    slots.admit()  # a REST request holds the one admission
    busy = VersionlessServicer(*served(model), slots)
    with pytest.raises(ResourceExhausted, match="server busy"):
        asyncio.run(busy.ModelInfer(infer_request(), None))


def test_kserves_service_answers_on_the_bound_address_and_refuses_versions(model):
    async def scenario():
        address = listen_address("127.0.0.1", free_port())
        server = BoundGRPCServer(address, *served(model), Slots(Limits()), max_workers=2, options=[])
        serving = asyncio.create_task(server.start())
        try:
            async with aio.insecure_channel(address) as channel:
                await asyncio.wait_for(channel.channel_ready(), timeout=30)
                stub = GRPCInferenceServiceStub(channel)
                answer = await stub.ModelInfer(infer_request(), timeout=30)
                assert struct.unpack("<d", answer.raw_output_contents[0]) == (4.0,)
                with pytest.raises(aio.AioRpcError) as refused:
                    await stub.ModelReady(pb.ModelReadyRequest(name="tiny", version="2"), timeout=30)
                assert refused.value.code() == StatusCode.NOT_FOUND
                assert refused.value.details().startswith(VERSION_REFUSED)
        finally:
            await server.stop(grace=0)
            await serving

    asyncio.run(scenario())
