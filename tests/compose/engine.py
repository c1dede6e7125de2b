"""What the Docker engine itself records of a Compose project, for the stack test.

* :func:`events`: the project's container events (start, die with its exit code, health status),
  with the engine's own nanosecond times.
* :func:`declared_order`: what docker-compose.yml declares with ``depends_on`` and its conditions;
  :func:`order_violation`: the first service whose start came before what it waits for, one line.
* :func:`route_out`: a service's way out of its networks (a default route), one line.
* :func:`project_leftovers`: the project's containers, volumes and networks still in the engine.
* :func:`seeded_copy`: docker-compose.yml with one mistake, for the seeded-mistake tests.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from containers.stack import COMPOSE_FILE, Stack

PROJECT_LABEL = "com.docker.compose.project"
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


def events(project: str, since: float, until: float | None = None) -> list[Event]:
    """The project's container events between two times, in the engine's order."""
    lines = docker(
        "events", "--since", f"{since:.3f}", "--until", f"{until or time.time():.3f}",
        "--filter", "type=container", "--filter", f"label={PROJECT_LABEL}={project}",
        "--format", "{{json .}}",
    )  # fmt: skip
    found = []
    for line in lines.splitlines():
        event = json.loads(line)
        attributes = event["Actor"]["Attributes"]
        action = event["Action"]
        if action == "die":
            action = f"die {attributes.get('exitCode')}"
        found.append(Event(attributes["com.docker.compose.service"], action, event["timeNano"] / 1e9))
    return found


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


def route_out(stack: Stack, service: str) -> str | None:
    """One line when the service's container has a default route, i.e. a network with a way out."""
    table = stack.compose("exec", "-T", service, "cat", "/proc/net/route").stdout
    default = [line.split() for line in table.splitlines()[1:] if line.split()[1] == "00000000"]
    if default:
        gateway = ".".join(str(b) for b in reversed(bytes.fromhex(default[0][2])))
        return (
            f"{service} has a default route (via {gateway} on {default[0][0]}): its network is not internal"
        )
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
