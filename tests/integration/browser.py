"""A real headless Chromium driven over the DevTools protocol (no WebDriver, no browser download).

* ``chromium_path()``: Debian's ``chromium`` binary, or None when it is not installed.
* ``headless_chromium(workdir)``: context manager starting it on a free DevTools port and yielding a
  ``Page`` (``navigate``, ``evaluate``, ``wait_for``, ``screenshot``); the browser's process group
  is always stopped on exit.
* ``mlflow_ui_in_chromium(store, workdir)``: ``mlflow ui`` on a store and that browser beside it
  (the test is skipped where no Chromium is installed), yielding the UI's base URL and the page.

The protocol is spoken with ``websocket-client`` (already in the lock); Chromium writes the port
it picked into ``DevToolsActivePort`` in its profile directory.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket

from model.data import PROJECT_ROOT
from testbed.mlflow_cli import mlflow_ui
from testbed.processes import free_port, running_server, stop_process_group

CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Where UI tests leave their screenshots, for a reader of a CI run.
SCREENSHOTS = PROJECT_ROOT / "build" / "ui-screenshots"


def chromium_path() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


class Page:
    """One browser tab: each call sends a DevTools command and waits for its answer."""

    def __init__(self, socket: websocket.WebSocket):
        self.socket = socket
        self.ids = itertools.count(1)

    def send(self, method: str, **params) -> dict:
        request_id = next(self.ids)
        self.socket.send(json.dumps({"id": request_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == request_id:  # events and other answers are not ours
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression evaluated in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}…: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, poll: float = 0.5):
        """Evaluate ``expression`` until it is truthy; its last value either way."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(poll)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the window as it is (no re-layout: a resize would re-render the page).
        Single-page apps scroll inside their own panes: give the browser a tall window."""
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@contextlib.contextmanager
def headless_chromium(
    workdir: Path, width: int = 1400, height: int = 1000, timeout: float = 60.0
) -> Iterator[Page]:
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH")
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a previous browser's port
    command = [
        binary,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    log = open(workdir / "chromium.log", "w")
    browser = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        port = _devtools_port(profile / "DevToolsActivePort", browser, timeout)
        [tab] = [
            target
            for target in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            if target["type"] == "page"
        ]
        socket = websocket.create_connection(tab["webSocketDebuggerUrl"], timeout=timeout)
        try:
            page = Page(socket)
            page.send("Page.enable")
            yield page
        finally:
            socket.close()
    finally:
        stop_process_group(browser)
        log.close()


def _devtools_port(active_port_file: Path, browser: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise RuntimeError(f"chromium exited with status {browser.returncode} before listening")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(active_port_file.read_text().splitlines()[0])
        time.sleep(0.2)
    raise TimeoutError(f"chromium wrote no {active_port_file.name} within {timeout:.0f}s")


@contextlib.contextmanager
def mlflow_ui_in_chromium(store: dict, workdir: Path, height: int) -> Iterator[tuple[str, Page]]:
    """``mlflow ui`` on ``store`` (its ``tracking_uri`` and ``env``) and a headless Chromium of
    ``height`` pixels; yields the UI's base URL and the page. Skips the test without Chromium."""
    if chromium_path() is None:
        pytest.skip(
            "no chromium: the browser could not be installed here (`apt-get install chromium`; .ci/run does)"
        )
    port = free_port()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with (
        running_server(
            mlflow_ui(store["tracking_uri"], port), port, "/health", env=store["env"], timeout=180
        ) as ui,
        headless_chromium(workdir, height=height) as page,
    ):
        yield ui.base_url, page
