"""Unit tests of mlflowserver.limits: the limits' configuration, the slots and the ASGI middleware,
driven in process with ASGI messages (the real server: tests/integration/test_mlflowserver_hostile.py)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from mlflowserver.limits import Limits, RequestLimits, RowBudget, ServerBusy, Slots, positive, short


def test_short_cuts_long_names_only():
    assert short("abc") == "abc"
    assert short("x" * 64) == "x" * 64
    assert short("x" * 65) == "x" * 64 + "…"


def test_limits_come_from_the_environment_and_must_be_positive():
    limits = Limits.from_environment({"MLFLOWSERVER_MAX_ROWS": "10", "MLFLOWSERVER_BODY_TIMEOUT": "0.5"})
    assert (limits.max_rows, limits.body_timeout, limits.max_inflight) == (10, 0.5, Limits.max_inflight)
    for raw in ("0", "-3", "ten", "1.5"):
        with pytest.raises(ValueError, match="MLFLOWSERVER_MAX_ROWS must be a positive int"):
            Limits.from_environment({"MLFLOWSERVER_MAX_ROWS": raw})
    with pytest.raises(ValueError, match="--body_timeout must be a positive float, got 'nan'"):
        positive("float", "nan", "--body_timeout")


def run(coroutine):
    return asyncio.run(coroutine)


def test_slots_admit_a_bounded_number_and_time_out_waiting():
    async def scenario():
        slots = Slots(Limits(max_inflight=1, max_waiting=1, queue_timeout=0.05))
        slots.admit()
        slots.admit()
        with pytest.raises(ServerBusy, match=r"2 inference requests in progress or waiting"):
            slots.admit()
        await slots.acquire()
        with pytest.raises(ServerBusy, match=r"no slot free within 0.05 s"):
            await slots.acquire()
        slots.release()
        await slots.acquire()  # free again
        slots.release()
        slots.leave()
        slots.leave()
        assert slots.admitted == 0

    run(scenario())


def test_slots_context_releases_on_error():
    async def scenario():
        slots = Slots(Limits(max_inflight=1, max_waiting=0))
        with pytest.raises(RuntimeError):
            async with slots.slot():
                raise RuntimeError
        async with slots.slot():
            assert slots.admitted == 1
        assert slots.admitted == 0

    run(scenario())


class Client:
    """An ASGI exchange: the request's messages, and what the middleware and app send back."""

    def __init__(self, messages, delay: float = 0.0):
        self.messages = list(messages)
        self.delay = delay
        self.sent: list[dict] = []

    async def receive(self):
        if not self.messages:
            await asyncio.sleep(3600)
        await asyncio.sleep(self.delay)
        return self.messages.pop(0)

    async def send(self, message):
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict:
        return {k.decode(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def error(self) -> str:
        return orjson.loads(self.sent[1]["body"])["error"]


async def echo_app(scope, receive, send):
    """An app that answers with the content type it saw and the body it read."""
    message = await receive()
    content_type = dict(scope["headers"]).get(b"content-type", b"")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-content-type", content_type)]})
    await send({"type": "http.response.body", "body": message["body"]})


def scope(path="/v2/models/m/infer", headers=()):
    return {"type": "http", "method": "POST", "path": path, "headers": list(headers)}


def body(data: bytes, more: bool = False) -> dict:
    return {"type": "http.request", "body": data, "more_body": more}


def exchange(client, limits=Limits(), path="/v2/models/m/infer", headers=(), slots=None):
    middleware = RequestLimits(echo_app, limits, slots or Slots(limits))
    run(middleware(scope(path, headers), client.receive, client.send))
    return client


def test_a_body_in_chunks_reaches_the_app_whole_as_octet_stream_for_v2_infer():
    client = exchange(
        Client([body(b"ab", True), body(b"cd")]), headers=[(b"content-type", b"application/json")]
    )
    assert client.status == 200
    assert client.sent[1]["body"] == b"abcd"
    assert client.headers["x-content-type"] == "application/octet-stream"
    v1 = exchange(
        Client([body(b"{}")]), path="/v1/models/m:predict", headers=[(b"content-type", b"application/json")]
    )
    assert v1.headers["x-content-type"] == "application/json"


def test_a_declared_length_over_the_limit_is_413_before_reading():
    client = Client([])  # would block forever if read
    exchange(client, Limits(max_body_bytes=10), headers=[(b"content-length", b"11")])
    assert client.status == 413 and client.headers["connection"] == "close"
    assert client.error == "request body of 11 bytes exceeds the limit of 10 bytes (--max_body_bytes)"


def test_a_chunked_body_over_the_limit_is_413_while_reading():
    client = exchange(Client([body(b"x" * 6, True), body(b"x" * 6, True)]), Limits(max_body_bytes=10))
    assert client.status == 413
    assert (
        client.error == "request body of more than 10 bytes exceeds the limit of 10 bytes (--max_body_bytes)"
    )


def test_a_body_that_stops_arriving_is_408_and_the_connection_closed():
    client = exchange(
        Client([body(b"x", True)]), Limits(body_timeout=0.05), path="/v2/repository/models/m/load"
    )
    assert client.status == 408 and client.headers["connection"] == "close"
    assert client.error == "request body not received within 0.05 s (--body_timeout; 1 bytes arrived)"


def test_a_full_server_answers_503_with_retry_after():
    limits = Limits(max_inflight=1, max_waiting=0)
    slots = Slots(limits)
    slots.admit()
    client = exchange(Client([body(b"{}")]), limits, slots=slots)
    assert client.status == 503 and client.headers["retry-after"] == "1"
    assert "server busy" in client.error
    # not an inference path: no slot needed
    assert (
        exchange(Client([body(b"{}")]), limits, path="/v2/repository/models/m/load", slots=slots).status
        == 200
    )


def test_a_client_gone_before_its_body_frees_its_admission():
    limits = Limits(max_inflight=1, max_waiting=0)
    slots = Slots(limits)
    client = exchange(Client([{"type": "http.disconnect"}]), limits, slots=slots)
    assert client.sent == [] and slots.admitted == 0


def test_the_row_budget_lets_small_requests_share_it_and_large_ones_take_turns():
    async def scenario():
        budget = RowBudget(Limits(max_inflight_rows=10, queue_timeout=0.2))
        order = []

        async def request(name, rows, seconds):
            async with budget.hold(rows):
                order.append((name, "in", budget.rows))
                await asyncio.sleep(seconds)
            order.append((name, "out"))

        await asyncio.gather(request("a", 4, 0.05), request("b", 6, 0.05), request("c", 8, 0.01))
        assert order[:2] == [("a", "in", 4), ("b", "in", 10)]  # both fit at once
        assert ("c", "in", 8) in order and order.index(("c", "in", 8)) > order.index(("a", "out"))
        # a request larger than the whole budget runs alone
        async with budget.hold(50):
            assert budget.rows == 50
        assert budget.rows == 0

    run(scenario())


def test_the_row_budget_times_out_and_stays_consistent():
    async def scenario():
        budget = RowBudget(Limits(max_inflight_rows=10, queue_timeout=0.05))
        async with budget.hold(10):
            with pytest.raises(ServerBusy, match="10 rows being predicted; 1 more did not fit within 0.05 s"):
                async with budget.hold(1):
                    pass
        async with budget.hold(10):
            assert budget.rows == 10
        assert budget.rows == 0 and not budget._queue

    run(scenario())


def test_the_inferenceservice_carries_the_default_limits_and_the_measured_memory_limit():
    import yaml

    from benchmarks.limits import POD_MEMORY_LIMIT
    from model.data import PROJECT_ROOT

    service = yaml.safe_load((PROJECT_ROOT / "k8s" / "serving" / "inferenceservice.yaml").read_text())
    model = service["spec"]["predictor"]["model"]
    env = {item["name"]: item["value"] for item in model["env"]}
    assert Limits.from_environment(env) == Limits()
    assert {name for name in env if name.startswith("MLFLOWSERVER_")} == {
        Limits.env_name(field) for field in Limits.help()
    }
    assert model["resources"]["limits"]["memory"] == f"{POD_MEMORY_LIMIT // 2**30}Gi"


def test_small_bodies_need_no_slot_large_ones_wait_for_one():
    limits = Limits(max_body_bytes=64 * 100, max_inflight=1, max_waiting=4, queue_timeout=0.05)

    async def scenario():
        slots = Slots(limits)
        await slots.acquire()  # the only slot is taken
        small, large = Client([body(b"x" * 100)]), Client([body(b"x" * 101)])
        middleware = RequestLimits(echo_app, limits, slots)
        await middleware(scope(), small.receive, small.send)
        await middleware(scope(), large.receive, large.send)
        return small, large

    small, large = run(scenario())
    assert small.status == 200
    assert large.status == 503 and "no slot free within 0.05 s" in large.error
