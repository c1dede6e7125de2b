"""What the Docker engine itself records of a Compose project, for the stack test.

* :func:`recorded_events`: the project's container events (start, die with its exit code, health
  status) while a block runs, with the engine's own nanosecond times.
* :func:`declared_order`: what docker-compose.yml declares with ``depends_on`` and its conditions;
  :func:`order_violation`: the first service whose start came before what it waits for, one line.
* :func:`way_out`: a service that can look up the outside world (its network is not internal), one line.
* :func:`project_leftovers`: the project's containers, volumes and networks still in the engine.
* :func:`seeded_copy`: docker-compose.yml with one mistake, for the seeded-mistake tests.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from containers.compose_project import COMPOSE_FILE, Stack

PROJECT_LABEL = "com.docker.compose.project"
# A name of the outside world (the package index the image build uses).
OUTSIDE_NAME = "pypi.org"
# What a dependency must have done before its dependant starts, per depends_on condition.
CONDITION_EVENTS = {
    "service_started": "start",
    "service_healthy": "health_status: healthy",
    "service_completed_successfully": "die 0",
}


def docker(*args: str, timeout: float = 120) -> str:
    completed = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, (
        f"docker {args[0]} exited {completed.returncode}: {completed.stderr[-2000:]}"
    )
    return completed.stdout


@dataclass(frozen=True)
class Event:
    service: str
    action: str  # "start", "die 0" (with the exit code), "health_status: healthy", ...
    time: float  # seconds since the epoch, as the engine stamped it


@contextlib.contextmanager
def recorded_events(project: str) -> Iterator[list[Event]]:
    """The project's container starts, exits and health changes while the block runs, streamed as
    the engine emits them (its buffer of past events is short: every health check adds three
    exec events), with the engine's own times; the list is filled when the block ends."""
    since = time.time()
    stream = subprocess.Popen(
        ["docker", "events", "--since", f"{since:.3f}", "--format", "{{json .}}",
         "--filter", "type=container", "--filter", f"label={PROJECT_LABEL}={project}",
         "--filter", "event=start", "--filter", "event=die", "--filter", "event=health_status"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(stream.stdout), daemon=True)
    reader.start()
    recorded: list[Event] = []
    try:
        yield recorded
    finally:
        time.sleep(1)  # the last events' way through the stream
        stream.terminate()
        reader.join(timeout=10)
        stream.wait(timeout=10)
        recorded.extend(parse_event(json.loads(line)) for line in lines if line.strip())


def parse_event(event: dict) -> Event:
    attributes = event["Actor"]["Attributes"]
    action = event["Action"]
    if action == "die":
        action = f"die {attributes.get('exitCode')}"
    return Event(attributes["com.docker.compose.service"], action, event["timeNano"] / 1e9)


def declared_order(config: dict) -> list[tuple[str, str, str]]:
    """(service, dependency, the dependency's event the service must wait for), as declared."""
    return [
        (service, dependency, CONDITION_EVENTS[spec.get("condition", "service_started")])
        for service, body in config["services"].items()
        for dependency, spec in (body.get("depends_on") or {}).items()
    ]


def first(events_: list[Event], service: str, action: str) -> float | None:
    return next((e.time for e in events_ if e.service == service and e.action == action), None)


def order_violation(declared: list[tuple[str, str, str]], events_: list[Event]) -> str | None:
    """The first declared dependency a service's first start did not wait for, as one line."""
    origin = min((e.time for e in events_), default=0.0)
    for service, dependency, awaited in declared:
        started = first(events_, service, "start")
        if started is None:
            continue
        done = first(events_, dependency, awaited)
        if done is None or done > started:
            when = "never" if done is None else f"at +{done - origin:.1f} s"
            return (
                f"{service} started at +{started - origin:.1f} s but {dependency}'s "
                f"'{awaited}' came {when}: the declared order was not kept"
            )
    return None


def timeline(events_: list[Event]) -> str:
    """Each service's start, health and exit, relative to the first event."""
    origin = min((e.time for e in events_), default=0.0)
    wanted = ("start", "health_status: healthy", "die 0")
    return ", ".join(
        f"{e.service} {e.action} +{e.time - origin:.1f} s" for e in events_ if e.action in wanted
    )


def way_out(stack: Stack, service: str, outside: str = OUTSIDE_NAME) -> str | None:
    """One line when the service's container resolves a name of the outside world. Docker's DNS
    answers only the project's own names to a container whose networks are all internal (its
    default route leads nowhere either way); only the machine's own resolver is asked, and no
    connection is opened."""
    completed = stack.compose("exec", "-T", service, "getent", "hosts", outside, check=False)
    if completed.returncode == 0:
        address = completed.stdout.split()[0]
        return f"{service} resolves {outside} ({address}): its network reaches outside, it is not internal"
    return None


def project_leftovers(project: str) -> dict[str, list[str]]:
    label = f"label={PROJECT_LABEL}={project}"
    return {
        "containers": docker("ps", "--all", "--quiet", "--filter", label).split(),
        "volumes": docker("volume", "ls", "--quiet", "--filter", label).split(),
        "networks": docker("network", "ls", "--quiet", "--filter", label).split(),
    }


def seeded_copy(directory: Path, old: str, new: str) -> Path:
    """docker-compose.yml with ``old`` (exactly once) replaced by ``new``."""
    text = COMPOSE_FILE.read_text()
    assert text.count(old) == 1, f"{old!r} is not in docker-compose.yml exactly once"
    copy = directory / "docker-compose.seeded.yml"
    copy.write_text(text.replace(old, new))
    return copy
