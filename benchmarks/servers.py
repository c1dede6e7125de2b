"""Server figures and the bounded load test, against real servers on 127.0.0.1.

Each server runs twice — on the project's model and on the trivial model with the same
signature (its ceiling) — with the same options; both start together (their start-ups
overlap) and are measured one after the other, the idle one costing memory only:

* 1-row latency: ``sequential_requests`` requests one after another on one keep-alive
  connection, p50/p99;
* throughput: ``clients`` concurrent clients sending ``body_rows``-row bodies back to back;
* load test (project model): ``load_clients`` clients for ``load_duration`` seconds, bodies
  of 1, 10 and 100 rows in rotation; errors, p50/p99, and the server's process-group RSS
  (psutil) averaged over the first and over the last 10 s of the window.

The V2 runtime against ``mlflow models serve`` (issue 19's served targets) is measured apart,
side by side (``benchmarks/served.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from benchmarks import load
from benchmarks.bench import Bench
from benchmarks.report import Figure
from model.data import CATEGORICAL_COLUMN, FEATURE_COLUMNS, TARGET
from testbed.mlflow_cli import mlflow_models_serve, mlflowserver
from testbed.processes import RssSampler, free_port, running_server, running_servers, wait_settled

THROUGHPUT_BOUND = 0.7  # × the trivial model's req/s on the same server
LATENCY_BOUND = 1.5  # × the trivial model's 1-row p50 on the same server
RSS_GROWTH_LIMIT = 10.0  # %
V2_MODEL_NAME = "california-housing"
SAMPLE_ROWS = 20_000  # resampled rows the request bodies are cut from


def split_body(frame: pd.DataFrame) -> bytes:
    """MLflow scoring server: ``{"dataframe_split": ...}`` (NaN → null)."""
    return b'{"dataframe_split": ' + frame.to_json(orient="split", index=False).encode() + b"}"


def v2_body(frame: pd.DataFrame) -> bytes:
    """Open Inference Protocol V2: one tensor per column (NaN → null in the optional column)."""
    inputs = []
    for column in FEATURE_COLUMNS:
        datatype = "BYTES" if column == CATEGORICAL_COLUMN else "FP64"
        data = frame[column].to_json(orient="values")
        inputs.append(
            f'{{"name": "{column}", "shape": [{len(frame)}], "datatype": "{datatype}", "data": {data}}}'
        )
    return ('{"inputs": [' + ", ".join(inputs) + "]}").encode()


@dataclass(frozen=True)
class Kind:
    key: str
    label: str
    health: str
    path: str
    marker: bytes
    body: Callable[[pd.DataFrame], bytes]
    workers: int = 1

    def command(self, model_dir, port: int) -> list[str]:
        if self.key.startswith("mlflow_serve"):
            return mlflow_models_serve(model_dir, port, self.workers)
        return mlflowserver(model_dir, V2_MODEL_NAME, port)


def mlflow_serve(workers: int) -> Kind:
    return Kind(
        f"mlflow_serve.w{workers}",
        f"mlflow models serve --workers {workers}",
        "/ping",
        "/invocations",
        TARGET.encode(),
        split_body,
        workers,
    )


MLFLOWSERVER = Kind(
    "mlflowserver",
    "V2 runtime (python -m mlflowserver)",
    f"/v2/models/{V2_MODEL_NAME}/ready",
    f"/v2/models/{V2_MODEL_NAME}/infer",
    b'"outputs"',
    v2_body,
)


def bodies(bench: Bench, kind: Kind, rows: int, count: int) -> list[bytes]:
    frame = bench.resampled.frame(max(SAMPLE_ROWS, rows * count))
    return [kind.body(frame.iloc[i * rows : (i + 1) * rows]) for i in range(count)]


def mixed_bodies(bench: Bench, kind: Kind) -> list[bytes]:
    ones, tens, hundreds = (
        bodies(bench, kind, 1, 16),
        bodies(bench, kind, 10, 16),
        bodies(bench, kind, 100, 16),
    )
    return [body for trio in zip(ones, tens, hundreds) for body in trio]


def noop_ceiling(bench: Bench) -> None:
    """The load generator against a server that does nothing: the most this client can drive."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.noop_server", f"--port={port}"]
    with running_server(command, port, "/", bench.process_env(), timeout=60):
        target = load.Target(port, "/invocations", marker=b"predictions")
        result = load.closed_loop(
            target,
            bodies(bench, mlflow_serve(1), bench.options.body_rows, 16),
            bench.options.clients,
            min(5.0, bench.options.duration),
            warmup=0.5,
        )
    bench.add(
        Figure(
            "client.noop.rps",
            f"load generator vs a no-op server, {bench.options.clients} clients, "
            f"{bench.options.body_rows}-row bodies",
            result.per_second,
            "req/s",
        ),
        Figure(
            "client.noop.cpu",
            "load generator CPU at that rate (share of one core)",
            100 * result.client_cpu_share,
            "%",
        ),
    )


