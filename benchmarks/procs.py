"""Real processes: start a server in its own process group, sample the group's memory, stop it.

Memory comes from ``/proc`` (Linux): a server's resident set is the sum over every process
in its process group (``mlflow models serve`` is a CLI process, a uvicorn master and its
workers). A batch command's peak is sampled too, every 0.1 s: the larger of the group's
summed RSS and any one process's ``VmHWM`` (its own high-water mark since ``exec``). Not
``wait4``'s ``ru_maxrss``: Linux records the parent's high-water mark into a child's
``maxrss`` when the child execs, so every command would report at least this harness's RSS.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from model.data import PROJECT_ROOT

VENV_BIN = Path(sys.executable).parent
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def process_env(threads: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every measured process gets: the venv first on PATH, ``threads`` OpenMP threads."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 5 is the process group; the command name (field 2) may hold spaces and ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def group_rss(pgid: int) -> int:
    """Resident bytes of every process in the group."""
    total = 0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return total


class _Sampler:
    """Calls ``sample()`` every ``interval`` seconds on a background thread while entered."""

    def __init__(self, pgid: int, interval: float):
        self.pgid, self.interval = pgid, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class RssSampler(_Sampler):
    """A process group's RSS over time, as (monotonic time, bytes) samples."""

    def __init__(self, pgid: int, interval: float = 0.5):
        super().__init__(pgid, interval)
        self.samples: list[tuple[float, int]] = []

    def sample(self) -> None:
        self.samples.append((time.monotonic(), group_rss(self.pgid)))

    def mean_between(self, start: float, end: float) -> float:
        values = [rss for t, rss in self.samples if start <= t <= end]
        return sum(values) / len(values) if values else float("nan")


def wait_settled(pgid: int, quiet_seconds: float = 2.0, timeout: float = 90.0) -> None:
    """Wait until the group's RSS has grown by under 1 % for ``quiet_seconds``: every worker
    has loaded its model (a health check is answered as soon as the first one has)."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        samples.append((now, group_rss(pgid)))
        old = [rss for t, rss in samples if t <= now - quiet_seconds]
        if old and samples[-1][1] <= old[-1] * 1.01:
            return
        time.sleep(0.25)


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL what is left after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def pgid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


def start_server(cmd: Sequence[str], port: int, env: Mapping[str, str]) -> Server:
    """Start ``cmd`` in its own session (process group), its output to a temporary log."""
    log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=dict(env), cwd=PROJECT_ROOT, start_new_session=True,
    )  # fmt: skip
    log.close()
    return Server(proc, port, Path(log.name))


def wait_healthy(server: Server, health_path: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    command = " ".join(map(str, server.proc.args))
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{command} exited with {server.proc.returncode} before it was healthy:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{health_path}", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{command} not healthy after {timeout:.0f} s:\n{server.log_tail()}")
        time.sleep(0.2)


def stop_server(server: Server) -> None:
    stop_group(server.proc)
    with contextlib.suppress(OSError):
        server.log_path.unlink()


@contextlib.contextmanager
def running_servers(specs: Sequence[tuple[Sequence[str], int, str]], env: Mapping[str, str], timeout: float = 180.0):
    """Start every ``(cmd, port, health_path)`` at once (their start-ups overlap), wait until
    each answers 200 on its health path, yield them, always stop every process group."""
    servers: list[Server] = []
    try:
        for cmd, port, _ in specs:
            servers.append(start_server(cmd, port, env))
        for server, (_, _, health_path) in zip(servers, specs):
            wait_healthy(server, health_path, timeout)
        yield servers
    finally:
        for server in servers:
            stop_server(server)


@contextlib.contextmanager
def running_server(cmd: Sequence[str], port: int, health_path: str, env: Mapping[str, str], timeout: float = 180.0):
    with running_servers([(cmd, port, health_path)], env, timeout) as (server,):
        yield server


def _status_kib(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
    found = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in fields:
                found[name] = int(value.split()[0])
    return found


class PeakSampler(_Sampler):
    """The peak memory of a process group while it runs (see the module's docstring); a group
    whose RSS passes ``cap`` bytes is killed (the machine is shared, and has no swap)."""

    def __init__(self, pgid: int, interval: float = 0.1, cap: int | None = None):
        super().__init__(pgid, interval)
        self.peak, self.cap, self.capped = 0, cap, False

    def sample(self) -> None:
        total = 0
        for pid in group_pids(self.pgid):
            status = _status_kib(pid, ("VmHWM", "VmRSS"))
            total += status.get("VmRSS", 0) * 1024
            self.peak = max(self.peak, status.get("VmHWM", 0) * 1024)
        self.peak = max(self.peak, total)
        if self.cap and total > self.cap and not self.capped:
            self.capped = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)


@dataclass
class Completed:
    returncode: int
    wall_seconds: float
    peak_rss_bytes: int
    output_tail: str
    killed_at_cap: bool = False


def run_measured(cmd: Sequence[str], env: Mapping[str, str], timeout: float, rss_cap: int | None = None) -> Completed:
    """Run ``cmd`` to completion in its own process group: wall time and peak RSS; killed past
    ``rss_cap`` bytes of RSS or ``timeout`` seconds."""
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env), cwd=PROJECT_ROOT, start_new_session=True,
        )  # fmt: skip
        try:
            with PeakSampler(proc.pid, cap=rss_cap) as peak:
                proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
        wall = time.perf_counter() - started
        output.seek(0)
        tail = output.read()[-6000:].decode(errors="replace")
    return Completed(proc.returncode, wall, peak.peak, tail, peak.capped)
