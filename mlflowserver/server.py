"""kserve's model server, with what the runtime changes in it (see docs/codebase/kserve-runtime.md).

Everything here is kserve's own server (its FastAPI app, data plane, gRPC servicer and
interceptors), extended through public classes and hooks where kserve 0.21 deviates from the
Open Inference Protocol or from a loopback default:

* ``RequestLimits`` (``mlflowserver/limits.py``): what one request may cost (body size, time to
  send it, inference requests in flight); V2 infer bodies reach kserve's route as bytes.
* ``V2Infer``: ``POST /v2/models/{name}/infer`` answered by the data plane from pure ASGI, with
  kserve's statuses and answers, without FastAPI's per-request serialization machinery.
* ``MLflowDataPlane``: a V2 body without the binary-extension header is a JSON InferenceRequest
  whatever its Content-Type (kserve answers 400 without ``application/json``), parsed with a
  depth-bounded parser; malformed binary requests are 400s; ``/v2`` lists the extensions the
  runtime implements; names in its 404s are cut short.
* ``ServedModelRepository``: loading an unknown model is 404 (kserve: 503); unloading the served
  model is refused (kserve removes it for good: one request would take the server out of service).
* ``RefuseModelVersions`` / ``VersionlessServicer``: a model version in a request is 404 naming
  model and version (kserve: 501 over REST, silently ignored over gRPC): models are unversioned.
* ``OmitNulls``: V2 responses omit ``model_version``, ``versions`` and ``parameters`` when the
  server has none, as the spec says, instead of sending ``null``.
* ``BoundGRPCServer``: kserve's gRPC service on the configured host (kserve binds ``[::]``).
* ``MLflowModelServer``: all of the above, with REST on the configured host too.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
from concurrent import futures
from urllib.parse import parse_qs

import kserve
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from grpc import aio
from grpc_interceptor.exceptions import ResourceExhausted
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady
from kserve.logging import logger
from kserve.model_server import app as kserve_app
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from pydantic import ValidationError

from mlflowserver.limits import (
    Limits,
    PayloadTooLarge,
    RequestLimits,
    ServerBusy,
    Slots,
    busy_headers,
    short,
)

# Longest error message a client gets (characters, one line).
MESSAGE_LIMIT = 512


def one_line(message: str) -> str:
    return short(" ".join(message.split()), MESSAGE_LIMIT)


# What /v2 lists: Triton's names for the binary tensor data and request parameters extensions.
EXTENSIONS = ("binary_tensor_data", "parameters")


# ------------------------------------------------------------------ request bodies


def describe_validation_errors(errors) -> str:
    """Where and why a body is not an InferenceRequest, without the body's values."""
    errors = list(errors)
    # The V2 route accepts Union[InferenceRequest, bytes]: the "bytes" branch error is noise.
    relevant = [e for e in errors if "bytes" not in (e.get("loc") or ())[1:2]] or errors
    problems = []
    for err in relevant[:5]:
        loc = [str(p) for p in (err.get("loc") or ()) if p not in ("body", "InferenceRequest")]
        if err.get("type") == "json_invalid":
            cause = (err.get("ctx") or {}).get("error")
            where = loc[0] if loc else "?"
            problems.append(f"malformed JSON at position {where}" + (f" ({cause})" if cause else ""))
        else:
            problems.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid request body: " + "; ".join(problems)


async def request_validation_handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a V2 body that is not JSON or not an InferenceRequest (FastAPI: 422 echoing the body)."""
    return JSONResponse(status_code=400, content={"error": describe_validation_errors(exc.errors())})


def json_request(body: bytes) -> InferenceRequest:
    """A JSON body as an InferenceRequest; InvalidInput naming the problem.

    orjson first (fast); what it refuses goes to the stdlib parser, which also takes the ``NaN``
    and ``Infinity`` Python clients write, and names the problem. Nesting deeper than the stdlib
    parser's recursion limit is a RecursionError there (a 500 through FastAPI): refused here.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = _stdlib_json(body)
    try:
        return InferenceRequest.model_validate(document)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_errors(exc.errors())) from None
    except RecursionError:
        raise InvalidInput(DEEP_JSON_MESSAGE) from None


DEEP_JSON_MESSAGE = "invalid request body: JSON nested too deeply"


def _stdlib_json(body: bytes):
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"invalid request body: malformed JSON at position {exc.pos} ({exc.msg})"
        ) from None
    except UnicodeDecodeError:
        raise InvalidInput("invalid request body: not UTF-8 text") from None
    except RecursionError:
        raise InvalidInput(DEEP_JSON_MESSAGE) from None


BYTES_PREFIX_MESSAGE = (
    "binary request: a BYTES element's 4-byte length prefix runs past the end of its binary data"
)