def run(bench: Bench, measure: bool, load_test: bool) -> None:
    options = bench.options
    kinds = [mlflow_serve(w) for w in options.workers] + [MLFLOWSERVER]
    if measure:
        noop_ceiling(bench)
    client_cpu, load_results = [], []
    for kind in kinds:
        try:
            results = measure_kind(bench, kind, measure, load_test, client_cpu, load_results)
        except Exception as error:  # noqa: BLE001 - the next server still gets measured
            bench.errors.append(f"{kind.label}: {type(error).__name__}: {error}")
            print(f"ERROR {kind.label}: {error}", flush=True)
            continue
        if measure:
            server_figures(bench, kind, results)
    if client_cpu:
        bench.add(
            Figure(
                "client.cpu.max",
                "load generator CPU, busiest throughput run (share of one core)",
                100 * max(client_cpu),
                "%",
            )
        )
    if measure and len(options.workers) > 1:
        first, *others = options.workers
        for workers in others:
            base = bench.figure(f"server.mlflow_serve.w{first}.rps")
            more = bench.figure(f"server.mlflow_serve.w{workers}.rps")
            if base and more and base.value and more.value is not None:
                bench.add(
                    Figure(
                        f"server.mlflow_serve.w{workers}.vs.w{first}",
                        f"mlflow models serve: req/s with --workers {workers}",
                        more.value,
                        "req/s",
                        reference=base.value,
                        ref_label=f"--workers {first}",
                    )
                )
    for result in load_results:
        load_figures(bench, *result)


def measure_kind(
    bench: Bench, kind: Kind, measure: bool, load_test: bool, client_cpu: list, load_results: list
) -> dict:
    """Start ``kind`` on the trivial and on the project's model (start-ups overlap), then measure
    one after the other: the idle one costs memory, not CPU."""
    options = bench.options
    models = (
        [("trivial", bench.trivial_dir), ("project", bench.model_dir)]
        if measure
        else [("project", bench.model_dir)]
    )
    specs = []
    for _, model_dir in models:
        port = free_port()
        specs.append((kind.command(model_dir, port), port, kind.health))
    print(f"- {kind.label} on the {' and the '.join(name for name, _ in models)} model", flush=True)
    results: dict[str, dict] = {}
    with running_servers(specs, bench.process_env()) as started:
        for (model_name, _), server in zip(models, started):
            if kind.workers > 1:
                wait_settled(server.pid)
            target = load.Target(server.port, kind.path, marker=kind.marker)
            if measure:
                sequential = load.sequential(target, bodies(bench, kind, 1, 64), options.sequential_requests)
                throughput = load.closed_loop(
                    target, bodies(bench, kind, options.body_rows, 16), options.clients, options.duration
                )
                client_cpu.append(throughput.client_cpu_share)
                results[model_name] = {"sequential": sequential, "throughput": throughput}
                for result in (sequential, throughput):
                    if result.errors:
                        bench.errors.append(
                            f"{kind.label}, {model_name} model: {result.errors} failed requests, "
                            f"e.g. {result.error_samples[:2]}"
                        )
            if load_test and model_name == "project":
                load_results.append(load_run(bench, kind, server, target))
    return results


