"""What intervals cost: the loaded pyfunc's 1-row and batch predict with and without `interval`.

Three artifacts of the same fitted model are measured in one interleaved loop (each call of
one is followed by a call of the others, so machine load hits them alike):

* *before intervals*: the model saved behind the signature it had before the `interval`
  parameter existed (``model.signatures.PREDICTION_INTERVALS.before``): today's baseline;
* *intervals off*: the artifact as shipped, called without parameters. The issue's limit:
  the same cost as before (MLflow's parameter enforcement included);
* *interval=0.8*: the same artifact asked for an interval; limit ≤ 1.5× intervals off.

Timings move with the machine's load; the same three 1-row calls are also counted in
instructions under callgrind (valgrind), which load does not move: a worker process
(``benchmarks/callgrind_worker.py``) loads the artifacts uninstrumented, and the harness
switches instrumentation on around each variant's calls only (``callgrind_control``).
"""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import mlflow

from benchmarks.bench import Bench, p50
from benchmarks.report import Figure
from model import packaging
from model.data import PROJECT_ROOT
from model.signatures import PREDICTION_INTERVALS

ON_BOUND = 1.5  # interval=0.8 ≤ 1.5 × intervals off
OFF_BOUND = 1.05  # intervals off: the cost of before, within timing noise
BATCH_ROWS = 1_000
CALLGRIND_CALLS = 50  # 1-row calls counted per variant


def run(bench: Bench) -> None:
    before = _before_intervals(bench)
    frames = bench.one_row_frames()
    variants = {
        "before": lambda frame: before.predict(frame),
        "off": lambda frame: bench.pyfunc.predict(frame),
        "on": lambda frame: bench.pyfunc.predict(frame, params={"interval": 0.8}),
    }
    one_row = _interleaved(variants, frames, bench.options.one_row_calls)
    batch_frames = [bench.resampled.frame(BATCH_ROWS)]
    batch = _interleaved(variants, batch_frames, max(10, bench.options.one_row_calls // 100))
    bench.add(
        Figure(
            "intervals.before.1row",
            "before intervals (no parameter in the signature): in-process 1-row p50",
            one_row["before"],
            "s",
        ),
        Figure(
            "intervals.off.1row",
            "intervals off (parameter absent): in-process 1-row p50",
            one_row["off"],
            "s",
            reference=one_row["before"],
            ref_label="before intervals",
            op="<=",
            bound=OFF_BOUND,
        ),
        Figure(
            "intervals.on.1row",
            "interval=0.8: in-process 1-row p50",
            one_row["on"],
            "s",
            reference=one_row["off"],
            ref_label="intervals off",
            op="<=",
            bound=ON_BOUND,
        ),
        Figure(
            "intervals.off.batch",
            f"intervals off: in-process {BATCH_ROWS:,} rows",
            batch["off"],
            "s",
            reference=batch["before"],
            ref_label="before intervals",
        ),
        Figure(
            "intervals.on.batch",
            f"interval=0.8: in-process {BATCH_ROWS:,} rows",
            batch["on"],
            "s",
            reference=batch["off"],
            ref_label="intervals off",
        ),
    )
    # Minutes under valgrind: the full form only, and only where valgrind is installed.
    if not bench.options.short and shutil.which("valgrind") and shutil.which("callgrind_control"):
        instructions = _callgrind(bench, frames[:CALLGRIND_CALLS], bench.workdir / "before-intervals")
        bench.add(
            Figure(
                "intervals.before.instructions",
                "before intervals: instructions per 1-row predict (callgrind)",
                instructions["before"],
                "instr",
            ),
            Figure(
                "intervals.off.instructions",
                "intervals off: instructions per 1-row predict (callgrind)",
                instructions["off"],
                "instr",
                reference=instructions["before"],
                ref_label="before intervals",
            ),
            Figure(
                "intervals.on.instructions",
                "interval=0.8: instructions per 1-row predict (callgrind)",
                instructions["on"],
                "instr",
                reference=instructions["off"],
                ref_label="intervals off",
            ),
        )


VARIANTS = ("before", "off", "on")


def _callgrind(bench: Bench, frames: list, before_dir: Path) -> dict[str, float]:
    """Instructions per call of each variant, counted by callgrind in a worker process: one
    counter dump per variant, in ``VARIANTS`` order (``out.1``, ``out.2``, ``out.3``)."""
    workdir = bench.workdir / "callgrind"
    workdir.mkdir(exist_ok=True)
    (workdir / "frames.pickle").write_bytes(pickle.dumps(frames))
    specs = [f"before={before_dir}", f"off={bench.model_dir}", f"on={bench.model_dir}:0.8"]
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={workdir}/out",
        sys.executable,
        "-m",
        "benchmarks.callgrind_worker",
        str(workdir / "frames.pickle"),
        *specs,
    ]
    worker = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for name in VARIANTS:
            _expect(worker, f"READY {name}")
            _control(worker.pid, "--instr=on")
            _send(worker, "go")
            _expect(worker, f"DONE {name}")
            _control(worker.pid, "--instr=off")
            _control(worker.pid, "--dump")
            _send(worker, "next")
        worker.wait(timeout=600)
    finally:
        if worker.poll() is None:
            worker.kill()
    counts = {}
    for position, name in enumerate(VARIANTS, start=1):
        totals = re.search(r"^totals: (\d+)", (workdir / f"out.{position}").read_text(), re.M)
        counts[name] = int(totals.group(1)) / len(frames)
    return counts


def _expect(worker: subprocess.Popen, line: str) -> None:
    got = worker.stdout.readline().strip()
    if got != line:
        raise RuntimeError(f"callgrind worker said {got!r}, expected {line!r}")


def _send(worker: subprocess.Popen, line: str) -> None:
    worker.stdin.write(line + "\n")
    worker.stdin.flush()


def _control(pid: int, option: str) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True, timeout=300)


def _interleaved(variants: dict, frames: list, calls: int) -> dict[str, float]:
    """p50 seconds per variant, calls interleaved round-robin after one untimed call each."""
    seconds = {name: [] for name in variants}
    for predict in variants.values():
        predict(frames[0])
    for i in range(calls):
        frame = frames[i % len(frames)]
        for name, predict in variants.items():
            started = time.perf_counter()
            predict(frame)
            seconds[name].append(time.perf_counter() - started)
    return {name: p50(values) for name, values in seconds.items()}


def _before_intervals(bench: Bench):
    """The benchmarked model behind the pre-interval signature, loaded as servers load it."""
    path = bench.workdir / "before-intervals"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(
            str(path),
            python_model=bench.python_model,
            signature=PREDICTION_INTERVALS.before,
            code_paths=[str(PROJECT_ROOT / "model")],
            pip_requirements=packaging.pip_requirements(),
        )
    return mlflow.pyfunc.load_model(str(path))
