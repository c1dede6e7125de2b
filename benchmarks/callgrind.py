"""Instructions per call, counted by callgrind (valgrind), which machine load does not move.

A worker process (``benchmarks/callgrind_worker.py``) loads every variant's artifact and
warms them all uninstrumented; the harness then switches instrumentation on around one
variant's calls at a time (``callgrind_control``) and dumps the counters after each, so
``out.1``, ``out.2``, … hold the variants' counts in order. Cache effects are invisible
here: compare tree engines by time too.
"""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

from model.data import PROJECT_ROOT


def available() -> bool:
    return bool(shutil.which("valgrind") and shutil.which("callgrind_control"))


def instructions_per_call(workdir: Path, frames: list, variants: dict[str, str]) -> dict[str, float]:
    """``name → instructions`` per ``predict`` of one frame of ``frames``, for each variant
    ``name → "MODEL_DIR"`` (or ``"MODEL_DIR:LEVEL"``, called with ``interval=LEVEL``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "frames.pickle").write_bytes(pickle.dumps(frames))
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={workdir}/out",
        sys.executable,
        "-m",
        "benchmarks.callgrind_worker",
        str(workdir / "frames.pickle"),
        *(f"{name}={spec}" for name, spec in variants.items()),
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
        for name in variants:
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
    for position, name in enumerate(variants, start=1):
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
