"""What one request may cost the runtime: body size, rows, time to send the body, work in flight.

Without these a single client could take the pod down: kserve's REST server reads any body to
the end, however large or slow, and runs every request at once, so a few large requests together
went past the InferenceService's memory limit (issue 22; docs/reliability.md#request-limits).

* ``RequestLimits`` (pure ASGI middleware, in front of kserve's FastAPI app): refuses a body
  larger than ``max_body_bytes`` with 413 (from ``Content-Length`` before reading, or while
  counting a chunked body), drops a body that has not fully arrived ``body_timeout`` seconds
  after the request began with 408 and a closed connection, and admits inference requests into
  ``Slots`` before kserve parses them.
* ``Slots``: every inference request is admitted on arrival, at most ``max_inflight +
  max_waiting`` at once (beyond that: 503 with ``Retry-After``, gRPC ``RESOURCE_EXHAUSTED``);
  those with a large body (over ``max_body_bytes / SMALL_BODY_SHARE``; gRPC: all) then wait up
  to ``queue_timeout`` seconds for one of ``max_inflight`` slots to be parsed, predicted and
  answered.
* ``max_rows``: checked by the model on each input's declared shape, before any data are
  converted (413, gRPC ``RESOURCE_EXHAUSTED``).
* ``RowBudget``: at most ``max_inflight_rows`` rows in the model's predict at once, over all
  requests (the predict is what a large request costs); a request waits its turn, up to
  ``queue_timeout``.

The defaults are derived in docs/reliability.md from measured peak RSS; ``k8s/`` passes the same.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import re
from dataclasses import dataclass, fields

import orjson

# The paths whose requests run the model, and so take a slot: V2 infer and V1 predict.
INFERENCE_PATH = re.compile(r"^/v2/models/[^/]+(?:/versions/[^/]+)?/infer$|^/v1/models/[^/]+:predict$")
V2_INFER_PATH = re.compile(r"^/v2/models/[^/]+(?:/versions/[^/]+)?/infer$")

# A body of at most max_body_bytes / SMALL_BODY_SHARE (128 KiB by default) is parsed without
# waiting for a slot: parsing it costs little, and the row budget still
# bounds its prediction. Small requests then run side by side up to the admission bound.
SMALL_BODY_SHARE = 64

# How long a busy server asks clients to wait before retrying (seconds, the Retry-After header).
RETRY_AFTER = 1
NAME_LIMIT = 64


def short(text: str, limit: int = NAME_LIMIT) -> str:
    """A name or id as it may appear in an error message: at most ``limit`` characters + '…'."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class Limits:
    """Per-request bounds; each is a flag ``--<field>`` and an env ``MLFLOWSERVER_<FIELD>``."""

    max_body_bytes: int = 8 * 2**20
    max_rows: int = 100_000
    max_inflight: int = 2
    max_inflight_rows: int = 100_000
    max_waiting: int = 14
    body_timeout: float = 30.0
    queue_timeout: float = 120.0

    @staticmethod
    def env_name(field: str) -> str:
        return f"MLFLOWSERVER_{field.upper()}"

    @classmethod
    def help(cls) -> dict[str, str]:
        return {
            "max_body_bytes": "largest request body in bytes; larger ones get 413",
            "max_rows": "most rows in one inference request; more get 413",
            "max_inflight": "inference requests with a body over max_body_bytes/64 parsed and "
            "predicted at once (REST; gRPC: every request)",
            "max_inflight_rows": "rows the model predicts at once, over all requests; "
            "a request waits until its rows fit",
            "max_waiting": "inference requests beyond max_inflight that may be receiving their body "
            "or waiting for a slot; more get 503 (gRPC RESOURCE_EXHAUSTED)",
            "body_timeout": "seconds a client has to send the whole body; "
            "then 408 and the connection is closed",
            "queue_timeout": "seconds a request waits for a slot before 503 (gRPC RESOURCE_EXHAUSTED)",
        }

    @classmethod
    def from_environment(cls, environ=os.environ) -> Limits:
        """The defaults, overridden by ``MLFLOWSERVER_<FIELD>`` variables."""
        values = {}
        for field in fields(cls):
            raw = environ.get(cls.env_name(field.name))
            if raw is not None:
                values[field.name] = positive(field.type, raw, cls.env_name(field.name))
        return cls(**values)


