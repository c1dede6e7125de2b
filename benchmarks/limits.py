"""The V2 runtime's memory under its request limits (docs/reliability.md#request-limits).

Each measurement starts a fresh ``python -m mlflowserver`` on the model (its peak, ``VmHWM``,
counts from its own start), waits until its RSS settles, and then:

* one request of ``LARGE_ROWS`` rows (a server whose limits let it through): the peak of one
  large request, what the limits are derived from;
* the worst allowed mix, with the runtime's default limits: ``clients`` clients sending
  requests of ``max_rows`` rows back to back for ``limits_duration`` seconds (``max_inflight``
  run, the rest wait in the queue): the peak must stay under the InferenceService's memory
  limit (``POD_MEMORY_LIMIT``, k8s/serving/inferenceservice.yaml), with no failed request.
"""

from __future__ import annotations

from benchmarks import load
from benchmarks.bench import Bench
from benchmarks.report import Figure
from benchmarks.servers import MLFLOWSERVER, V2_MODEL_NAME, bodies
from mlflowserver.limits import Limits
from testbed.mlflow_cli import mlflowserver
from testbed.processes import PeakSampler, free_port, running_server, tree_rss, wait_settled

POD_MEMORY_LIMIT = 2**30  # bytes: resources.limits.memory of k8s/serving/inferenceservice.yaml
LARGE_ROWS = 100_000


def command(bench: Bench, port: int, *flags: str) -> list[str]:
    return mlflowserver(bench.model_dir, V2_MODEL_NAME, port, None, *flags)


def measured(bench: Bench, flags: tuple[str, ...], request_bodies: list[bytes], clients: int, seconds: float):
    """(idle RSS, peak RSS, load result) of a fresh server sent ``request_bodies`` by ``clients``."""
    port = free_port()
    with running_server(
        command(bench, port, *flags), port, MLFLOWSERVER.health, bench.process_env()
    ) as server:
        wait_settled(server.pid)
        idle = tree_rss(server.pid)
        target = load.Target(port, MLFLOWSERVER.path, marker=MLFLOWSERVER.marker)
        with PeakSampler(server.pid, interval=0.05) as sampler:
            if clients == 1:
                result = load.sequential(target, request_bodies, len(request_bodies), warmup=0)
            else:
                # A client may wait its turn for up to --queue_timeout: it must not give up first.
                timeout = Limits().queue_timeout + 60
                result = load.closed_loop(
                    target, request_bodies, clients, seconds, warmup=0.0, timeout=timeout
                )
        alive = server.proc.poll() is None
    return idle, sampler.peak, result, alive


def run(bench: Bench) -> None:
    defaults = Limits()
    raised = (f"--max_rows={LARGE_ROWS}", f"--max_body_bytes={64 * 2**20}")
    large = bodies(bench, MLFLOWSERVER, LARGE_ROWS, 1)
    idle, peak, result, _ = measured(bench, raised, large, 1, 0)
    print(f"   {LARGE_ROWS:,} rows: idle {idle / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB", flush=True)
    bench.add(
        Figure("limits.idle_rss", "V2 runtime: RSS at rest (champion loaded)", idle, "bytes"),
        Figure(
            "limits.large_request_peak",
            f"V2 runtime: peak RSS, one {LARGE_ROWS:,}-row request",
            peak if result.errors == 0 else None,
            "bytes",
            note=f"body {len(large[0]) / 2**20:.1f} MiB of JSON",
            outcome="" if result.errors == 0 else f"failed: {result.error_samples[:1]}",
        ),
    )
    largest = bodies(bench, MLFLOWSERVER, defaults.max_rows, 4)
    clients, seconds = bench.options.clients, bench.options.limits_duration
    idle, peak, result, alive = measured(bench, (), largest, clients, seconds)
    print(
        f"   worst mix ({clients} clients x {defaults.max_rows:,} rows, {seconds:g} s): peak "
        f"{peak / 2**20:.0f} MiB, {result.requests} answered, {result.errors} errors "
        f"{result.error_samples[:2]}",
        flush=True,
    )
    mix = f"{clients} clients × {defaults.max_rows:,}-row requests for {seconds:g} s, default limits"
    bench.add(
        Figure(
            "limits.worst_mix_peak",
            f"V2 runtime: peak RSS, {mix}",
            peak,
            "bytes",
            reference=POD_MEMORY_LIMIT,
            ref_label="the pod's memory limit",
            op="<",
            note=(
                f"max_inflight={defaults.max_inflight}, max_waiting={defaults.max_waiting}, "
                f"bodies {len(largest[0]) / 2**20:.1f} MiB"
            ),
        ),
        Figure(
            "limits.worst_mix_errors",
            f"V2 runtime: failed requests, {mix}",
            result.errors + (0 if alive else 1),
            "count",
            reference=0,
            ref_label="",
            op="<=",
            note=f"{result.requests} answered; the server {'stayed up' if alive else 'DIED'}"
            + (f"; e.g. {result.error_samples[0][:120]}" if result.error_samples else ""),
        ),
        Figure(
            "limits.worst_mix_answered", f"V2 runtime: requests answered, {mix}", result.requests, "count"
        ),
    )
