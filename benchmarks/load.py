"""The load generator: keep-alive ``http.client`` connections, one per client thread.

Bodies are serialised once, before any clock starts; a request costs the client one
``send`` of pre-encoded bytes and one read of the answer, a few tens of microseconds of
CPU, so the client stays far from being the bottleneck on 2 cores. That is checked, not
assumed: every closed-loop run reports the client's own CPU time (``time.process_time``
of this process), and ``noop_ceiling`` measures the most this client can drive against a
server that does nothing (``benchmarks.noop_server``).

Two shapes of load:

* ``sequential``: one connection, one request at a time (latency percentiles);
* ``alternating``: the same against several servers, taking turns request by request, so
  that a drift in the machine's load reaches every server alike (A/B latency comparisons);
* ``interleaved``: several servers compared in many short rounds of both measurements
  (``alternating`` latencies, then a closed loop on each, in an order reversed every other
  round), each server's figures pooled over its rounds (A/B comparisons in one run);
* ``closed_loop``: ``clients`` threads, each sending its next request as soon as the
  previous one is answered, for a fixed duration after a warm-up (throughput, latency
  percentiles, errors); ends by itself.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    port: int
    path: str
    content_type: str = "application/json"
    # Bytes every good answer contains (a 200 with another body counts as an error).
    marker: bytes = b""
    host: str = "127.0.0.1"


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects after a failure."""

    def __init__(self, target: Target, timeout: float = 60.0):
        self.target = target
        self.timeout = timeout
        self.headers = {"Content-Type": target.content_type, "Connection": "keep-alive"}
        self.connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(self.target.host, self.target.port, timeout=self.timeout)
        connection.connect()
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def post(self, body: bytes) -> str | None:
        """Send ``body``; ``None`` if the answer is a good 200, else what went wrong."""
        try:
            if self.connection is None:
                self.connection = self._connect()
            # http.client sends headers and a bytes body in one send() (no Nagle/delayed-ACK stall).
            self.connection.request("POST", self.target.path, body=body, headers=self.headers)
            response = self.connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            return f"{type(error).__name__}: {error}"
        if response.status != 200:
            return f"HTTP {response.status}: {payload[:200]!r}"
        if self.target.marker and self.target.marker not in payload:
            return f"HTTP 200 without {self.target.marker!r}: {payload[:200]!r}"
        return None

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def percentile(values: Sequence[float], q: float) -> float:
    """``q``-th percentile (0–100), nearest-rank on the sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


@dataclass
class LoadResult:
    clients: int
    seconds: float  # length of the measured window
    latencies: list[float] = field(default_factory=list)  # seconds, requests completed in the window
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    client_cpu_seconds: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)  # time.monotonic() start and end of the measured window

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def client_cpu_share(self) -> float:
        """The client's CPU time over the window, as a fraction of one core."""
        return self.client_cpu_seconds / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


def sequential(target: Target, bodies: Sequence[bytes], requests: int, warmup: int = 20) -> LoadResult:
    return alternating([target], [bodies], requests, warmup)[0]


def alternating(
    targets: Sequence[Target], bodies: Sequence[Sequence[bytes]], requests: int, warmup: int = 20
) -> list[LoadResult]:
    """``requests`` sequential requests to each of ``targets`` (``bodies``: a pool per target,
    each server's form of the same rows), one target after the other for each body, the order
    reversed every other body (A B, B A, ...): a result per target (the client's CPU time is
    the whole run's)."""
    clients = [Client(target) for target in targets]
    latencies: list[list[float]] = [[] for _ in targets]
    errors: list[list[str]] = [[] for _ in targets]
    try:
        for client, pool in zip(clients, bodies, strict=True):
            for i in range(warmup):
                client.post(pool[i % len(pool)])
        cpu0, started = time.process_time(), time.monotonic()
        for i in range(requests):
            order = range(len(clients)) if i % 2 == 0 else reversed(range(len(clients)))
            for index in order:
                t0 = time.perf_counter()
                error = clients[index].post(bodies[index][i % len(bodies[index])])
                elapsed = time.perf_counter() - t0
                if error is None:
                    latencies[index].append(elapsed)
                else:
                    errors[index].append(error)
        ended, cpu = time.monotonic(), time.process_time() - cpu0
    finally:
        for client in clients:
            client.close()
    return [
        LoadResult(
            clients=1,
            seconds=ended - started,
            latencies=latencies[index],
            errors=len(errors[index]),
            error_samples=errors[index][:5],
            client_cpu_seconds=cpu,
            window=(started, ended),
        )
        for index in range(len(targets))
    ]


