"""The state one harness run shares between its sections: options, artifacts, data, figures."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from benchmarks.artifacts import Resampled
from benchmarks.options import Options
from benchmarks.report import Figure
from model.data import PROJECT_ROOT
from testbed.processes import process_env


def time_calls(call: Callable, inputs: Sequence, repeats: int) -> list[float]:
    """Seconds of ``call(inputs[i % len(inputs)])`` for ``repeats`` calls (after one untimed call)."""
    call(inputs[0])
    seconds = []
    for i in range(repeats):
        argument = inputs[i % len(inputs)]
        started = time.perf_counter()
        call(argument)
        seconds.append(time.perf_counter() - started)
    return seconds


def p50(values: Sequence[float]) -> float:
    return statistics.median(values)


def time_interleaved(
    variants: dict[str, Callable], inputs: Sequence, calls: int, block: int = 1
) -> dict[str, list[float]]:
    """Seconds of ``calls`` calls of each variant on ``inputs`` (cycled), after one untimed call
    each: ``block`` calls of one variant, then ``block`` of the next, round after round, so
    machine load hits them alike. Tree engines need blocks: a call right after another
    engine's finds that engine's trees in the CPU caches, which no server does."""
    seconds = {name: [] for name in variants}
    for call in variants.values():
        call(inputs[0])
    for start in range(0, calls, block):
        for name, call in variants.items():
            for i in range(start, min(start + block, calls)):
                argument = inputs[i % len(inputs)]
                started = time.perf_counter()
                call(argument)
                seconds[name].append(time.perf_counter() - started)
    return seconds


@dataclass
class Bench:
    options: Options
    workdir: Path
    data_path: Path
    features: pd.DataFrame
    model_dir: Path | None = None
    trivial_dir: Path | None = None
    lightgbm_dir: Path | None = (
        None  # the same model without its compiled trees (artifacts.save_lightgbm_path_model)
    )
    model_description: str = ""
    trained_model: str | None = None  # where the artifact the measured `train` run registered lives
    figures: list[Figure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.resampled = Resampled(self.features)
        self._cache: dict = {}

    def add(self, *figures: Figure) -> None:
        for figure in figures:
            self.figures.append(figure)
            print(
                f"  {figure.label}: {figure.value if figure.value is None else round(figure.value, 6)} {figure.unit}",
                flush=True,
            )

    def figure(self, key: str) -> Figure | None:
        return next((f for f in self.figures if f.key == key), None)

    def process_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of every measured process: ``options.threads`` OpenMP threads and the
        project importable (the trivial model and ``benchmarks.noop_server`` live here)."""
        return process_env(extra, threads=self.options.threads, pythonpath=[PROJECT_ROOT])

    # ---------------------------------------------------------------- the loaded model, shared

    @cached_property
    def pyfunc(self):
        """``mlflow.pyfunc.load_model``: what every server calls, schema enforcement included."""
        return mlflow.pyfunc.load_model(str(self.model_dir))

    @cached_property
    def python_model(self):
        return self.pyfunc.unwrap_python_model()

    @cached_property
    def lightgbm_pyfunc(self):
        """The same model loaded without its compiled trees: LightGBM's ``Booster.predict``."""
        return mlflow.pyfunc.load_model(str(self.lightgbm_dir))

    def transformed(self, frame: pd.DataFrame) -> np.ndarray:
        """The regressor's input for ``frame``: what the pyfunc computes before its regressor."""
        return self.python_model.features.transform(frame)

    def regressor_predict(self, X: np.ndarray):
        return self.python_model.regressor.predict(X)

    def one_row_frames(self, count: int = 64) -> list[pd.DataFrame]:
        frame = self.resampled.frame(count)
        return [frame.iloc[[i]].reset_index(drop=True) for i in range(count)]

    def inprocess_one_row_p50(self) -> float:
        """Seconds of the loaded pyfunc's 1-row ``predict`` (median)."""
        if "one_row" not in self._cache:
            self._cache["one_row"] = p50(
                time_calls(self.pyfunc.predict, self.one_row_frames(), self.options.one_row_calls)
            )
        return self._cache["one_row"]

    def inprocess_body_p50(self) -> float:
        """Seconds of the loaded pyfunc's ``predict`` on one throughput body's worth of rows."""
        if "body" not in self._cache:
            n = self.options.body_rows
            frame = self.resampled.frame(n * 16)
            frames = [frame.iloc[i * n : (i + 1) * n].reset_index(drop=True) for i in range(16)]
            self._cache["body"] = p50(
                time_calls(self.pyfunc.predict, frames, max(20, self.options.one_row_calls // 10))
            )
        return self._cache["body"]

    def regressor_seconds_now(self, X: np.ndarray) -> float:
        """Seconds of the bare regressor on ``X``, measured now (not cached)."""
        self.regressor_predict(X[:10])
        started = time.perf_counter()
        self.regressor_predict(X)
        return time.perf_counter() - started

    def remember(self, key, value) -> None:
        self._cache[key] = value
