"""Pre-flight checks of the Makefile's serving commands, then the command itself.

    python -m projects.preflight [--input FILE] [--output FILE] [--host HOST --port PORT]
                                 [--model-uri URI] -- COMMAND [ARGUMENT ...]

MLflow's CLIs load the model first and only then find a missing input file or a busy port.
Here each check that fails prints one line, ``error: …``, and exits 1 before anything slow
starts. Cheapest first: the input file exists and is readable, the output's folder exists,
HOST:PORT is free, and the model URI resolves (``model.registry.model_metadata``: the
registered model, its alias or version, and its ``MLmodel`` exist; nothing else is
downloaded). Then this process becomes COMMAND (``os.execvpe``: the server is MLflow's or
KServe's own process, not wrapped), with mlflowserver's bounded MLflow HTTP retries in its
environment where the caller set none. A port taken between the check and the server's bind
still fails in the server, with the server's own message.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from pathlib import Path

from mlflowserver import apply_mlflow_http_defaults

# URI schemes resolved through an MLflow store (the registry or the tracking store).
STORE_SCHEMES = ("models", "runs")
# The registry's answers for "no such registered model, alias or version" (the store is fine).
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
# Registered models a refusal lists, to show what a misspelt name or alias was meant to be.
LISTED_MODELS = 10


class Refusal(Exception):
    """A check failed; the message is the line the user sees."""


def check_input(path: Path) -> None:
    if not path.exists():
        raise Refusal(f"input file {path} does not exist")
    if not path.is_file():
        raise Refusal(f"input {path} is not a file")
    if not os.access(path, os.R_OK):
        raise Refusal(f"input file {path} is not readable")


def check_output(path: Path) -> None:
    if not path.parent.is_dir():
        raise Refusal(f"output {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise Refusal(f"output {path} is a folder")


def check_port_free(host: str, port: int, variable: str = "") -> None:
    """Bind ``host:port`` as a server would (with ``SO_REUSEADDR``, as uvicorn and tornado bind,
    so a recently closed connection does not count), then release it. A refusal names the
    make ``variable`` that chooses the port, when given."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise Refusal(f"host {host}: {error.strerror}") from None
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise Refusal(f"cannot listen on {host}:{port}: {error.strerror}") from None
                another = f"another port, e.g. {variable}={port + 1}" if variable else "another port"
                raise Refusal(
                    f"port {port} on {host} is already in use: stop what listens there, or choose {another}"
                ) from None


def check_model(uri: str) -> None:
    """The model ``uri`` resolves: its store exists and holds it, with its ``MLmodel``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from model import registry

    scheme = uri.split(":/", 1)[0] if ":/" in uri else ""
    store = mlflow.get_registry_uri() if scheme == "models" else mlflow.get_tracking_uri()
    if scheme in STORE_SCHEMES:
        missing = _missing_sqlite_file(store)
        if missing:
            raise Refusal(f"model {uri}: there is no MLflow store at {missing} yet (`make train` makes one)")
    try:
        registry.model_metadata(uri)
    except MlflowException as error:
        message = " ".join(str(error).split()).rstrip(".")
        if message.startswith("API request to "):
            raise Refusal(f"model {uri}: the model registry at {store} is unreachable: {message}") from None
        if scheme == "models" and error.error_code in NOT_FOUND:
            message += f"; {_registered_models(store)}"
        raise Refusal(f"model {uri}: {message}") from None


def _missing_sqlite_file(store: str) -> Path | None:
    """The database file of a ``sqlite:`` store when it does not exist (opening it would create it)."""
    if not store.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(store).database
    return Path(database) if database and not Path(database).exists() else None


def _registered_models(store: str) -> str:
    """What the store holds, for a refusal: its registered models and their aliases."""
    from mlflow import MlflowClient

    models = MlflowClient().search_registered_models(max_results=LISTED_MODELS)
    if not models:
        return f"{store} holds no registered model yet (`make train` registers one)"
    described = []
    for model in models:
        aliases = ", ".join(f"@{name} = version {number}" for name, number in sorted(model.aliases.items()))
        described.append(f"{model.name} ({aliases or 'no alias'})")
    return f"{store} holds {'; '.join(described)}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m projects.preflight",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", type=Path, help="a file the command reads")
    parser.add_argument("--output", type=Path, help="a file the command writes")
    parser.add_argument("--host", default="127.0.0.1", help="the address the command listens on")
    parser.add_argument("--port", type=int, help="the port the command listens on")
    parser.add_argument("--port-variable", default="", help="the make variable that sets the port")
    parser.add_argument("--model-uri", help="the MLflow model URI the command loads")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        parser.error("no command to run after the checks (… -- COMMAND)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.input:
            check_input(args.input)
        if args.output:
            check_output(args.output)
        if args.port is not None:
            check_port_free(args.host, args.port, args.port_variable)
        # Only now: the checks above need no MLflow, and importing mlflowserver loads kserve.
        apply_mlflow_http_defaults()
        command_env = dict(os.environ)
        if args.model_uri:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # the check reads one small file
            check_model(args.model_uri)
    except Refusal as refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 1
    os.execvpe(args.command[0], args.command, command_env)


if __name__ == "__main__":
    sys.exit(main())
