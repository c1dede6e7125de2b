"""A Spark standalone cluster on loopback, for tests and benchmarks: one master and ``workers``
workers, each its own JVM started with the installed PySpark's ``spark-class``; each worker
launches its own executor JVM, whose Python workers run this venv's interpreter.

Every process of the cluster carries ``SPARK_TESTBED_PROCESS`` in its environment: the master
and workers get it from here, an executor inherits its worker's environment, and PySpark's
Python daemon inherits its executor's. That is how :meth:`SparkCluster.processes` finds all of
them, although the daemon puts itself in a process group of its own (``pyspark/daemon.py``),
and how stopping the cluster, or losing one worker, leaves nothing of it running.

The workers' environment has no ``MLFLOW_TRACKING_URI`` (only the driver resolves models) and
no ``PYTHONPATH`` (the model's code travels in its artifact).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from testbed.processes import LOOPBACK, free_port, process_env

SPARK_HOME = Path(importlib.util.find_spec("pyspark").origin).parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
MARKER = "SPARK_TESTBED_PROCESS"
JRE_HINT = "install a Java 17 runtime (Debian: apt-get install openjdk-17-jre-headless)"


def spark_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a driver on this machine talking to the cluster: loopback addresses
    (``SPARK_LOCAL_IP``) and this venv's interpreter for every Python worker (``PYSPARK_PYTHON``)."""
    env = process_env({"SPARK_LOCAL_IP": LOOPBACK, "PYSPARK_PYTHON": sys.executable})
    env.update(extra or {})
    return env


@dataclass
class SparkDaemon:
    """The master or one worker: the JVM ``spark-class`` became, and its log file."""

    name: str
    marker: str
    proc: subprocess.Popen
    log_path: Path

    def processes(self) -> list[psutil.Process]:
        """This daemon and everything it started (a worker: its executors and their Python workers)."""
        return _marked(lambda value: value == self.marker)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL it and everything it started, at once, as if its machine had gone."""
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""


@dataclass
class SparkCluster:
    """A running standalone cluster: ``master_url`` is what a driver's ``--master`` takes."""

    root: Path
    master: SparkDaemon
    master_url: str
    web_url: str
    cores: int
    memory: str
    workers: list[SparkDaemon] = field(default_factory=list)

    def status(self) -> dict:
        """The master's view (its web UI's ``/json/``): ``aliveworkers``, ``workers``, apps."""
        with urllib.request.urlopen(f"{self.web_url}/json/", timeout=5) as response:
            return json.load(response)

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster (master, workers, executors, Python workers)."""
        return _marked(lambda value: value.startswith(f"{self.root}:"))

    def start_worker(self) -> SparkDaemon:
        """One more worker of ``cores`` cores and ``memory``, registering with the master."""
        index = len(self.workers) + 1
        name = f"worker-{index}"
        work_dir = self.root / name
        command = [str(SPARK_CLASS), WORKER_CLASS, "--host", LOOPBACK]
        command += ["--port", str(free_port()), "--webui-port", str(free_port())]
        command += ["--cores", str(self.cores), "--memory", self.memory, "--work-dir", str(work_dir)]
        worker = _start_daemon(
            self.root, name, [*command, self.master_url], {"SPARK_LOCAL_DIRS": str(work_dir / "local")}
        )
        self.workers.append(worker)
        return worker

    def alive_workers(self) -> list[SparkDaemon]:
        return [worker for worker in self.workers if worker.alive()]

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Return once the master is ALIVE with every live worker registered; raise with the logs
        if a daemon exits or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        expected = len(self.alive_workers())
        last = "no answer"
        while time.monotonic() < deadline:
            for daemon in [self.master, *self.workers]:
                if daemon.proc.poll() not in (None, -signal.SIGKILL):
                    raise RuntimeError(
                        f"{daemon.name} exited with {daemon.proc.returncode}:\n{self.log_tail()}"
                    )
            try:
                status = self.status()
                if status["status"] == "ALIVE" and status["aliveworkers"] == expected:
                    return
                last = f"{status['status']}, {status['aliveworkers']} of {expected} workers"
            except (urllib.error.URLError, OSError, ValueError) as error:
                last = type(error).__name__
            time.sleep(0.5)
        raise TimeoutError(f"Spark master not ready after {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def replace_lost_workers(self) -> None:
        """Start a new worker for each one that died (a test killed it), and wait for them."""
        lost = len(self.workers) - len(self.alive_workers())
        for _ in range(lost):
            self.start_worker()
        if lost:
            self.wait_ready()

    def executor_dirs(self) -> list[Path]:
        """The executors' directories the workers made (``<work dir>/<app id>/<executor id>``)."""
        return sorted(self.root.glob("worker-*/app-*/*"))

    def log_tail(self, characters: int = 4000) -> str:
        return "\n".join(
            f"----- {daemon.name} -----\n{daemon.log_text()[-characters:]}"
            for daemon in [self.master, *self.workers]
        )

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM every process of the cluster (workers stop their executors), SIGKILL what is
        left after ``grace`` seconds, and reap the daemons."""
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.terminate()
        deadline = time.monotonic() + grace
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        for daemon in [*self.workers, self.master]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.proc.wait(timeout=grace)


@contextlib.contextmanager
def running_spark_cluster(
    root: Path, workers: int = 2, cores: int = 1, memory: str = "2g", timeout: float = 180.0
) -> Iterator[SparkCluster]:
    """A master and ``workers`` workers of ``cores`` cores and ``memory`` each, under ``root``
    (logs, work and scratch directories); stopped on exit, whatever happened inside."""
    if shutil.which("java", path=_daemon_env()["PATH"]) is None and "JAVA_HOME" not in os.environ:
        raise RuntimeError(f"no java on PATH for Spark: {JRE_HINT}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    port, web_port = free_port(), free_port()
    master_command = [str(SPARK_CLASS), MASTER_CLASS, "--host", LOOPBACK]
    master_command += ["--port", str(port), "--webui-port", str(web_port)]
    # Its REST submission server would take the fixed port 6066: off, nothing here submits through it.
    master = _start_daemon(
        root, "master", master_command, {"SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}
    )
    cluster = SparkCluster(
        root, master, f"spark://{LOOPBACK}:{port}", f"http://{LOOPBACK}:{web_port}", cores, memory
    )
    try:
        for _ in range(workers):
            cluster.start_worker()
        cluster.wait_ready(timeout)
        try:
            yield cluster
        except BaseException as error:
            print(
                f"\n----- Spark cluster logs ({type(error).__name__}) -----\n{cluster.log_tail()}",
                file=sys.stderr,
            )
            raise
    finally:
        cluster.stop()


def _start_daemon(root: Path, name: str, command: list[str], extra_env: dict[str, str]) -> SparkDaemon:
    """Start ``command`` in its own session, its output to ``<root>/<name>.log``, marked as ``name``."""
    marker = f"{root}:{name}"
    log_path = root / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**_daemon_env(), **extra_env, MARKER: marker},
            cwd=root,
            start_new_session=True,
        )
    return SparkDaemon(name, marker, proc, log_path)


def _daemon_env() -> dict[str, str]:
    """The daemons' environment: the driver's, less the tracking server and any ``PYTHONPATH``:
    executors need neither the registry nor this checkout (the artifact carries its code)."""
    env = spark_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PYTHONPATH", None)
    return env


def _marked(match) -> list[psutil.Process]:
    """Live processes whose ``SPARK_TESTBED_PROCESS`` satisfies ``match``."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            value = process.environ().get(MARKER)
            if value is not None and match(value) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found
