"""Settings the code declares and the docs restate, as pages show them: the figure
``<!-- figure settings:KEY -->…<!-- /figure -->`` (``docsgen.pages``).

A setting (a default, a limit, a gate) is not a measurement, but a page that copies one by hand
goes stale when the code changes it; rendered from its declaration, the fact is declared once.
"""

from __future__ import annotations

from dataclasses import fields

from benchmarks import batch, coldstart, engine, inprocess, intervals, served, servers
from benchmarks import capture as capture_bench
from benchmarks.limits import POD_MEMORY_LIMIT
from benchmarks.training import TRAIN_LIMIT
from mlflowserver.capture import CaptureSettings
from mlflowserver.limits import SMALL_BODY_SHARE, Limits
from mlflowserver.model import INLINE_SECONDS
from model.gates import COVERAGE_LEVEL, COVERAGE_TOLERANCE
from model.lease import DEFAULT_DURATION
from model.train import DEFAULT_RMSE_CEILING, TrainingConfig
from model.tune import TuneSettings

# The default model's parameters the pages describe it by.
DEFAULT_MODEL = ("n_estimators", "num_leaves", "max_depth", "learning_rate")


def _bytes(value: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value:g} bytes"


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _times(bound: float) -> str:
    return f"{bound:g}×"


def _percent(share: float) -> str:
    return f"{share * 100:g} %"


def _default(settings: type, name: str):
    return next(field.default for field in fields(settings) if field.name == name)


def texts() -> dict[str, str]:
    """Every setting a page may show, by key, formatted as the page shows it."""
    limits = Limits()
    units = {"max_body_bytes": _bytes, "body_timeout": _seconds, "queue_timeout": _seconds}
    shown = {
        f"limits.{field.name}": units.get(field.name, lambda value: f"{value:,}")(getattr(limits, field.name))
        for field in fields(Limits)
    }
    shown |= {
        "limits.small_body": _bytes(limits.max_body_bytes / SMALL_BODY_SHARE),
        "limits.queued_bodies": _bytes(limits.max_waiting * limits.max_body_bytes),
        "limits.admitted": f"{limits.max_inflight + limits.max_waiting}",
        "limits.pod_memory": _bytes(POD_MEMORY_LIMIT),
        "runtime.inline_seconds": f"{INLINE_SECONDS * 1e3:g} ms",
        "capture.max_file": _bytes(_default(CaptureSettings, "max_bytes")),
        "capture.max_file_mb": f"{_default(CaptureSettings, 'max_bytes') / 2**20:g}",
        "capture.max_seconds": f"{_default(CaptureSettings, 'max_seconds'):g}",
        "capture.max_minutes": f"{_default(CaptureSettings, 'max_seconds') / 60:g} minutes",
        "capture.buffer": f"{_default(CaptureSettings, 'buffer'):,}",
        "capture.flush_seconds": f"{_default(CaptureSettings, 'flush_seconds'):g}",
        "gates.coverage_level": _percent(COVERAGE_LEVEL),
        "gates.coverage_band": f"{(COVERAGE_LEVEL - COVERAGE_TOLERANCE) * 100:g}–"
        f"{_percent(COVERAGE_LEVEL + COVERAGE_TOLERANCE)}",
        "gates.coverage_tolerance_points": f"{COVERAGE_TOLERANCE * 100:g}",
        "quality.rmse_limit": f"{DEFAULT_RMSE_CEILING:,.0f} USD",
        "training.limit": _seconds(TRAIN_LIMIT),
        # make bench's limits (docs/performance.md)
        "bench.one_row_limit": f"{inprocess.ONE_ROW_LIMIT * 1e3:g} ms",
        "bench.inprocess_batch": _times(inprocess.BATCH_BOUND),
        "bench.inprocess_speedup": _times(inprocess.SPEEDUP_BOUND),
        "bench.instructions_limit": f"{inprocess.ONE_ROW_INSTRUCTIONS_LIMIT / 1e6:g} M",
        "bench.server_latency": _times(servers.LATENCY_BOUND),
        "bench.server_throughput": _times(servers.THROUGHPUT_BOUND),
        "bench.v2_rows": _times(served.V2_ROWS_BOUND),
        "bench.v2_latency": _times(served.V2_LATENCY_BOUND),
        "bench.batch_throughput": _times(batch.THROUGHPUT_BOUND),
        "bench.batch_speedup": _times(batch.SPEEDUP_BOUND),
        "bench.batch_rss": _bytes(batch.RSS_LIMIT),
        "bench.tree_limit": f"{engine.TREE_LIMIT * 1e6:g} µs",
        "bench.intervals_off": _times(intervals.OFF_BOUND),
        "bench.intervals_on": _times(intervals.ON_BOUND),
        "bench.capture_latency": _times(capture_bench.LATENCY_BOUND),
        "bench.capture_throughput": _times(capture_bench.THROUGHPUT_BOUND),
        "bench.ready": _times(coldstart.READY_BOUND),
        "lease.duration": _seconds(DEFAULT_DURATION),
        **{f"train.{name}": f"{getattr(TrainingConfig(), name):g}" for name in DEFAULT_MODEL},
        "tune.max_estimators": f"{_default(TuneSettings, 'max_estimators'):,}",
    }
    return shown


def text(key: str) -> str:
    """Setting ``key`` as pages show it."""
    shown = texts()
    if key not in shown:
        raise KeyError(f"figure settings:{key}: no such setting (docsgen.settings.texts)")
    return shown[key]
