"""The gRPC side of the runtime: kserve's inference service, assembled from its public pieces on
the configured host (kserve binds ``[::]``), with model versions refused (kserve ignores them),
``ModelInfer`` in the REST side's slots and every status detail one short line."""

from __future__ import annotations

from concurrent import futures

from grpc import aio
from grpc_interceptor.exceptions import ResourceExhausted
from kserve.logging import logger
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.servicer import InferenceServicer

from mlflowserver.errors import one_line, refuse_version
from mlflowserver.limits import PayloadTooLarge, ServerBusy, Slots


class VersionlessServicer(InferenceServicer):
    """kserve's gRPC servicer; a request naming a model version gets NOT_FOUND; ModelInfer in a slot.

    ``ModelInfer`` takes one of the REST side's slots (``mlflowserver.limits.Slots``); a request
    over a limit or with no slot gets RESOURCE_EXHAUSTED.
    """

    def __init__(self, dataplane, repository, slots: Slots):
        super().__init__(dataplane, repository)
        self.slots = slots

    async def ModelReady(self, request, context):
        refuse_version(request.name, request.version)
        return await super().ModelReady(request, context)

    async def ModelMetadata(self, request, context):
        refuse_version(request.name, request.version)
        return await super().ModelMetadata(request, context)

    async def ModelInfer(self, request, context):
        refuse_version(request.model_name, request.model_version)
        try:
            async with self.slots.slot():
                return await super().ModelInfer(request, context)
        except (PayloadTooLarge, ServerBusy) as exc:
            raise ResourceExhausted(exc.reason) from None


class CappedExceptionToStatusInterceptor(ExceptionToStatusInterceptor):
    """kserve's exception-to-status mapping with the status details cut to one short line.

    kserve's messages quote names whole; a long one went past a client's 16 kB metadata limit.
    """

    async def handle_exception(self, ex, request_or_iterator, context, method_name):
        if isinstance(getattr(ex, "reason", None), str):
            ex.reason = one_line(ex.reason)
        await super().handle_exception(ex, request_or_iterator, context, method_name)


class BoundGRPCServer:
    """kserve's gRPC inference service (its servicer and interceptors) on ``host:port``.

    kserve 0.21's ``GRPCServer`` always binds ``[::]`` (every interface); this assembles the same
    server from kserve's public pieces with the address as a parameter.
    """

    def __init__(self, address: str, dataplane, repository, slots: Slots, max_workers: int, options: list):
        self.address = address
        self.dataplane = dataplane
        self.repository = repository
        self.slots = slots
        self.max_workers = max_workers
        self.options = options
        self._server = None

    async def start(self) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers),
            interceptors=(LoggingInterceptor(), CappedExceptionToStatusInterceptor()),
            options=self.options,
        )
        add_GRPCInferenceServiceServicer_to_server(
            VersionlessServicer(self.dataplane, self.repository, self.slots), self._server
        )
        self._server.add_insecure_port(self.address)
        logger.info("Starting gRPC server on %s", self.address)
        await self._server.start()
        await self._server.wait_for_termination()

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
