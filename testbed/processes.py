"""Real processes for tests and benchmarks: start them in their own process group, wait until a
server answers, measure their memory, and always stop the whole group.

* :func:`free_port`, :func:`process_env`: a loopback port free right now, outside the range
  the kernel gives outgoing connections; the environment every
  started process gets (the venv first on PATH, quiet, ``threads`` OpenMP threads).
* :func:`running_server` / :func:`running_servers`: start servers (their start-ups overlap),
  wait until each answers 200 on its health path, yield :class:`Server` objects, stop every
  process group on exit; an exception inside the block prints the server's log.
* :func:`stop_process_group`: SIGTERM, then SIGKILL, a group a test or benchmark started.
* :func:`tree_rss`, :class:`RssSampler`, :func:`wait_settled`, :func:`run_measured`: memory of a
  process and its descendants (psutil); a command's peak also reads each process's ``VmHWM``
  (its own high-water mark since ``exec``) from ``/proc``, which psutil does not expose. Not
  ``wait4``'s ``ru_maxrss``: Linux records the parent's high-water mark into a child's
  ``maxrss`` when the child execs, so every command would report at least the caller's RSS.
* :func:`listening_addresses`: the local addresses listening on a port (psutil).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"


# Below the kernel's ephemeral range (net.ipv4.ip_local_port_range): a port the kernel picks for
# ``bind(0)`` comes from that range, where every outgoing connection of every process also takes
# its source port, so between this check and the server's own bind a client could take it (CI:
# "Failed to bind to address 127.0.0.1:53741"). Ports are drawn at random, so two callers rarely
# draw the same one.
_EPHEMERAL_LOW = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
_ports = random.Random()


def free_port(host: str = LOOPBACK) -> int:
    while True:
        port = _ports.randrange(_EPHEMERAL_LOW - 12_000, _EPHEMERAL_LOW)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port


def process_env(
    extra: Mapping[str, str] | None = None, *, threads: int = 1, pythonpath: Sequence[str | Path] = ()
) -> dict[str, str]:
    """A copy of the environment with the venv's ``bin`` first on PATH, quiet defaults,
    ``threads`` OpenMP threads, ``pythonpath`` prepended to PYTHONPATH, then ``extra``."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["OMP_NUM_THREADS"] = str(threads)
    # `mlflow server` otherwise starts seven job-queue consumers (GenAI scorers, which this
    # project does not use): gigabytes of RSS and seconds of CPU per server start.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [*map(str, pythonpath), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