def binary_request(body: bytes, json_length: str, model_name: str) -> InferRequest:
    """A binary-extension body (JSON part, then tensor bytes) through kserve's parser; 400 if malformed."""
    try:
        length = int(json_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(body):
        raise InvalidInput(
            f"the {INFERENCE_CONTENT_LENGTH_HEADER} header must be the length of the JSON part "
            f"(1 to {len(body)} bytes), got '{short(json_length)}'"
        )
    try:
        return InferRequest.from_bytes(body, length, model_name)
    except InferenceError:  # kserve's UTF-8 failure message quotes the value
        raise InvalidInput("binary request: BYTES data are not valid UTF-8") from None
    except struct.error:  # kserve's BYTES decoder reads past the buffer
        raise InvalidInput(BYTES_PREFIX_MESSAGE) from None
    except RecursionError:
        raise InvalidInput(DEEP_JSON_MESSAGE) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(
            "binary request: the JSON part must be an InferenceRequest whose inputs' "
            "binary_data_size, datatype and shape match the binary data"
        ) from None


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


# ------------------------------------------------------------------ repository and versions


class ModelVersionNotFound(ModelNotFound):
    def __init__(self, model_name: str, version: str):
        self.reason = (
            f"model '{short(model_name)}' has no version '{short(version)}': "
            "this server serves unversioned models; leave the version out"
        )


def refuse_version(model_name: str, version: str | None) -> None:
    if version:
        raise ModelVersionNotFound(model_name, version)


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


# ------------------------------------------------------------------ REST middleware

_MODEL_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/ready|/infer)?$")


class RefuseModelVersions:
    """ASGI middleware: a V2 model path or query naming a version gets 404 (kserve answers 501)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        match = _MODEL_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            version = match["version"] or query.get("model_version", [""])[0]
            if version:
                reason = ModelVersionNotFound(match["name"], version).reason
                return await JSONResponse({"error": reason}, status_code=404)(scope, receive, send)
        await self.app(scope, receive, send)


class OmitNulls:
    """ASGI middleware: V2 model responses leave out optional fields the server does not fill.

    kserve serializes them as ``null`` (``model_version``, metadata ``versions``, ``parameters``
    at the top and in each output); the spec marks them optional, to be omitted.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v2/models/"):
            return await self.app(scope, receive, send)
        start: dict = {}
        chunks: list[bytes] = []

        async def buffered(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body" or not start:
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            headers, body = start["headers"], b"".join(chunks)
            if start["status"] == 200:
                headers, body = without_nulls(headers, body)
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffered)


def without_nulls(headers: list, body: bytes) -> tuple[list, bytes]:
    """The response with null optional fields removed from its JSON part (binary data kept)."""
    names = {name.lower(): value for name, value in headers}
    binary_length = names.get(INFERENCE_CONTENT_LENGTH_HEADER.encode())
    length = int(binary_length) if binary_length else len(body)
    try:
        document = orjson.loads(body[:length])
    except orjson.JSONDecodeError:
        return headers, body
    if not isinstance(document, dict):
        return headers, body
    parts = [document, *(o for o in document.get("outputs") or () if isinstance(o, dict))]
    nulls = [
        (part, key)
        for part in parts
        for key in ("model_version", "versions", "parameters")
        if part.get(key, 0) is None
    ]
    if not nulls:
        return headers, body
    for part, key in nulls:
        del part[key]
    head = orjson.dumps(document)
    body = head + body[length:]
    kept = [
        (k, v)
        for k, v in headers
        if k.lower() not in (b"content-length", INFERENCE_CONTENT_LENGTH_HEADER.encode())
    ]
    kept.append((b"content-length", str(len(body)).encode()))
    if binary_length:
        kept.append((INFERENCE_CONTENT_LENGTH_HEADER.encode(), str(len(head)).encode()))
    return kept, body


async def payload_too_large_handler(_request: Request, exc: PayloadTooLarge) -> JSONResponse:
    return JSONResponse(status_code=413, content={"error": exc.reason})


async def server_busy_handler(_request: Request, exc: ServerBusy) -> JSONResponse:
    headers = {k.decode(): v.decode() for k, v in busy_headers()}
    return JSONResponse(status_code=503, content={"error": exc.reason}, headers=headers)


