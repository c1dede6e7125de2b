"""Helpers for tests that start real server processes (any HTTP server: mlflowserver, `mlflow models serve`, ...).

* ``free_port()``: a TCP port that is free on 127.0.0.1 right now.
* ``server_env()``: a copy of the environment with the venv's ``bin`` first on PATH and quiet,
  single-threaded defaults (MLFLOW_DISABLE_TELEMETRY=true, OMP_NUM_THREADS=1, no MLflow job runners).
* ``running_server(cmd, port, health_url, env=None, timeout=...)``: context manager that starts
  ``cmd`` in its own process group, waits until ``health_url`` answers 200, yields a
  ``ServerProcess`` and always kills the whole group on exit; on a startup failure, or an
  exception inside the ``with`` block, the server's log is printed.
* ``listening_addresses(port)``: local addresses with a LISTEN socket on ``port`` (Linux /proc).
* ``temporary_database(prefix)``: a fresh PostgreSQL database on 127.0.0.1:5432 (SQLAlchemy URI), dropped after.
* ``write_tiny_pyfunc(path)``: saves a tiny MLflow pyfunc model used to test model servers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Mapping, Optional, Sequence

import requests

VENV_BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_env(extra: Optional[Mapping[str, str]] = None) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["OMP_NUM_THREADS"] = "1"
    # `mlflow server` otherwise starts seven job-queue consumers (GenAI scorers, which this
    # project does not use): ~2 GB of RSS and seconds of CPU per server start.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    base_url: str
    log_path: Path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _print_log(server: ServerProcess, reason: str) -> None:
    print(f"\n----- server log ({reason}): {' '.join(server.proc.args)} -----", file=sys.stderr)
    print(server.log_text()[-20000:], file=sys.stderr)
    print("----- end of server log -----", file=sys.stderr)


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group started for ``proc``, then SIGKILL it if it does not exit."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while children of the group live on: kill what is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


@contextlib.contextmanager
def running_server(
    cmd: Sequence[str],
    port: int,
    health_url: str,
    env: Optional[Mapping[str, str]] = None,
    timeout: float = 120.0,
    cwd: Optional[str] = None,
    host: str = "127.0.0.1",
) -> Iterator[ServerProcess]:
    """Start ``cmd``, wait for ``health_url`` to return 200, yield, and always stop the process group."""
    log_file = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)
    log_path = Path(log_file.name)
    proc = subprocess.Popen(
        list(cmd),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else server_env(),
        cwd=cwd,
        start_new_session=True,  # own process group, so workers are stopped with it
    )
    log_file.close()
    server = ServerProcess(proc=proc, port=port, base_url=f"http://{host}:{port}", log_path=log_path)
    try:
        wait_healthy(server, health_url, timeout)
        yield server
    except BaseException as exc:
        _print_log(server, f"{type(exc).__name__}")
        raise
    finally:
        stop_process_group(proc)
        with contextlib.suppress(OSError):
            log_path.unlink()


def wait_healthy(server: ServerProcess, health_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        code = server.proc.poll()
        if code is not None:
            raise RuntimeError(f"server exited with status {code} before {health_url} became healthy")
        try:
            r = requests.get(health_url, timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise TimeoutError(f"{health_url} not healthy after {timeout:.0f}s (last: {last})")


POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"


@contextlib.contextmanager
def temporary_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database named ``<prefix>_<random>``; its URI; dropped on exit."""
    import uuid

    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def listening_addresses(port: int) -> List[str]:
    """Local IPv4/IPv6 addresses (hex-decoded) with a LISTEN socket on ``port`` (Linux only)."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            if width == 8:
                found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr_hex)[::-1]))
            else:
                raw = bytes.fromhex(addr_hex)
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.append(socket.inet_ntop(socket.AF_INET6, raw))
    return found


# ----------------------------------------------------------------------------------------------
# A tiny pyfunc for model-server tests (models-from-code: no pickled classes, loads anywhere).
# ----------------------------------------------------------------------------------------------

TINY_MODEL_CODE = textwrap.dedent(
    '''
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


    class Tiny(mlflow.pyfunc.PythonModel):
        """y = a * 2 + len(s) (+ b when given). Rejects NaN a (400), fails on s == "boom" (500)."""

        def predict(self, context, model_input, params=None):
            if model_input["a"].isna().any():
                raise MlflowException("a must not be missing", INVALID_PARAMETER_VALUE)
            if (model_input["s"] == "boom").any():
                raise RuntimeError("kaboom: internal secret detail")
            y = model_input["a"] * 2 + model_input["s"].str.len()
            if "b" in model_input.columns:
                y = y + model_input["b"].fillna(0.0)
            return pd.DataFrame({"y": y.astype("float64")})


    mlflow.models.set_model(Tiny())
    '''
)


def write_tiny_pyfunc(path: Path) -> Path:
    """Save the tiny model at ``path``: inputs a: double, s: string, b: double (optional); output y: double."""
    import warnings

    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    path = Path(path)
    code = path.parent / f"{path.name}_code.py"
    code.write_text(TINY_MODEL_CODE)
    signature = ModelSignature(
        inputs=Schema([ColSpec("double", "a"), ColSpec("string", "s"), ColSpec("double", "b", required=False)]),
        outputs=Schema([ColSpec("double", "y")]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no type hints" / "no input example" nags
        mlflow.pyfunc.save_model(str(path), python_model=str(code), signature=signature, pip_requirements=["mlflow"])
    return path
