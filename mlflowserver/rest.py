"""The REST side of the runtime: exception handlers and ASGI middleware on kserve's FastAPI app.

Installed by ``install_rest_extensions`` (outermost first):

* ``RequestLimits`` (``mlflowserver/limits.py``): what one request may cost (body size, time to
  send it, inference requests in flight); V2 infer bodies reach kserve's route as bytes.
* ``CapErrorMessages``: an error answer's message is one line of at most ``MESSAGE_LIMIT``
  characters.
* ``RefuseModelVersions``: a model version in a V2 path or query is 404 naming model and version
  (kserve: 501): models are unversioned.
* ``V2Infer``: ``POST /v2/models/{name}/infer`` answered by the data plane from pure ASGI, with
  kserve's statuses and answers, without FastAPI's per-request serialization machinery.
* ``OmitNulls``: the other V2 model responses omit ``model_version``, ``versions`` and
  ``parameters`` when the server has none, as the spec says, instead of sending ``null``
  (``V2Infer`` omits them from its answers with the same ``drop_null_fields``).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady
from kserve.logging import logger
from kserve.protocol.dataplane import DataPlane

from mlflowserver.errors import MESSAGE_LIMIT, ModelVersionNotFound, one_line
from mlflowserver.limits import Limits, PayloadTooLarge, RequestLimits, ServerBusy, Slots, busy_headers, short
from mlflowserver.request_bodies import describe_validation_errors


async def request_validation_handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a V2 body that is not JSON or not an InferenceRequest (FastAPI: 422 echoing the body)."""
    return JSONResponse(status_code=400, content={"error": describe_validation_errors(exc.errors())})


async def payload_too_large_handler(_request: Request, exc: PayloadTooLarge) -> JSONResponse:
    return JSONResponse(status_code=413, content={"error": exc.reason})


async def server_busy_handler(_request: Request, exc: ServerBusy) -> JSONResponse:
    headers = {k.decode(): v.decode() for k, v in busy_headers()}
    return JSONResponse(status_code=503, content={"error": exc.reason}, headers=headers)


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


# Optional V2 response fields kserve writes as null when the server has none.
OPTIONAL_FIELDS = ("model_version", "versions", "parameters")


def drop_null_fields(document: dict) -> bool:
    """``document`` (a V2 response) without its null optional fields, at the top and in each
    output; whether it had any."""
    parts = [document, *(o for o in document.get("outputs") or () if isinstance(o, dict))]
    nulls = [(part, key) for part in parts for key in OPTIONAL_FIELDS if part.get(key, 0) is None]
    for part, key in nulls:
        del part[key]
    return bool(nulls)


def without_nulls(headers: list, body: bytes) -> tuple[list, bytes]:
    """The response with null optional fields removed from its JSON part (binary data kept)."""
    names = {name.lower(): value for name, value in headers}
    binary_length = names.get(INFERENCE_CONTENT_LENGTH_HEADER.encode())
    length = int(binary_length) if binary_length else len(body)
    try:
        document = orjson.loads(body[:length])
    except orjson.JSONDecodeError:
        return headers, body
    if not isinstance(document, dict) or not drop_null_fields(document):
        return headers, body
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
            # binary outputs (or a binary CloudEvent): the nulls dropped from the JSON part
            kept, answer = without_nulls(
                [(k.encode(), v.encode()) for k, v in encoded_headers.items()], response
            )
            answer_headers = {k.decode(): v.decode() for k, v in kept if k.lower() != b"content-length"}
            answer_headers.setdefault("content-type", "application/octet-stream")
            return 200, answer_headers, answer
        drop_null_fields(response)
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