def positive(type_name: str, raw: str, what: str):
    """``raw`` as a positive int or float (``type_name`` ``"int"``/``"float"``), or ValueError."""
    convert = int if type_name == "int" else float
    try:
        value = convert(raw)
    except ValueError:
        raise ValueError(f"{what} must be a positive {type_name}, got {short(raw)!r}") from None
    if not value > 0 or (convert is float and not math.isfinite(value)):
        raise ValueError(f"{what} must be a positive {type_name}, got {short(raw)!r}")
    return value


class PayloadTooLarge(Exception):
    """413 (gRPC RESOURCE_EXHAUSTED): a request over one of the limits."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ServerBusy(Exception):
    """503 with Retry-After (gRPC RESOURCE_EXHAUSTED): no slot within the queue's bounds."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def too_many_rows(where: str, rows: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{where} has {rows} rows, more than the limit of {limit} rows per request (--max_rows); "
        "split the batch"
    )


class Slots:
    """A bound on inference requests in the server (``admit``) and in flight (``acquire``).

    ``admit`` counts a request from its arrival (REST: before its body is read) and refuses one
    beyond ``max_inflight + max_waiting``; ``acquire`` then waits up to ``queue_timeout`` for one of
    ``max_inflight`` slots. So a slow client holds an admission, never a slot, and at most
    ``max_inflight + max_waiting`` bodies are held at once.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self.admitted = 0
        self._free: asyncio.Semaphore | None = None

    @property
    def free(self) -> asyncio.Semaphore:
        # Created on first use, inside the server's event loop.
        if self._free is None:
            self._free = asyncio.Semaphore(self.limits.max_inflight)
        return self._free

    def admit(self) -> None:
        if self.admitted >= self.limits.max_inflight + self.limits.max_waiting:
            raise ServerBusy(
                f"server busy: {self.admitted} inference requests in progress or waiting, the most "
                "allowed (--max_inflight + --max_waiting); retry later"
            )
        self.admitted += 1

    def leave(self) -> None:
        self.admitted -= 1

    async def acquire(self) -> None:
        try:
            await asyncio.wait_for(self.free.acquire(), self.limits.queue_timeout)
        except TimeoutError:
            raise ServerBusy(
                f"server busy: no slot free within {self.limits.queue_timeout:g} s "
                "(--queue_timeout); retry later"
            ) from None

    def release(self) -> None:
        self.free.release()

    @contextlib.asynccontextmanager
    async def slot(self):
        """Admitted and holding a slot for the body of the ``async with``."""
        self.admit()
        try:
            await self.acquire()
            try:
                yield
            finally:
                self.release()
        finally:
            self.leave()


class RowBudget:
    """At most ``max_inflight_rows`` rows in the model at once; requests take their turn in order.

    The model's own predict is what a large request costs (docs/reliability.md#request-limits):
    one 100,000-row request, or many small ones side by side, never several large ones.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self.rows = 0
        self._queue: collections.deque = collections.deque()
        self._changed: asyncio.Condition | None = None

    @property
    def changed(self) -> asyncio.Condition:
        # Created on first use, inside the server's event loop.
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    @contextlib.asynccontextmanager
    async def hold(self, rows: int):
        if not self._queue and self._room_for(rows):
            # Nobody is waiting and the rows fit: no turn to take, no lock, no timer.
            self.rows += rows
        else:
            await self._take_turn(rows)
        try:
            yield
        finally:
            self.rows -= rows
            if self._queue:
                async with self.changed:
                    self.changed.notify_all()

    def _room_for(self, rows: int) -> bool:
        return self.rows == 0 or self.rows + rows <= self.limits.max_inflight_rows

    async def _take_turn(self, rows: int) -> None:
        turn = object()
        async with self.changed:
            self._queue.append(turn)
            try:
                async with asyncio.timeout(self.limits.queue_timeout):
                    await self.changed.wait_for(lambda: self._queue[0] is turn and self._room_for(rows))
            except TimeoutError:
                raise ServerBusy(
                    f"server busy: {self.rows} rows being predicted; {rows} more did not fit within "
                    f"{self.limits.queue_timeout:g} s (--max_inflight_rows, --queue_timeout); retry later"
                ) from None
            finally:
                self._queue.remove(turn)
                self.changed.notify_all()
            self.rows += rows


