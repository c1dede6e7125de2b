"""The stack test runs through `make compose-test` (the project image built first) against a Docker
Engine; its summary lists each phase's wall time, the engine's event timeline and the seeded
mistakes' one-line reasons."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest

from model.data import PROJECT_ROOT

SUMMARY: list[str] = []
# Each stack step's wall time: (name, seconds), in the order they ran.
PHASES: list[tuple[str, float]] = []
# `make compose-test COMPOSE_FIGURES=docs/figures/compose.json` saves PHASES there after a run
# that passed (docsgen renders docs/environments/docker.md's table from it).
FIGURES_ENV = "COMPOSE_FIGURES"
_load_at_start = os.getloadavg()[0]


@pytest.fixture(scope="session", autouse=True)
def docker_engine():
    try:
        completed = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.fail("no docker command: install Docker Engine (.ci/run installs Debian's docker.io)")
    if completed.returncode != 0:
        pytest.fail(f"no Docker engine answers: {completed.stderr.strip().splitlines()[-1:]}")


def pytest_terminal_summary(terminalreporter):
    for line in SUMMARY:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get(FIGURES_ENV)
    if not target or exitstatus != 0 or not PHASES:
        return
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=PROJECT_ROOT
    ).stdout.strip()
    saved = {
        "what": "make compose-test: each stack step's wall time, in the order the test ran them",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "revision": revision,
        "load_average": {"start": _load_at_start, "end": os.getloadavg()[0]},
        "figures": {name: {"value": seconds, "unit": "s"} for name, seconds in PHASES},
    }
    Path(target).write_text(json.dumps(saved, indent=2) + "\n")