class CapErrorMessages:
    """ASGI middleware: an error answer's ``{"error": ...}`` is one line of at most 512 characters.

    The runtime's own messages cut names to 64 characters (``limits.short``); this bounds the
    messages kserve writes itself, which quote names whole (e.g. a binary request's input name).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start: dict = {}
        chunks: list[bytes] = []

        async def capped(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start.update(message)
                return
            if not start or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            headers, body = capped_error(start["headers"], b"".join(chunks))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capped)


def capped_error(headers: list, body: bytes) -> tuple[list, bytes]:
    """An error response whose ``error`` message is one line of at most ``MESSAGE_LIMIT`` characters."""
    if len(body) <= MESSAGE_LIMIT:
        return headers, body
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = {"error": body.decode("utf-8", "replace")}
    if not isinstance(document, dict) or not isinstance(document.get("error"), str):
        return headers, body
    body = orjson.dumps({"error": one_line(document["error"])})
    kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    kept.append((b"content-length", str(len(body)).encode()))
    return kept, body


_V2_INFER = re.compile(r"^/v2/models/(?P<name>[^/]+)/infer$")
_NULL_WHEN_UNSET = ("model_version", "parameters")
# kserve's exception handlers' statuses, for the exceptions the inference path raises.
_STATUS = (
    (PayloadTooLarge, 413),
    (ServerBusy, 503),
    (InvalidInput, 400),
    (ModelNotFound, 404),
    (ModelNotReady, 503),
    (InferenceError, 500),
    (NotImplementedError, 501),
)


class V2Infer:
    """ASGI middleware: ``POST /v2/models/{name}/infer`` answered by kserve's data plane directly.

    The same steps as kserve's route (``v2_endpoints.infer``: readiness, ``decode``, ``infer``,
    ``encode``) and the same answers, without what FastAPI adds around them for this one route:
    route matching over every kserve endpoint, ``jsonable_encoder`` walking the response model
    value by value, and a second JSON pass to drop null fields (``OmitNulls``). On a 100-row
    request those were a large part of the runtime's own time. Errors get kserve's statuses and
    the ``{"error": ...}`` form; any other path goes to kserve's app.
    """

    def __init__(self, app, dataplane: DataPlane):
        self.app = app
        self.dataplane = dataplane

    async def __call__(self, scope, receive, send):
        match = (
            _V2_INFER.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        )
        if match is None:
            return await self.app(scope, receive, send)
        body = await _whole_body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            status, answer_headers, answer = await self._infer(match["name"], body, headers)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one answer, as kserve's handlers do
            status, reason = _error_status(exc)
            answer_headers = {"content-type": "application/json"}
            if status == 503 and isinstance(exc, ServerBusy):
                answer_headers.update({k.decode(): v.decode() for k, v in busy_headers()})
            answer = orjson.dumps({"error": reason})
        answer_headers["content-length"] = str(len(answer))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer_headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def _infer(self, model_name: str, body: bytes, headers: dict) -> tuple[int, dict, bytes]:
        if not await self.dataplane.model_ready(model_name, True):
            raise ModelNotReady(short(model_name))
        request, _ = self.dataplane.decode(body, headers, protocol_version="v2", model_name=model_name)
        response, _ = await self.dataplane.infer(model_name=model_name, request=request, headers=headers)
        response, encoded_headers = self.dataplane.encode(
            model_name=model_name, response=response, headers=headers, req_attributes={}
        )
        if isinstance(response, bytes):
            # binary outputs (or a binary CloudEvent): the JSON part's nulls dropped as OmitNulls does
            kept, answer = without_nulls(
                [(k.encode(), v.encode()) for k, v in encoded_headers.items()], response
            )
            answer_headers = {k.decode(): v.decode() for k, v in kept if k.lower() != b"content-length"}
            answer_headers.setdefault("content-type", "application/octet-stream")
            return 200, answer_headers, answer
        for part in (response, *(o for o in response.get("outputs") or () if isinstance(o, dict))):
            for key in _NULL_WHEN_UNSET:
                if part.get(key, 0) is None:
                    del part[key]
        answer_headers = {"content-type": "application/json", **encoded_headers}
        return 200, answer_headers, orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)


async def _whole_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _error_status(exc: Exception) -> tuple[int, str]:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            reason = getattr(exc, "reason", None) or str(exc)
            if status >= 500 and status not in (501, 503):
                logger.error("Exception:", exc_info=exc)
            return status, one_line(reason)
    logger.error("Exception:", exc_info=exc)
    return 500, f"internal error ({type(exc).__name__}); see the server log"


def install_rest_extensions(app: FastAPI, dataplane: DataPlane, limits: Limits, slots: Slots) -> None:
    """The runtime's handlers and middleware on kserve's FastAPI app (before it starts)."""
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_exception_handler(PayloadTooLarge, payload_too_large_handler)
    app.add_exception_handler(ServerBusy, server_busy_handler)
    app.add_middleware(OmitNulls)
    app.add_middleware(V2Infer, dataplane=dataplane)
    app.add_middleware(RefuseModelVersions)
    app.add_middleware(CapErrorMessages)
    app.add_middleware(RequestLimits, limits=limits, slots=slots)


# ------------------------------------------------------------------ servers


def listen_address(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
