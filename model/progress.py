"""Where a long command is: one tqdm bar per stage, with elapsed time and an estimate.

A stage is a known number of steps (cross-validation folds, fits) run one after the other;
its estimate is tqdm's, from the durations of the steps already done, so it holds on a busy
machine as on a quiet one. On a terminal the bars redraw in place, every second even while a
step runs (tqdm redraws only on an update, and one fold can take minutes on a loaded machine).
Anywhere else (CI logs, ``docker logs``, a file) a bar is written as a line when its stage
starts, after each step, and every ``LOG_INTERVAL`` seconds in between.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm

TERMINAL_INTERVAL = 1.0
LOG_INTERVAL = 30.0
TERMINAL_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit}s done, {elapsed} elapsed, {remaining} left ({rate_fmt})"


@dataclass(frozen=True)
class Stage:
    """``steps`` steps named ``unit`` (``"fold"``); a stage without steps is skipped."""

    name: str
    steps: int
    unit: str


class StagedProgress:
    """Bars for ``stages``, one after the other: call :meth:`advance` after each step.

    Used as a context manager around the stages' work. The stages' step counts must be the
    number of :meth:`advance` calls the work makes; an extra call is an error.
    ``interval`` overrides the redraw period (seconds) of the bar being run.
    """

    def __init__(
        self, title: str, stages: Sequence[Stage], stream: TextIO | None = None, interval: float | None = None
    ):
        self.title = title
        self.stages = [stage for stage in stages if stage.steps > 0]
        self.stream = stream or sys.stderr
        self.on_terminal = self.stream.isatty()
        self.interval = interval or (TERMINAL_INTERVAL if self.on_terminal else LOG_INTERVAL)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
        self._position = -1
        self._bar: tqdm | None = None

    def __enter__(self) -> StagedProgress:
        self._start_next()
        self._ticker.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopped.set()
        self._ticker.join()
        with self._lock:
            if self._bar is not None:
                self._bar.close()  # a stage cut short by an error stays on screen as far as it got
                self._bar = None

    def advance(self) -> None:
        """One step of the current stage is done; its last step starts the next stage."""
        with self._lock:
            if self._bar is None:
                raise RuntimeError(f"{self.title}: a step beyond the {len(self.stages)} planned stages")
            self._bar.update(1)
            if self._bar.n >= self._bar.total:
                self._bar.close()
                self._start_next()

    def _start_next(self) -> None:
        self._position += 1
        if self._position == len(self.stages):
            self._bar = None
            return
        stage = self.stages[self._position]
        self._bar = tqdm(
            total=stage.steps,
            desc=f"{self.title} [{self._position + 1}/{len(self.stages)}] {stage.name}",
            unit=stage.unit,
            file=self.stream if self.on_terminal else LogLines(self.stream),
            bar_format=TERMINAL_FORMAT if self.on_terminal else LOG_FORMAT,
            dynamic_ncols=self.on_terminal,
            mininterval=0,  # every step is shown: steps are few and long
            miniters=1,
            leave=self.on_terminal,  # off a terminal, closing would repeat the last line
            disable=False,  # tqdm's default hides a bar off a terminal; here it becomes lines
        )

    def _tick(self) -> None:
        while not self._stopped.wait(self.interval):
            with self._lock:
                if self._bar is not None:
                    self._bar.refresh()


class LogLines:
    """A stream for tqdm off a terminal: each status tqdm writes (a carriage return, the bar's
    text, padding over a longer previous text) becomes a line of its own."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> None:
        line = text.strip("\r\n").rstrip()
        if line:
            self._stream.write(line + "\n")

    def flush(self) -> None:
        self._stream.flush()
