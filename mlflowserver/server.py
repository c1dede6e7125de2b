"""kserve's model server, with what the runtime changes in it (see docs/codebase/kserve-runtime.md).

Everything here is kserve's own server (its FastAPI app, data plane, gRPC servicer and
interceptors), extended through public classes and hooks where kserve 0.21 deviates from the
Open Inference Protocol or from a loopback default:

* ``MLflowDataPlane``: a V2 body without the binary-extension header is a JSON InferenceRequest
  whatever its Content-Type (kserve answers 400 without ``application/json``), parsed with a
  depth-bounded parser (``mlflowserver/request_bodies.py``); malformed binary requests are 400s;
  ``/v2`` lists the extensions the runtime implements; names in its 404s are cut short.
* ``ServedModelRepository``: loading an unknown model is 404 (kserve: 503); unloading the served
  model is refused (kserve removes it for good: one request would take the server out of service).
* the REST side (``mlflowserver/rest.py``): request limits, the infer route from pure ASGI, model
  versions refused, null fields omitted, error messages capped.
* the gRPC side (``mlflowserver/grpc_server.py``): kserve's gRPC service on the configured host
  (kserve binds ``[::]``), model versions refused, ``ModelInfer`` in the REST side's slots.
* ``MLflowModelServer``: all of the above, with REST on the configured host too.
"""

from __future__ import annotations

import asyncio

import kserve
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput, ModelNotFound
from kserve.model_server import app as kserve_app
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from mlflowserver.grpc_server import BoundGRPCServer
from mlflowserver.limits import Limits, Slots, short
from mlflowserver.request_bodies import binary_request, json_request
from mlflowserver.rest import install_rest_extensions

# What /v2 lists: Triton's names for the binary tensor data and request parameters extensions.
EXTENSIONS = ("binary_tensor_data", "parameters")


class MLflowDataPlane(DataPlane):
    """kserve's data plane; JSON bodies of any Content-Type, names cut short in its 404s."""

    def metadata(self) -> dict:
        return {**super().metadata(), "extensions": list(EXTENSIONS)}

    # kserve's ModelNotFound quotes the whole requested name (a 10 kB name: a 10 kB answer).
    def get_model_from_registry(self, name: str):
        try:
            return super().get_model_from_registry(name)
        except ModelNotFound:
            raise ModelNotFound(short(name)) from None

    async def get_model(self, name: str):
        try:
            return await super().get_model(name)
        except ModelNotFound:
            raise ModelNotFound(short(name)) from None

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        try:
            return await super().model_ready(model_name, disable_predictor_health_check)
        except ModelNotFound:
            raise ModelNotFound(short(model_name)) from None

    def decode_inference_request(self, body, headers, model_name: str) -> InferRequest:
        if isinstance(body, bytes):
            # Triton's rule: only the Inference-Header-Content-Length header makes a body binary;
            # tritonclient's JSON mode, curl -d and most hand-written clients send no JSON Content-Type.
            json_length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
            if json_length is not None:
                return binary_request(body, json_length, model_name)
            body = json_request(body)
        return super().decode_inference_request(body, headers, model_name)


class ServedModelRepository(ModelRepositoryExtension):
    """The repository extension for a server whose models are fixed at start."""

    def __init__(self, model_registry):
        super().__init__(model_registry)
        self.models = model_registry

    async def load(self, model_name: str) -> dict:
        if self.models.get_model(model_name) is None:
            raise ModelNotFound(short(model_name))
        # Already loaded. gRPC's servicer reads this dict (kserve's load returns None and fails there).
        return {"name": model_name, "load": True}

    async def unload(self, model_name: str) -> None:
        if self.models.get_model(model_name) is None:
            raise ModelNotFound(short(model_name))
        raise InvalidInput(
            f"model '{short(model_name)}' cannot be unloaded: "
            "this server serves the models it was started with"
        )


def listen_address(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MLflowModelServer(kserve.ModelServer):
    """``kserve.ModelServer`` with the runtime's data plane and repository, REST and gRPC on ``host``.

    kserve 0.21's ``RESTServer`` builds its ``uvicorn.Config`` with ``host="0.0.0.0"`` and offers no
    option; ``ModelServer.start()`` creates it and then calls ``setup_event_loop()`` before serving,
    so the host is set on that config there (uvicorn reads ``config.host`` only when it binds).
    That reads kserve's private ``_rest_server``: kserve is pinned in requirements.lock and
    tests/integration/test_mlflowserver_server.py checks the address the process listens on.
    """

    def __init__(self, host: str, enable_grpc: bool, grpc_options: list, limits: Limits, **kwargs):
        super().__init__(enable_grpc=False, **kwargs)
        self.host = host
        self.limits = limits
        self.slots = Slots(limits)
        self.dataplane = MLflowDataPlane(model_registry=self.registered_models)
        self.model_repository_extension = ServedModelRepository(self.registered_models)
        self.grpc_server = None
        if enable_grpc:
            self.grpc_server = BoundGRPCServer(
                listen_address(host, self.grpc_port),
                self.dataplane,
                self.model_repository_extension,
                self.slots,
                self.max_threads,
                grpc_options,
            )

    def start(self, models) -> None:
        install_rest_extensions(kserve_app, self.dataplane, self.limits, self.slots)
        if self.grpc_server is not None:
            self.servers.append(self.grpc_server.start())
        super().start(models)

    def setup_event_loop(self) -> None:
        config = getattr(self._rest_server, "config", None)
        if config is None or not hasattr(config, "host"):
            raise RuntimeError("cannot set the listen address: unexpected kserve version internals")
        config.host = self.host.strip("[]")
        super().setup_event_loop()

    def stop(self, sig: int) -> None:
        if self.grpc_server is not None:
            asyncio.get_event_loop().create_task(self.grpc_server.stop())
        super().stop(sig)