# ------------------------------------------------------------------ REST


def error_response(status: int, message: str, extra_headers: tuple = ()) -> tuple[dict, dict]:
    """The ASGI start and body messages of ``{"error": message}``, closing the connection."""
    body = orjson.dumps({"error": message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra_headers,
    ]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


async def send_error(send, status: int, message: str, extra_headers: tuple = ()) -> None:
    start, body = error_response(status, message, extra_headers)
    await send(start)
    await send(body)


def busy_headers() -> tuple:
    return ((b"retry-after", str(RETRY_AFTER).encode()),)


class RequestLimits:
    """ASGI middleware: body size and arrival time for every request, slots for inference ones.

    The body is read here, whole, before the app sees it, and handed on in one message (FastAPI
    reads it whole anyway). A V2 infer body is handed on as ``application/octet-stream``: kserve's
    route then gets bytes and ``MLflowDataPlane`` parses the JSON itself with a depth-bounded
    parser; FastAPI's own parse (stdlib json) turned a deeply nested body into a 500 or a vague
    400 (docs/codebase/kserve-runtime.md).
    """

    def __init__(self, app, limits: Limits, slots: Slots):
        self.app = app
        self.limits = limits
        self.slots = slots

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        inference = bool(INFERENCE_PATH.match(scope["path"]))
        headers = scope["headers"]
        declared = _content_length(headers)
        limit = self.limits.max_body_bytes
        if declared is not None and declared > limit:
            return await send_error(send, 413, _too_large(f"{declared} bytes", limit))
        if not inference:
            body = await self._read_body(receive, send, limit)
            if body is not None:
                await self.app(scope, _replay(body, receive), send)
            return
        try:
            self.slots.admit()
        except ServerBusy as exc:
            return await send_error(send, 503, exc.reason, busy_headers())
        try:
            body = await self._read_body(receive, send, limit)
            if body is None:
                return
            small = len(body) <= limit // SMALL_BODY_SHARE
            if not small:
                try:
                    await self.slots.acquire()
                except ServerBusy as exc:
                    return await send_error(send, 503, exc.reason, busy_headers())
            try:
                if V2_INFER_PATH.match(scope["path"]):
                    scope = {**scope, "headers": _as_octet_stream(headers)}
                await self.app(scope, _replay(body, receive), send)
            finally:
                if not small:
                    self.slots.release()
        finally:
            self.slots.leave()

    async def _read_body(self, receive, send, limit: int) -> bytes | None:
        """The whole body, or None once an error is sent (or the client is gone)."""
        chunks: list[bytes] = []
        size = 0
        try:
            # One timer for the whole body (asyncio.wait_for per message made a task each).
            async with asyncio.timeout(self.limits.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        break
                    if chunk:
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        # b"".join of one bytes object returns it: no copy for a body sent in one piece.
                        return b"".join(chunks)
        except TimeoutError:
            await send_error(
                send,
                408,
                f"request body not received within {self.limits.body_timeout:g} s "
                f"(--body_timeout; {size} bytes arrived)",
            )
            return None
        await send_error(send, 413, _too_large(f"more than {limit} bytes", limit))
        return None


def _too_large(size: str, limit: int) -> str:
    return f"request body of {size} exceeds the limit of {limit} bytes (--max_body_bytes)"


def _content_length(headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _as_octet_stream(headers) -> list:
    kept = [(k, v) for k, v in headers if k != b"content-type"]
    kept.append((b"content-type", b"application/octet-stream"))
    return kept


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
