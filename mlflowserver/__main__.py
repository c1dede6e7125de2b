"""Command line entry point: ``python -m mlflowserver --model_name=NAME --model_dir=URI [kserve flags]``.

Reuses kserve's own argument parser (``kserve.model_server.parser``: ``--http_port``,
``--grpc_port``, ``--model_name``, ``--workers``, ``--enable_grpc``, ...) and adds:

* ``--model_dir``: a local MLflow model directory (e.g. ``/mnt/models``, where KServe's storage
  initializer puts ``storageUri``) or any MLflow model URI (``models:/Name@alias``, ``runs:/...``),
  resolved through ``MLFLOW_TRACKING_URI``.
* ``--http_host`` (env ``MLFLOWSERVER_HTTP_HOST``): the address REST and gRPC listen on.
  Default ``127.0.0.1`` (loopback, for local runs); in a cluster pass ``--http_host=0.0.0.0``.
* the request limits of ``mlflowserver.limits.Limits``: ``--max_body_bytes``, ``--max_rows``,
  ``--max_inflight``, ``--max_waiting``, ``--body_timeout``, ``--queue_timeout`` (env
  ``MLFLOWSERVER_MAX_BODY_BYTES``, ...); a value that is not a positive number exits 2.

Per-request log lines are off by default (``--access_log=true`` / ``MLFLOWSERVER_ACCESS_LOG=true``
turns uvicorn's access log on, ``--enable_latency_logging=true`` kserve's latency lines).

gRPC is off by default here (kserve's default is on, on the fixed port 8081): ``--enable_grpc=true``
serves the V2 gRPC protocol on ``--grpc_port``, on the same address as REST.

``--workers`` must be 1 (scale with replicas): kserve spawns extra workers that re-import mlflow
and the model, and kills any that miss its 5 s ping; on a small node they crash-loop.

If the model cannot be loaded (bad path, registry unreachable, unsupported signature) the process
prints one line to stderr and exits with status 1 instead of starting or hanging.
"""

from __future__ import annotations

import gc

if __name__ == "__main__":
    # No garbage collection while importing kserve and mlflow and loading the model: start-up
    # allocates millions of objects and frees few, and each collection rescans them all.
    # main() turns it back on (and freezes what start-up made) before serving.
    gc.disable()

import argparse  # noqa: E402 - after the collector is off
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import fields, replace

import mlflow
from fastapi.exceptions import FastAPIDeprecationWarning
from kserve import logging as kserve_logging
from kserve.model_server import parser as kserve_parser
from kserve.utils.utils import strtobool
from mlflow.exceptions import MlflowException

from mlflowserver import apply_mlflow_http_defaults
from mlflowserver.limits import Limits, positive
from mlflowserver.model import MLflowModel
from mlflowserver.server import MLflowModelServer

HOST_ENV = "MLFLOWSERVER_HTTP_HOST"
ACCESS_LOG_ENV = "MLFLOWSERVER_ACCESS_LOG"
DEFAULT_HOST = "127.0.0.1"

parser = argparse.ArgumentParser(
    prog="python -m mlflowserver",
    description="Serve an MLflow pyfunc model with KServe's model server (V1 and V2 REST, V2 gRPC).",
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
    help=f"Address REST and gRPC listen on (env {HOST_ENV}); use 0.0.0.0 in a cluster.",
)
limit_flags = parser.add_argument_group(
    "request limits",
    "What one request may cost (docs/reliability.md#request-limits); "
    "env wins over the default, the flag over both.",
)
for _field in fields(Limits):
    limit_flags.add_argument(
        f"--{_field.name}",
        default=argparse.SUPPRESS,
        metavar=_field.type.upper(),
        help=f"{Limits.help()[_field.name]} (env {Limits.env_name(_field.name)}; default {_field.default})",
    )
parser.add_argument(
    "--access_log",
    default=os.environ.get(ACCESS_LOG_ENV, "false"),
    type=lambda value: bool(strtobool(value)),
    help=f"log one line per HTTP request (uvicorn's access log; env {ACCESS_LOG_ENV})",
)
# Per-request log lines cost more than the model on small requests (docs/codebase/kserve-runtime.md):
# off by default, kserve's latency lines (--enable_latency_logging) as well as the access log.
parser.set_defaults(enable_grpc=False, enable_latency_logging=False)


def quiet_request_logs(access_log: bool, latency_logging: bool) -> None:
    """Per-request log lines only where asked for; FastAPI's per-request deprecation warning never."""
    if not access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    if not latency_logging:
        # kserve's timing middleware logs two lines per request whatever --enable_latency_logging says.
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    # kserve's default ORJSONResponse: FastAPI warns that it is deprecated, on every request.
    warnings.filterwarnings("ignore", category=FastAPIDeprecationWarning)


def request_limits(args: argparse.Namespace) -> Limits:
    """The limits from the defaults, the environment and the flags; ValueError naming a bad one."""
    limits = Limits.from_environment()
    flags = {
        f.name: positive(f.type, getattr(args, f.name), f"--{f.name}")
        for f in fields(Limits)
        if hasattr(args, f.name)
    }
    return replace(limits, **flags)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _registry_problem(exc: BaseException) -> str:
    """``"model registry at <uri> is unreachable; "`` when ``exc`` is MLflow's HTTP failure, else ``""``."""
    if isinstance(exc, MlflowException) and str(exc).startswith("API request to "):
        return f"model registry at {mlflow.get_registry_uri()} is unreachable; "
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    args, _ = parser.parse_known_args(argv)
    if args.workers != 1:
        print(
            "mlflowserver: --workers must be 1 (spawned kserve workers re-import mlflow and the model "
            "and are killed by kserve's 5 s liveness ping before they are up); scale with replicas instead",
            file=sys.stderr,
        )
        return 2
    try:
        limits = request_limits(args)
    except ValueError as exc:
        print(f"mlflowserver: {exc}", file=sys.stderr)
        return 2
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
    apply_mlflow_http_defaults()

    model = MLflowModel(args.model_name, args.model_dir, limits)
    try:
        model.load()
    except Exception as exc:  # noqa: BLE001 - any load failure is fatal, reported on one line
        print(
            f"mlflowserver: cannot load model {args.model_dir!r}: {_registry_problem(exc)}"
            f"{type(exc).__name__}: {_one_line(exc)}",
            file=sys.stderr,
        )
        return 1

    server = MLflowModelServer(
        host=args.http_host,
        limits=limits,
        enable_grpc=args.enable_grpc,
        grpc_options=[
            ("grpc.max_send_message_length", args.grpc_max_send_message_length),
            ("grpc.max_receive_message_length", args.grpc_max_receive_message_length),
        ],
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    quiet_request_logs(args.access_log, args.enable_latency_logging)
    if not gc.isenabled():
        gc.freeze()  # start-up's objects live as long as the process: never rescanned
        gc.enable()
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
