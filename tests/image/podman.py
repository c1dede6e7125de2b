"""Podman for the image test, configured by the project's containers/ folder (CONTAINERS_CONF and
CONTAINERS_STORAGE_CONF, exported by `make image-test`).

* :func:`podman`: one podman command; a non-zero exit fails with podman's own message.
* :func:`run_args`: ``podman run`` arguments for a role, hardened as the manifests run it.
* :func:`run_role`: a one-shot role (trainer, storage initializer), removed when it ends.
* :func:`serving`: a server role (tracking server, runtime) until it answers its health path;
  stopped, removed and its port free again on exit.
* :func:`volume`: a named volume, removed on exit; :func:`volume_path`: its files on this machine.
* :func:`image_size`: bytes, also a line of SUMMARY, which conftest.py prints after the run.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence

from testbed.processes import Server, listening_addresses, process_env, running_server

# uid 1000, read-only root filesystem, no capability, no privilege escalation; writable scratch
# only in tmpfs (/tmp, HOME), as docker-compose.yml and the manifests' emptyDir volumes give it.
# Host networking: the servers reach the machine's PostgreSQL on 127.0.0.1 and bind 127.0.0.1.
HARDENED = (
    "--user=1000:1000",
    "--read-only",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--tmpfs=/tmp",
    "--tmpfs=/home/app",
    "--network=host",
)
# Lines printed at the end of the run (conftest.py): image sizes, the seeded mistake's reason.
SUMMARY: list[str] = []


def podman(*args: str, timeout: float = 300) -> str:
    completed = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, (
        f"podman {args[0]} exited {completed.returncode}: {completed.stderr[-2000:]}"
    )
    return completed.stdout


def image_size(image: str) -> int:
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image))
    SUMMARY.append(f"image {image}: {size / 1e6:,.0f} MB")
    return size


def run_args(
    image: str,
    command: Sequence[str],
    *,
    name: str,
    env: Mapping[str, str] = {},
    mounts: Sequence[str] = (),
    hosts: Sequence[str] = (),
    workdir: str | None = None,
) -> list[str]:
    """``podman run --rm`` of ``command`` in ``image``. The environment is passed by name only, so
    credentials stay out of the command line: podman takes the values from its own environment.
    ``hosts`` resolve to 127.0.0.1 inside the container (the cluster's service names)."""
    return [
        "podman", "run", "--rm", f"--name={name}", *HARDENED,
        *(f"--env={key}" for key in env),
        *(f"--volume={mount}" for mount in mounts),
        *(f"--add-host={host}:127.0.0.1" for host in hosts),
        *([f"--workdir={workdir}"] if workdir else []),
        image, *command,
    ]  # fmt: skip


def container_name(role: str) -> str:
    return f"image-test-{role}-{uuid.uuid4().hex[:8]}"


def run_role(image: str, command: Sequence[str], *, timeout: float, env: Mapping[str, str] = {}, **options):
    """Run a one-shot role to its end; the completed process (its output captured)."""
    name = container_name("job")
    try:
        return subprocess.run(
            run_args(image, command, name=name, env=env, **options),
            env=process_env(env), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    finally:
        podman("rm", "--force", "--ignore", name)


@contextlib.contextmanager
def serving(
    image: str, command: Sequence[str], port: int, health_path: str, *, env: Mapping[str, str] = {}, **options
) -> Iterator[Server]:
    """A server role in the foreground of ``podman run`` (testbed's server handling: its log on
    failure, SIGTERM on exit, which podman passes on), healthy on 127.0.0.1:``port``."""
    assert not listening_addresses(port), f"port {port} is taken: stop what listens there first"
    name = container_name("server")
    try:
        args = run_args(image, command, name=name, env=env, **options)
        with running_server(args, port, health_path, env=process_env(env), timeout=300) as server:
            yield server
    finally:
        podman("rm", "--force", "--ignore", name)
    assert not listening_addresses(port), f"port {port} still listening after {name} was removed"


@contextlib.contextmanager
def volume(role: str) -> Iterator[str]:
    name = container_name(role)
    podman("volume", "create", name)
    try:
        yield name
    finally:
        podman("volume", "rm", "--force", name)


def volume_path(name: str) -> str:
    """Where the volume's files are on this machine (root reads them directly)."""
    return podman("volume", "inspect", "--format", "{{.Mountpoint}}", name).strip()
