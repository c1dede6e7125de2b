"""The steps the stack's commands (containers/stack.py) are made of: the engine and the host ports
checked before anything starts, the images built or pulled, services started and waited for until
healthy, one-shot services, and the rollout (the champion into a fresh ``models`` volume, then the
runtime started on it: it loads its model once, at start)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Sequence

import yaml

from containers.compose_project import Stack, StackError
from model.data import PROJECT_ROOT

# Built from containers/postgres where the file's default PostgreSQL image cannot be had.
LOCAL_POSTGRES_IMAGE = "localhost/california-housing-postgres:15-bookworm"
LOCAL_POSTGRES_CONTEXT = "containers/postgres"
# The services that must be healthy before the registry is asked anything.
TRACKING = ("postgres", "mlflow")
HEALTH_TIMEOUT = 600.0
# Restarts by the engine, while a step waits for a service, that mean it will not come up:
# Docker's back-off between restarts doubles, so watching the state alone ("restarting") sees
# the loop only once the back-off outlasts the poll, several failed starts later.
RESTARTS_GIVEN_UP = 2
# What a service's log says that no retry can mend → what the newcomer should do about it. A
# step waiting for the service gives up as soon as its log says it (the tracking server itself
# retries a refused database login for over a minute before it exits, and again after each
# restart).
KNOWN_CAUSES = {
    "password authentication failed": (
        "PostgreSQL keeps the password it was created with: restore that .env, "
        "or `make down-volumes` to start afresh (it deletes the runs and models)"
    ),
}
# The runtime's model, as the storage step downloads it into the `models` volume.
SERVED_MLMODEL = "/mnt/models/MLmodel"


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
    exited, is unhealthy, logs one of ``KNOWN_CAUSES`` or was restarted by the engine
    ``RESTARTS_GIVEN_UP`` times while this waited, or that is still starting when the time is up."""
    deadline = time.monotonic() + timeout
    first_counts: dict[str, int] = {}
    while True:
        states = stack.states()
        counts = restart_counts(states, services)
        waiting = []
        for service in services:
            state = states.get(service)
            if state is None:
                raise StackError(f"service {service} has no container", service)
            restarts = counts[service] - first_counts.setdefault(service, counts[service])
            if restarts >= RESTARTS_GIVEN_UP:
                raise StackError(f"service {service} keeps exiting and restarting", service)
            if state["State"] not in ("running", "restarting"):
                how = f"{state['State']} (exit code {state['ExitCode']})"
                raise StackError(f"service {service} is {how}", service)
            if state["Health"] == "unhealthy":
                raise StackError(f"service {service} is unhealthy: its health check keeps failing", service)
            if state["Health"] != "healthy":
                if symptoms := known_causes(stack.logs(service).splitlines()):
                    raise StackError(f"service {service} cannot start: its log says '{symptoms[0]}'", service)
                waiting.append(service)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise StackError(f"service {waiting[0]} is not healthy after {timeout:.0f} s", waiting[0])
        time.sleep(2)


def known_causes(log_lines: Sequence[str]) -> list[str]:
    """The ``KNOWN_CAUSES`` symptoms that ``log_lines`` show."""
    return [symptom for symptom in KNOWN_CAUSES if any(symptom in line for line in log_lines)]


def restart_counts(states: dict[str, dict], services: Sequence[str]) -> dict[str, int]:
    """How many times the engine has restarted each service's container (its restart policy at
    work; `docker compose ps` does not say, `docker inspect` does)."""
    present = [service for service in services if service in states]
    ids = [states[service]["ID"] for service in present]
    command = ["docker", "inspect", "--format", "{{.RestartCount}}", *ids]
    inspected = subprocess.run(command, capture_output=True, text=True, check=True)
    counts = dict(zip(present, map(int, inspected.stdout.split()), strict=True))
    return {service: counts.get(service, 0) for service in services}


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
