"""What recording costs the V2 runtime: capture on against capture off, measured in one run.

Two runtimes on the project's model start together, one with ``MLFLOWSERVER_CAPTURE_DIR`` set
(mlflowserver/capture.py), one without; the idle one costs memory only. They are compared in
interleaved rounds (``served.compared``: 1-row latencies by turns, then each one's throughput
window), each side's figures pooled over its rounds. The capture's own counters (``/metrics``)
say how many rows it wrote and dropped: a drop would mean the figure measured less recording
than was asked for.
"""

from __future__ import annotations

import re
import urllib.request

from benchmarks import load
from benchmarks.bench import Bench
from benchmarks.report import Figure
from benchmarks.served import compared
from benchmarks.servers import MLFLOWSERVER, bodies
from mlflowserver.capture import DIR_ENV, FILE_PREFIX
from testbed.processes import free_port, running_servers

# Recording may cost at most this much of the runtime without it (issue 24).
LATENCY_BOUND = 1.05  # × the 1-row p50 with capture off
THROUGHPUT_BOUND = 0.95  # × the req/s with capture off


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
    print("- V2 runtime with capture off and on", flush=True)
    with running_servers(specs[:1], envs["off"]) as (off,), running_servers(specs[1:], envs["on"]) as (on,):
        sides = {
            side: (load.Target(server.port, MLFLOWSERVER.path, marker=MLFLOWSERVER.marker), one_row, wide)
            for side, server in (("off", off), ("on", on))
        }
        pooled = compared(bench, "capture", sides)
        captured = metric(on.base_url, "mlflowserver_capture_rows")
        dropped = metric(on.base_url, "mlflowserver_capture_dropped_rows")
    bench.add(
        Figure(
            "capture.1row.p50",
            "V2 runtime, capture on: 1-row p50, sequential",
            pooled["on"].p(50),
            "s",
            reference=pooled["off"].p(50),
            ref_label="capture off",
            op="<=",
            bound=LATENCY_BOUND,
        ),
        Figure(
            "capture.rps",
            f"V2 runtime, capture on: req/s, {options.clients} clients, {options.body_rows}-row bodies",
            pooled["on"].per_second,
            "req/s",
            reference=pooled["off"].per_second,
            ref_label="capture off",
            op=">=",
            bound=THROUGHPUT_BOUND,
        ),
        Figure("capture.rows", "V2 runtime, capture on: rows written during the run", captured, "count"),
        Figure("capture.dropped", "V2 runtime, capture on: rows dropped (buffer full)", dropped, "count"),
    )
    print(f"   {len(list(directory.glob(f'{FILE_PREFIX}*')))} capture files", flush=True)