def server_figures(bench: Bench, kind: Kind, results: dict) -> None:
    options = bench.options
    project, trivial = results["project"], results["trivial"]
    body_rows = options.body_rows
    one_row_inprocess = bench.inprocess_one_row_p50()
    body_inprocess = bench.inprocess_body_p50()
    p50 = project["sequential"].p(50)
    rps = project["throughput"].per_second
    bench.add(
        Figure(
            f"server.{kind.key}.1row.p50",
            f"{kind.label}: 1-row p50, sequential",
            p50,
            "s",
            reference=trivial["sequential"].p(50),
            ref_label="trivial model",
            op="<=",
            bound=LATENCY_BOUND,
        ),
        Figure(
            f"server.{kind.key}.1row.p99",
            f"{kind.label}: 1-row p99, sequential",
            project["sequential"].p(99),
            "s",
            reference=trivial["sequential"].p(99),
            ref_label="trivial model",
        ),
        Figure(
            f"server.{kind.key}.1row.vs_inprocess",
            f"{kind.label}: 1-row p50 vs the in-process call",
            p50,
            "s",
            reference=one_row_inprocess,
            ref_label="in-process pyfunc",
        ),
        Figure(
            f"server.{kind.key}.rps",
            f"{kind.label}: req/s, {options.clients} clients, {body_rows}-row bodies",
            rps,
            "req/s",
            reference=trivial["throughput"].per_second,
            ref_label="trivial model",
            op=">=",
            bound=THROUGHPUT_BOUND,
        ),
        Figure(
            f"server.{kind.key}.rps.p99",
            f"{kind.label}: p99 at {options.clients} clients",
            project["throughput"].p(99),
            "s",
            reference=trivial["throughput"].p(99),
            ref_label="trivial model",
        ),
        Figure(
            f"server.{kind.key}.rows_vs_inprocess",
            f"{kind.label}: rows/s at {options.clients} clients vs "
            f"in-process {body_rows}-row calls back to back",
            rps * body_rows,
            "rows/s",
            reference=body_rows / body_inprocess,
            ref_label="in-process pyfunc",
        ),
        Figure(
            f"server.{kind.key}.trivial.1row.p50",
            f"{kind.label}, trivial model: 1-row p50",
            trivial["sequential"].p(50),
            "s",
        ),
        Figure(
            f"server.{kind.key}.trivial.rps",
            f"{kind.label}, trivial model: req/s, {options.clients} clients",
            trivial["throughput"].per_second,
            "req/s",
        ),
    )


def load_run(bench: Bench, kind: Kind, server, target: load.Target) -> tuple:
    options = bench.options
    window = min(10.0, options.load_duration / 4)
    mixed = mixed_bodies(bench, kind)
    print(f"  load test: {options.load_clients} clients for {options.load_duration:g} s", flush=True)
    with RssSampler(server.pid, interval=min(0.5, window / 5)) as rss:
        result = load.closed_loop(target, mixed, options.load_clients, options.load_duration, warmup=2.0)
    return kind, result, rss, window


def load_figures(bench: Bench, kind: Kind, result: load.LoadResult, rss: RssSampler, window: float) -> None:
    options = bench.options
    start, end = result.window
    first = rss.mean_between(start, start + window)
    last = rss.mean_between(end - window, end)
    if result.errors:
        bench.errors.append(
            f"load test on {kind.label}: {result.errors} failed requests, e.g. {result.error_samples[:2]}"
        )
    bench.add(
        Figure(
            f"load.{kind.key}.errors",
            f"load test {kind.label}: errors in {result.requests + result.errors:,} requests "
            f"({options.load_clients} clients, {options.load_duration:g} s)",
            result.errors,
            "count",
            reference=0.0,
            op="<=",
        ),
        Figure(
            f"load.{kind.key}.p50", f"load test {kind.label}: p50 (1/10/100-row bodies)", result.p(50), "s"
        ),
        Figure(f"load.{kind.key}.p99", f"load test {kind.label}: p99", result.p(99), "s"),
        Figure(f"load.{kind.key}.rps", f"load test {kind.label}: req/s", result.per_second, "req/s"),
        Figure(
            f"load.{kind.key}.rss",
            f"load test {kind.label}: RSS growth, first vs last {window:g} s "
            f"({first / 2**20:.0f} → {last / 2**20:.0f} MiB)",
            100 * (last - first) / first,
            "%",
            reference=RSS_GROWTH_LIMIT,
            op="<",
        ),
    )
