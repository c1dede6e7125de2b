"""The V2 runtime against ``mlflow models serve``, side by side (issue 19's served targets).

Both serve the project's model, started together, and are compared in interleaved rounds of
the servers section's two measurements (``compared``, ``load.interleaved``), so the machine's
load drifts alike for both; the capture comparison (``benchmarks/capture.py``) uses the same.
"""

from __future__ import annotations

from benchmarks import load
from benchmarks.bench import Bench
from benchmarks.report import Figure
from benchmarks.servers import MLFLOWSERVER, bodies, mlflow_serve
from testbed.processes import free_port, running_servers, wait_settled

# Issue 19: the V2 runtime against `mlflow models serve` on the same artifact, same run.
V2_ROWS_BOUND = 1.5  # × its rows/s at `clients` clients
V2_LATENCY_BOUND = 0.5  # × its 1-row p50
# Rounds in the short and the full form, and the share of the servers section's sequential
# requests and throughput window each round takes.
ROUNDS = {True: 2, False: 20}
ROUND_SHARE = 0.25


def compared(bench: Bench, what: str, sides: dict) -> dict[str, load.Pooled]:
    """``load.interleaved`` with this section's measurements cut into rounds: ``ROUND_SHARE`` of
    its sequential requests and of its throughput window per round; failed requests recorded."""
    options = bench.options
    pooled = load.interleaved(
        sides,
        options.clients,
        ROUNDS[options.short],
        int(options.sequential_requests * ROUND_SHARE),
        options.duration * ROUND_SHARE,
    )
    for side, result in pooled.items():
        if result.errors:
            bench.errors.append(
                f"{what}, {side}: {result.errors} failed requests, e.g. {result.error_samples[:2]}"
            )
    return pooled


def versus_mlflow_serve(bench: Bench) -> None:
    """The V2 runtime against `mlflow models serve` (the first ``--workers`` value), both serving
    the project's artifact, started together and compared in interleaved rounds (``compared``).
    Measured one after the other, a window each, the ratio moved by more than its bounds from
    one run to the next with the machine's load."""
    options = bench.options
    kinds = {"mlflow": mlflow_serve(options.workers[0]), "v2": MLFLOWSERVER}
    baseline = kinds["mlflow"].label
    ports = {name: free_port() for name in kinds}
    specs = [
        (kind.command(bench.model_dir, ports[name]), ports[name], kind.health) for name, kind in kinds.items()
    ]
    print(f"- V2 runtime and {baseline} side by side, on the project model", flush=True)
    with running_servers(specs, bench.process_env()) as started:
        if kinds["mlflow"].workers > 1:
            wait_settled(started[0].pid)
        sides = {
            name: (
                load.Target(server.port, kind.path, marker=kind.marker),
                bodies(bench, kind, 1, 64),
                bodies(bench, kind, options.body_rows, 16),
            )
            for (name, kind), server in zip(kinds.items(), started, strict=True)
        }
        pooled = compared(bench, f"V2 runtime vs {baseline}", sides)
    v2, served = pooled["v2"], pooled["mlflow"]
    bench.add(
        Figure(
            "served.v2_vs_mlflow.rows_per_s",
            f"V2 runtime vs {baseline}: rows/s, {options.clients} clients × {options.body_rows}-row bodies",
            v2.per_second * options.body_rows,
            "rows/s",
            reference=served.per_second * options.body_rows,
            ref_label=baseline,
            op=">=",
            bound=V2_ROWS_BOUND,
        ),
        Figure(
            "served.v2_vs_mlflow.1row.p50",
            f"V2 runtime vs {baseline}: 1-row p50",
            v2.p(50),
            "s",
            reference=served.p(50),
            ref_label=baseline,
            op="<=",
            bound=V2_LATENCY_BOUND,
        ),
        Figure(
            "served.v2_vs_mlflow.1row.p99",
            f"V2 runtime vs {baseline}: 1-row p99",
            v2.p(99),
            "s",
            reference=served.p(99),
            ref_label=baseline,
        ),
    )
