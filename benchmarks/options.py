"""The harness's options (no heavy imports: ``__main__`` sets OMP_NUM_THREADS after parsing them)."""

from __future__ import annotations

from dataclasses import dataclass

# Measured on the artifacts of a model the harness fits first.
MODEL_SECTIONS = (
    "engine",
    "inprocess",
    "intervals",
    "servers",
    "load",
    "limits",
    "coldstart",
    "capture",
    "batch",
    "cluster",
)
SECTIONS = (*MODEL_SECTIONS, "training", "tradeoff")


@dataclass
class Options:
    short: bool = False
    only: tuple[str, ...] = SECTIONS
    workers: tuple[int, ...] = (1, 2)  # `mlflow models serve --workers` values to measure
    threads: int = 1  # OMP_NUM_THREADS of this process and of every server and batch command
    clients: int = 8  # concurrent clients of the throughput figure
    body_rows: int = 100  # rows per request of the throughput figure
    duration: float = 20.0  # seconds of the throughput window
    sequential_requests: int = 1000  # 1-row requests of the latency figure
    load_clients: int = 16
    load_duration: float = 60.0
    limits_duration: float = 60.0  # seconds of the worst allowed mix (benchmarks/limits.py)
    coldstart_starts: int = 3  # starts of each server in the cold-start section, interleaved
    one_row_calls: int = 2000  # in-process 1-row predict calls
    inprocess_rows: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    target_rows: int = 100_000  # where pyfunc must be within 1.5× of the bare regressor
    batch_rows: tuple[int, ...] = (1_000_000, 10_000_000)
    rss_cap_gib: float = 6.0  # a batch command past this RSS is killed (and its figures MISS)
    batch_timeout: float = 3600.0  # seconds before a batch command is killed
    cluster_rows: int = 1_000_000  # rows of the cluster section's large job (each engine configuration)
    cluster_small_rows: int = 1_000  # rows of its small job: the fixed cost of a run
    reference_rows_cap: int = (
        100_000  # the bare regressor's rows/s is measured on at most this many rows (the prefix)
    )
    train_params: tuple[str, ...] = ()  # extra `-P name=value` for the training run (then not the default)
    data: str | None = None
    model_uri: str | None = None
    profile: bool = False
    json: str | None = None
    write_docs: bool = False
    keep: bool = False
    argv: tuple[str, ...] = ()  # the command line, for the record
    from_json: str | None = None

    @classmethod
    def short_form(cls, **overrides) -> Options:
        short = dict(
            short=True,
            workers=(1,),
            duration=1.5,
            sequential_requests=60,
            load_clients=16,
            load_duration=4.0,
            limits_duration=5.0,
            coldstart_starts=1,
            one_row_calls=200,
            inprocess_rows=(1_000,),
            target_rows=1_000,
            batch_rows=(1_000,),
            cluster_rows=50_000,
            # The Spark cluster starts five JVMs: `--short --only cluster` (make test-cluster) runs it.
            # limits and coldstart start servers for their figures only (the full form runs them).
            only=tuple(
                s for s in SECTIONS if s not in ("cluster", "training", "tradeoff", "limits", "coldstart")
            ),
        )
        return cls(**{**short, **overrides})
