"""Time to ready: process start → first 200 on the health path, the V2 runtime against `mlflow models serve`.

Every start of a pod pays it (rollouts, scale-ups, a restart after a kill). Each server is
started ``coldstart_starts`` times from a local model directory (as a pod loads ``/mnt/models``),
the two servers interleaved, and the median kept:

* ``python -m mlflowserver`` until ``/v2/health/ready`` answers 200;
* ``mlflow models serve --env-manager local`` until ``/ping`` answers 200;
* the runtime's parts, timed inside one fresh process (``benchmarks.coldstart_worker``): the
  imports of ``mlflowserver``, loading the model, the first predict.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

from benchmarks.bench import Bench
from benchmarks.report import Figure
from benchmarks.servers import MLFLOWSERVER, mlflow_serve
from testbed.processes import free_port, start_server, stop_process_group

READY_BOUND = 0.5  # × `mlflow models serve`'s time to ready (issue 22)
TIMEOUT = 300.0


def time_to_ready(bench: Bench, kind) -> float:
    """Seconds from starting ``kind``'s command to the first 200 on its health path."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{kind.health}"
    started = time.perf_counter()
    server = start_server(kind.command(bench.model_dir, port), port, bench.process_env())
    try:
        while time.perf_counter() - started < TIMEOUT:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.describe()} exited: {server.log_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{url} not ready after {TIMEOUT:.0f} s")
    finally:
        stop_process_group(server.proc)
        server.log_path.unlink(missing_ok=True)


def parts(bench: Bench) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.coldstart_worker", str(bench.model_dir)],
        env=bench.process_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"benchmarks.coldstart_worker failed: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(bench: Bench) -> None:
    serve = mlflow_serve(1)
    runtime, reference, measured_parts = [], [], []
    for _ in range(bench.options.coldstart_starts):
        runtime.append(time_to_ready(bench, MLFLOWSERVER))
        reference.append(time_to_ready(bench, serve))
        measured_parts.append(parts(bench))
        print(f"   ready: runtime {runtime[-1]:.2f} s, mlflow models serve {reference[-1]:.2f} s", flush=True)
    serve_ready = statistics.median(reference)
    bench.add(
        Figure(
            "coldstart.mlflow_serve",
            "`mlflow models serve`: time to ready (start → /ping 200)",
            serve_ready,
            "s",
        ),
        Figure(
            "coldstart.mlflowserver",
            "V2 runtime: time to ready (start → /v2/health/ready 200)",
            statistics.median(runtime),
            "s",
            reference=serve_ready,
            ref_label="`mlflow models serve`",
            op="<=",
            bound=READY_BOUND,
            note=f"median of {len(runtime)} starts, interleaved",
        ),
    )
    for key, label in (
        ("imports", "imports of mlflowserver (kserve, mlflow.pyfunc)"),
        ("load", "loading the model"),
        ("first_predict", "first 1-row predict"),
    ):
        bench.add(
            Figure(
                f"coldstart.{key}",
                f"V2 runtime cold start: {label}",
                statistics.median(p[key] for p in measured_parts),
                "s",
            )
        )
