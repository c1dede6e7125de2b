"""Command line entry point: ``python -m mlflowserver --model_name=NAME --model_dir=URI [kserve flags]``.

Reuses kserve's own argument parser (``kserve.model_server.parser``: ``--http_port``,
``--model_name``, ``--workers``, ``--enable_grpc``, ...) and adds:

* ``--model_dir``: a local MLflow model directory (e.g. ``/mnt/models``, where KServe's storage
  initializer puts ``storageUri``) or any MLflow model URI (``models:/Name@alias``, ``runs:/...``),
  resolved through ``MLFLOW_TRACKING_URI``.
* ``--http_host`` (env ``MLFLOWSERVER_HTTP_HOST``): the address the REST server listens on.
  Default ``127.0.0.1`` (loopback, for local runs); in a cluster pass ``--http_host=0.0.0.0``.

``--workers`` must be 1 (scale with replicas): kserve spawns extra workers that re-import mlflow
and the model, and kills any that miss its 5 s ping; on a small node they crash-loop.

A V2 body that is not JSON or not an InferenceRequest gets HTTP 400 with the location and reason
of the problem, instead of FastAPI's 422 that echoes the request body back.

gRPC is off by default here (kserve's default is on): kserve 0.21 always binds gRPC to ``[::]``,
which would defeat the loopback default, so ``--enable_grpc=true`` is refused unless
``--http_host`` is a wildcard address.

If the model cannot be loaded (bad path, registry unreachable, unsupported signature) the process
prints one line to stderr and exits with status 1 instead of starting or hanging.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import kserve
import mlflow
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import logging as kserve_logging
from kserve.model_server import app as kserve_app
from kserve.model_server import parser as kserve_parser
from mlflow.exceptions import MlflowException

from mlflowserver.model import MLflowModel

HOST_ENV = "MLFLOWSERVER_HTTP_HOST"
DEFAULT_HOST = "127.0.0.1"
_WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]")

# Bound MLflow's HTTP retries so an unreachable tracking server/registry fails in seconds rather
# than minutes (MLflow's defaults retry 7 times with exponential backoff, ~4.5 min on a refused
# connection; a silent one waits 120 s per try). Explicit env wins.
_MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

parser = argparse.ArgumentParser(
    prog="python -m mlflowserver",
    description="Serve an MLflow pyfunc model with KServe's model server (V1 and V2 REST).",
    parents=[kserve_parser],
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
)
parser.add_argument(
    "--model_dir",
    required=True,
    help="Local MLflow model directory (e.g. /mnt/models) or MLflow model URI (e.g. models:/Name@alias).",
)
parser.add_argument(
    "--http_host",
    default=os.environ.get(HOST_ENV, DEFAULT_HOST),
    help=f"Address the REST server listens on (env {HOST_ENV}); use 0.0.0.0 in a cluster.",
)
parser.set_defaults(enable_grpc=False)


class HostBoundModelServer(kserve.ModelServer):
    """kserve.ModelServer listening on a chosen address instead of the hardcoded 0.0.0.0.

    kserve 0.21's RESTServer builds its ``uvicorn.Config`` with ``host="0.0.0.0"`` and offers no
    option. ``ModelServer.start()`` creates the REST server and then calls
    ``setup_event_loop()`` before serving, so the host is set on the uvicorn config there
    (uvicorn reads ``config.host`` only when it binds).
    """

    def __init__(self, http_host: str, **kwargs):
        super().__init__(**kwargs)
        self.http_host = http_host

    def setup_event_loop(self):
        rest = self._rest_server or getattr(self._rest_multiprocess_server, "_rest_server", None)
        config = getattr(rest, "config", None)
        if config is None or not hasattr(config, "host"):
            raise RuntimeError("cannot set the listen address: unexpected kserve version internals")
        config.host = self.http_host
        super().setup_event_loop()


async def request_validation_handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a V2 body that is not JSON or not an InferenceRequest, naming the problem only.

    FastAPI's default is a 422 whose ``detail`` echoes the request body back (``input``);
    this keeps the location and reason of each error and drops the payload.
    """
    errors = list(exc.errors())
    # The V2 route accepts Union[InferenceRequest, bytes]: the "bytes" branch error is noise.
    relevant = [e for e in errors if "bytes" not in (e.get("loc") or ())[1:2]] or errors
    problems = []
    for err in relevant[:5]:
        loc = [str(p) for p in (err.get("loc") or ()) if p not in ("body", "InferenceRequest")]
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            cause = (err.get("ctx") or {}).get("error")
            problems.append(
                f"malformed JSON at position {loc[0] if loc else '?'}" + (f" ({cause})" if cause else "")
            )
        else:
            problems.append(f"{'.'.join(loc) or 'body'}: {msg}")
    return JSONResponse(status_code=400, content={"error": "invalid request body: " + "; ".join(problems)})


def install_request_validation_handler(app: FastAPI) -> None:
    """Register the handler on kserve's FastAPI app (used in-process; ``--workers>1`` spawns fresh apps)."""
    app.add_exception_handler(RequestValidationError, request_validation_handler)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _registry_problem(exc: BaseException) -> str:
    """``"model registry at <uri> is unreachable; "`` when ``exc`` is MLflow's HTTP failure, else ``""``."""
    if isinstance(exc, MlflowException) and str(exc).startswith("API request to "):
        return f"model registry at {mlflow.get_registry_uri()} is unreachable; "
    return ""


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, _ = parser.parse_known_args(argv)
    if args.enable_grpc and args.http_host not in _WILDCARD_HOSTS:
        print(
            f"mlflowserver: --enable_grpc=true binds gRPC to all interfaces (kserve hardcodes [::]); "
            f"it needs --http_host=0.0.0.0, got {args.http_host}",
            file=sys.stderr,
        )
        return 2
    if args.workers != 1:
        print(
            "mlflowserver: --workers must be 1 (spawned kserve workers re-import mlflow and the model "
            "and are killed by kserve's 5 s liveness ping before they are up); scale with replicas instead",
            file=sys.stderr,
        )
        return 2
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
    for key, value in _MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)

    model = MLflowModel(args.model_name, args.model_dir)
    try:
        model.load()
    except Exception as exc:  # noqa: BLE001 - any load failure is fatal, reported on one line
        print(
            f"mlflowserver: cannot load model {args.model_dir!r}: {_registry_problem(exc)}"
            f"{type(exc).__name__}: {_one_line(exc)}",
            file=sys.stderr,
        )
        return 1

    install_request_validation_handler(kserve_app)
    server = HostBoundModelServer(
        http_host=args.http_host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
