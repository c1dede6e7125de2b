"""What recording costs the V2 runtime: capture on against capture off, measured in one run.

Two runtimes on the project's model start together, one with ``MLFLOWSERVER_CAPTURE_DIR`` set
(mlflowserver/capture.py), one without; the idle one costs memory only. Each of ``ROUNDS``
rounds measures both with a slice of the servers section's two measurements:
``ROUND_SHARE`` of its ``sequential_requests`` 1-row requests, sent to the two servers by
turns (``load.alternating``), and of its ``duration`` seconds of ``clients`` concurrent
clients sending ``body_rows``-row bodies, to one server then the other, in alternating
order. A side's figure pools its rounds: the p50 of all its latencies, its requests over its
seconds. Many short rounds, not a few long ones: the machine's load drifts by more than the
bound within a minute, and only a fine interleaving makes both sides see the same drift.
The capture's own counters (``/metrics``) say how many rows it wrote and dropped: a drop
would mean the figure measured less recording than was asked for.
"""

from __future__ import annotations

import re
import urllib.request

from benchmarks import load
from benchmarks.bench import Bench
from benchmarks.report import Figure
from benchmarks.servers import MLFLOWSERVER, bodies
from mlflowserver.capture import DIR_ENV, FILE_PREFIX
from testbed.processes import free_port, running_servers

# Recording may cost at most this much of the runtime without it (issue 24).
LATENCY_BOUND = 1.05  # × the 1-row p50 with capture off
THROUGHPUT_BOUND = 0.95  # × the req/s with capture off
ROUNDS = {True: 2, False: 20}  # short form, full form
ROUND_SHARE = 0.25


def metric(base_url: str, name: str) -> float:
    """A counter's value from the server's Prometheus page (0 when absent)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{name}_total (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def run(bench: Bench) -> None:
    options = bench.options
    directory = bench.workdir / "captures"
    ports = {"off": free_port(), "on": free_port()}
    specs = [
        (MLFLOWSERVER.command(bench.model_dir, port), port, MLFLOWSERVER.health) for port in ports.values()
    ]
    envs = {"off": bench.process_env(), "on": bench.process_env({DIR_ENV: str(directory)})}
    one_row, wide = bodies(bench, MLFLOWSERVER, 1, 64), bodies(bench, MLFLOWSERVER, options.body_rows, 16)
    rounds = ROUNDS[options.short]
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    requests = {"off": 0, "on": 0}
    seconds = {"off": 0.0, "on": 0.0}
    print("- V2 runtime with capture off and on", flush=True)
    with running_servers(specs[:1], envs["off"]) as (off,), running_servers(specs[1:], envs["on"]) as (on,):
        servers = {"off": off, "on": on}
        targets = {
            side: load.Target(server.port, MLFLOWSERVER.path, marker=MLFLOWSERVER.marker)
            for side, server in servers.items()
        }
        for round_ in range(rounds):
            order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
            sequential = load.alternating(
                [targets[side] for side in order], one_row, int(options.sequential_requests * ROUND_SHARE)
            )
            for side, result in zip(order, sequential, strict=True):
                latencies[side] += result.latencies
                if result.errors:
                    bench.errors.append(f"capture {side}: {result.errors} failed requests")
            for side in order:
                throughput = load.closed_loop(
                    targets[side], wide, options.clients, options.duration * ROUND_SHARE
                )
                if throughput.errors:
                    bench.errors.append(f"capture {side}: {throughput.errors} failed requests")
                requests[side] += throughput.requests
                seconds[side] += throughput.seconds
                print(f"   round {round_ + 1}, capture {side}: {throughput.per_second:.1f} req/s", flush=True)
        captured = metric(on.base_url, "mlflowserver_capture_rows")
        dropped = metric(on.base_url, "mlflowserver_capture_dropped_rows")
    bench.add(
        Figure(
            "capture.1row.p50",
            "V2 runtime, capture on: 1-row p50, sequential",
            load.percentile(latencies["on"], 50),
            "s",
            reference=load.percentile(latencies["off"], 50),
            ref_label="capture off",
            op="<=",
            bound=LATENCY_BOUND,
        ),
        Figure(
            "capture.rps",
            f"V2 runtime, capture on: req/s, {options.clients} clients, {options.body_rows}-row bodies",
            requests["on"] / seconds["on"],
            "req/s",
            reference=requests["off"] / seconds["off"],
            ref_label="capture off",
            op=">=",
            bound=THROUGHPUT_BOUND,
        ),
        Figure("capture.rows", "V2 runtime, capture on: rows written during the run", captured, "count"),
        Figure("capture.dropped", "V2 runtime, capture on: rows dropped (buffer full)", dropped, "count"),
    )
    print(f"   {len(list(directory.glob(f'{FILE_PREFIX}*')))} capture files", flush=True)