def closed_loop(
    target: Target,
    bodies: Sequence[bytes],
    clients: int,
    seconds: float,
    warmup: float = 1.0,
    timeout: float = 60.0,
) -> LoadResult:
    """``clients`` threads send back to back for ``warmup`` + ``seconds``; only the last ``seconds`` count."""
    start_barrier = threading.Barrier(clients + 1)
    clock: dict[str, float] = {}
    per_thread: list[tuple[list[float], list[str]]] = [([], []) for _ in range(clients)]

    def work(index: int):
        client = Client(target, timeout)
        latencies, errors = per_thread[index]
        i = index * 7919  # each client walks the body pool from a different place
        try:
            client._connect().close()  # fail fast if the server is not there at all
            start_barrier.wait()
            measure_from, stop_at = clock["from"], clock["to"]
            while True:
                t0 = time.monotonic()
                if t0 >= stop_at:
                    break
                error = client.post(bodies[i % len(bodies)])
                t1 = time.monotonic()
                i += 1
                if t0 >= measure_from and t1 <= stop_at:
                    if error is None:
                        latencies.append(t1 - t0)
                    else:
                        errors.append(error)
                elif error is not None and t1 > measure_from:
                    errors.append(error)
        except threading.BrokenBarrierError:
            pass
        except OSError as error:
            errors.append(f"{type(error).__name__}: {error}")
            start_barrier.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    now = time.monotonic()
    clock["from"], clock["to"] = now + warmup, now + warmup + seconds
    try:
        start_barrier.wait()
    except threading.BrokenBarrierError:
        pass
    # The client CPU over the measured window only.
    time.sleep(max(0.0, clock["from"] - time.monotonic()))
    cpu0 = time.process_time()
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu0
    result = LoadResult(
        clients=clients, seconds=seconds, client_cpu_seconds=cpu, window=(clock["from"], clock["to"])
    )
    for latencies, errors in per_thread:
        result.latencies += latencies
        result.errors += len(errors)
        result.error_samples += errors[: 5 - len(result.error_samples)]
    return result


@dataclass
class Pooled:
    """One server's figures pooled over the rounds of ``interleaved``."""

    latencies: list[float] = field(default_factory=list)  # every sequential request's, seconds
    requests: int = 0  # closed-loop requests answered in the measured windows
    seconds: float = 0.0  # the measured windows' length, summed
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def add_errors(self, result: LoadResult) -> None:
        self.errors += result.errors
        self.error_samples = (self.error_samples + result.error_samples)[:5]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


def interleaved(
    sides: dict[str, tuple[Target, Sequence[bytes], Sequence[bytes]]],
    clients: int,
    rounds: int,
    requests: int,
    seconds: float,
) -> dict[str, Pooled]:
    """Servers (``sides``: name → target, one-row bodies, wide bodies) compared in ``rounds``
    rounds: ``requests`` sequential one-row requests sent to them by turns (``alternating``),
    then ``clients`` closed-loop clients for ``seconds`` on each, one server after the other in
    an order reversed every other round. Many short rounds, not one long window each: the
    machine's load drifts by more than a few per cent within a minute, and only a fine
    interleaving makes every server see the same drift."""
    pooled = {name: Pooled() for name in sides}
    for round_ in range(rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        results = alternating(
            [sides[name][0] for name in order], [sides[name][1] for name in order], requests
        )
        for name, result in zip(order, results, strict=True):
            pooled[name].latencies += result.latencies
            pooled[name].add_errors(result)
        for name in order:
            target, _, wide = sides[name]
            result = closed_loop(target, wide, clients, seconds)
            pooled[name].requests += result.requests
            pooled[name].seconds += result.seconds
            pooled[name].add_errors(result)
            print(f"   round {round_ + 1}, {name}: {result.per_second:.1f} req/s", flush=True)
    return pooled
