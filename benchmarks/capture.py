"""What recording costs the V2 runtime: capture on against capture off, measured in one run.

Two runtimes on the project's model start together, one with ``MLFLOWSERVER_CAPTURE_DIR`` set
(mlflowserver/capture.py), one without; the idle one costs memory only. Each of ``ROUNDS``
rounds measures both, in alternating order, with the servers section's two measurements: the
1-row p50 of sequential requests and the req/s of ``clients`` concurrent clients sending
``body_rows``-row bodies. A figure is the median over rounds, so slow drift in the machine's
load hits both sides alike. The capture's own counters (``/metrics``) say how many rows it
wrote and dropped: a drop would mean the figure measured less recording than was asked for.
"""

from __future__ import annotations

import re
import statistics
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
ROUNDS = {True: 2, False: 5}  # short form, full form


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
    p50s: dict[str, list[float]] = {"off": [], "on": []}
    rates: dict[str, list[float]] = {"off": [], "on": []}
    print("- V2 runtime with capture off and on", flush=True)
    with running_servers(specs[:1], envs["off"]) as (off,), running_servers(specs[1:], envs["on"]) as (on,):
        servers = {"off": off, "on": on}
        for round_ in range(ROUNDS[options.short]):
            for side in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                target = load.Target(servers[side].port, MLFLOWSERVER.path, marker=MLFLOWSERVER.marker)
                sequential = load.sequential(target, one_row, options.sequential_requests)
                throughput = load.closed_loop(target, wide, options.clients, options.duration)
                for result in (sequential, throughput):
                    if result.errors:
                        bench.errors.append(f"capture {side}: {result.errors} failed requests")
                p50s[side].append(sequential.p(50))
                rates[side].append(throughput.per_second)
        captured = metric(on.base_url, "mlflowserver_capture_rows")
        dropped = metric(on.base_url, "mlflowserver_capture_dropped_rows")
    bench.add(
        Figure(
            "capture.1row.p50",
            "V2 runtime, capture on: 1-row p50, sequential",
            statistics.median(p50s["on"]),
            "s",
            reference=statistics.median(p50s["off"]),
            ref_label="capture off",
            op="<=",
            bound=LATENCY_BOUND,
        ),
        Figure(
            "capture.rps",
            f"V2 runtime, capture on: req/s, {options.clients} clients, {options.body_rows}-row bodies",
            statistics.median(rates["on"]),
            "req/s",
            reference=statistics.median(rates["off"]),
            ref_label="capture off",
            op=">=",
            bound=THROUGHPUT_BOUND,
        ),
        Figure("capture.rows", "V2 runtime, capture on: rows written during the run", captured, "count"),
        Figure("capture.dropped", "V2 runtime, capture on: rows dropped (buffer full)", dropped, "count"),
    )
    print(f"   {len(list(directory.glob(f'{FILE_PREFIX}*')))} capture files", flush=True)