@dataclass
class Server:
    """A started server process (the leader of its own process group) and its log file."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    host: str = LOOPBACK

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def describe(self) -> str:
        return " ".join(map(str, self.proc.args))


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL what is left after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # The leader may be gone while children of the group live on: kill what is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def start_server(
    cmd: Sequence[str], port: int, env: Mapping[str, str] | None = None, cwd: str | Path | None = None
) -> Server:
    """Start ``cmd`` in its own session (process group), its output to a temporary log."""
    log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        list(cmd),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else process_env(),
        cwd=cwd,
        start_new_session=True,  # its own process group, so its workers are stopped with it
    )
    log.close()
    return Server(proc, port, Path(log.name))


def wait_healthy(server: Server, health_path: str, timeout: float) -> None:
    """Return once ``health_path`` answers 200; raise (with the log's tail) if the server exits
    first or ``timeout`` seconds pass."""
    url = f"{server.base_url}{health_path}"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.describe()} exited with status {server.proc.returncode} before {url} "
                f"answered:\n{server.log_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            last = type(error).__name__
        time.sleep(0.25)
    raise TimeoutError(
        f"{url} not healthy after {timeout:.0f} s (last: {last}):\n{server.log_text()[-4000:]}"
    )


@contextlib.contextmanager
def running_servers(
    specs: Sequence[tuple[Sequence[str], int, str]],
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
    cwd: str | Path | None = None,
) -> Iterator[list[Server]]:
    """Start every ``(cmd, port, health_path)`` at once, wait until each answers 200 on its
    health path, yield them, and always stop every process group and remove the logs."""
    servers: list[Server] = []
    try:
        for cmd, port, _ in specs:
            servers.append(start_server(cmd, port, env, cwd))
        for server, (_, _, health_path) in zip(servers, specs):
            wait_healthy(server, health_path, timeout)
        try:
            yield servers
        except BaseException as error:
            for server in servers:
                print(
                    f"\n----- server log ({type(error).__name__}): {server.describe()} -----", file=sys.stderr
                )
                print(server.log_text()[-20000:], file=sys.stderr)
            raise
    finally:
        for server in servers:
            stop_process_group(server.proc)
            with contextlib.suppress(OSError):
                server.log_path.unlink()


@contextlib.contextmanager
def running_server(
    cmd: Sequence[str],
    port: int,
    health_path: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
    cwd: str | Path | None = None,
) -> Iterator[Server]:
    """One server: :func:`running_servers` for a single ``(cmd, port, health_path)``."""
    with running_servers([(cmd, port, health_path)], env, timeout, cwd) as (server,):
        yield server


def listening_addresses(port: int) -> list[str]:
    """Local IPv4/IPv6 addresses with a listening TCP socket on ``port``."""
    return [
        connection.laddr.ip
        for connection in psutil.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    ]


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and its descendants (none once it is gone)."""
    try:
        leader = psutil.Process(pid)
        return [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every process below it (``mlflow models serve`` is a CLI
    process, a uvicorn master and its workers)."""
    return _rss(_tree(pid))


def _rss(processes: list[psutil.Process]) -> int:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_info().rss
    return total


def _high_water_mark(pid: int) -> int:
    """The process's peak resident bytes since ``exec`` (``VmHWM``; 0 once it is gone)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class _Sampler:
    """Calls ``sample()`` every ``interval`` seconds on a background thread while entered."""

    def __init__(self, pid: int, interval: float):
        self.pid, self.interval = pid, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


class RssSampler(_Sampler):
    """A process tree's RSS over time, as (monotonic time, bytes) samples."""

    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(pid, interval)
        self.samples: list[tuple[float, int]] = []

    def sample(self) -> None:
        self.samples.append((time.monotonic(), tree_rss(self.pid)))

    def mean_between(self, start: float, end: float) -> float:
        values = [rss for t, rss in self.samples if start <= t <= end]
        return sum(values) / len(values) if values else float("nan")


class PeakSampler(_Sampler):
    """The peak memory of a process tree while it runs: the larger of the tree's summed RSS and
    any one process's ``VmHWM``. A tree whose RSS passes ``cap`` bytes is killed (its process
    group: the machine is shared, and has no swap)."""

    def __init__(self, pid: int, interval: float = 0.1, cap: int | None = None):
        super().__init__(pid, interval)
        self.peak, self.cap, self.capped = 0, cap, False

    def sample(self) -> None:
        processes = _tree(self.pid)
        total = _rss(processes)
        self.peak = max([self.peak, total, *(_high_water_mark(process.pid) for process in processes)])
        if self.cap and total > self.cap and not self.capped:
            self.capped = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)


def wait_settled(pid: int, quiet_seconds: float = 2.0, timeout: float = 90.0) -> None:
    """Wait until the tree's RSS has grown by under 1 % for ``quiet_seconds``: every worker
    has loaded its model (a health check is answered as soon as the first one has)."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        samples.append((now, tree_rss(pid)))
        old = [rss for t, rss in samples if t <= now - quiet_seconds]
        if old and samples[-1][1] <= old[-1] * 1.01:
            return
        time.sleep(0.25)


@dataclass
class Completed:
    returncode: int
    wall_seconds: float
    peak_rss_bytes: int
    output_tail: str
    killed_at_cap: bool = False


def run_measured(
    cmd: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    rss_cap: int | None = None,
    cwd: str | Path | None = None,
) -> Completed:
    """Run ``cmd`` to completion in its own process group: wall time and peak memory; killed
    past ``rss_cap`` bytes of RSS or ``timeout`` seconds."""
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
        try:
            with PeakSampler(proc.pid, cap=rss_cap) as peak:
                proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process_group(proc)
        wall = time.perf_counter() - started
        output.seek(0)
        tail = output.read()[-6000:].decode(errors="replace")
    return Completed(proc.returncode, wall, peak.peak, tail, peak.capped)
