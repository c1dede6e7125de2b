"""The stack test runs through `make compose-test` (the project image built first) against a Docker
Engine; its summary lists each phase's wall time, the engine's event timeline and the seeded
mistakes' one-line reasons."""

from __future__ import annotations

import subprocess

import pytest

SUMMARY: list[str] = []


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
