"""The image test runs through `make image-test`, which builds the image and points Podman at the
project's configuration (containers/); its summary lists the image sizes and the seeded mistake."""

from __future__ import annotations

import os

import pytest

from tests.image.podman import SUMMARY


@pytest.fixture(scope="session", autouse=True)
def engine_configuration():
    missing = [name for name in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF") if name not in os.environ]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run the image test with `make image-test`")


def pytest_terminal_summary(terminalreporter):
    for line in SUMMARY:
        terminalreporter.write_line(line)
