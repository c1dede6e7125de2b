"""The MLflow command lines tests and benchmarks start, and the project's V2 runtime's, each
written once: this venv's ``mlflow`` with ``--env-manager local`` (no conda here) and servers
bound to loopback."""

from __future__ import annotations

import sys
from pathlib import Path

from testbed.processes import LOOPBACK, VENV_BIN

MLFLOW = str(VENV_BIN / "mlflow")


def mlflow_run(project: Path, entry_point: str, experiment: str, *params: str) -> list[str]:
    """``mlflow run`` of ``project``'s ``entry_point`` into ``experiment``, each of ``params``
    (``name=value``) passed as ``-P``."""
    command = [MLFLOW, "run", str(project), "-e", entry_point, "--env-manager", "local"]
    return [*command, "--experiment-name", experiment, *(arg for param in params for arg in ("-P", param))]


def mlflow_server(backend_store_uri: str, artifacts: Path | str, port: int, workers: int = 1) -> list[str]:
    """A tracking server on ``backend_store_uri`` proxying artifacts stored under ``artifacts``."""
    command = [MLFLOW, "server", "--backend-store-uri", backend_store_uri]
    command += ["--artifacts-destination", str(artifacts), "--serve-artifacts"]
    return [*command, "--host", LOOPBACK, "--port", str(port), "--workers", str(workers)]


def mlflow_ui(backend_store_uri: str, port: int) -> list[str]:
    """``mlflow ui`` on ``backend_store_uri`` (the pages a person looks at)."""
    return [MLFLOW, "ui", "--backend-store-uri", backend_store_uri, "--host", LOOPBACK, "--port", str(port)]


def mlflow_models_serve(model_uri: Path | str, port: int, workers: int = 1) -> list[str]:
    """MLflow's scoring server on ``model_uri``."""
    command = [MLFLOW, "models", "serve", "-m", str(model_uri), "--env-manager", "local"]
    return [*command, "--host", LOOPBACK, "--port", str(port), "--workers", str(workers)]


def mlflow_models_predict(
    model_uri: Path | str, input_path: Path, output_path: Path, content_type: str
) -> list[str]:
    """``mlflow models predict`` of ``input_path`` (``-t content_type``) into ``output_path``."""
    command = [MLFLOW, "models", "predict", "-m", str(model_uri), "-i", str(input_path)]
    return [*command, "-o", str(output_path), "-t", content_type, "--env-manager", "local"]


def mlflowserver(
    model_dir: Path | str, model_name: str, port: int, grpc_port: int | None = None, *flags: str
) -> list[str]:
    """The project's V2 runtime (``python -m mlflowserver``, run from the project root) serving
    ``model_dir`` as ``model_name`` on ``port``, with gRPC on ``grpc_port`` when given, then
    ``flags`` (``--name=value``)."""
    command = [sys.executable, "-m", "mlflowserver", f"--model_name={model_name}", f"--model_dir={model_dir}"]
    command.append(f"--http_port={port}")
    if grpc_port is not None:
        command += ["--enable_grpc=true", f"--grpc_port={grpc_port}"]
    return [*command, *flags]
