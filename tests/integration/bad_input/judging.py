"""Judging one answer of the bad-input matrix against what its case requires.

A refused request gets the exact status (the CLI: a non-zero exit), a message naming the
column and the problem (the CLI: on the last line of stderr), no echo of the values sent and
no stack trace. An accepted case gets exactly the in-process predictions. A broken
requirement raises the :class:`~testbed.bad_input.expectations.Deviation` of its kind,
which a case's known deviation names in its strict xfail.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from model.data import TARGET
from testbed import mlflow_cli
from testbed.bad_input.bodies import FINGERPRINTS
from testbed.bad_input.expectations import (
    TRACE_SIGNS,
    Accepted,
    Deviation,
    Echo,
    Known,
    Outcome,
    ServerError,
    StackTrace,
    Vague,
)
from testbed.processes import process_env, stop_process_group

HTTP_TIMEOUT = 180
CLI_TIMEOUT = 600


def param(case_id: str, *values, known: Known | None = None):
    """A ``pytest.param``; a known deviation makes it a strict xfail raising exactly its kind."""
    xfail = [pytest.mark.xfail(strict=True, raises=known.kind, reason=known.reason)] if known else []
    return pytest.param(*values, id=case_id, marks=xfail)


def short(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _raise_first(deviations: list[tuple[type[Deviation], str]]) -> None:
    if deviations:
        raise deviations[0][0]("; ".join(detail for _, detail in deviations))


def assert_predictions(predictions, expected_values) -> None:
    assert predictions is not None and len(predictions) == len(expected_values)
    np.testing.assert_allclose(predictions, expected_values, rtol=1e-9, atol=1e-6)


# ------------------------------------------------------------------ HTTP


def post(url: str, body: bytes, content_type: str | None) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(url, data=body, headers=headers, timeout=HTTP_TIMEOUT)


def judge_http(
    outcome: Outcome, response: requests.Response, message: str, predictions, expected_values
) -> None:
    status = response.status_code
    if status >= 500:
        raise ServerError(f"HTTP {status}: {short(message)}")
    if outcome.accepted:
        assert status == 200, f"expected predictions, got HTTP {status}: {short(message)}"
        assert_predictions(predictions, expected_values)
        return
    if status == 200:
        raise Accepted(f"answered 200 with {len(predictions)} prediction(s) instead of refusing")
    assert status == outcome.status, f"expected HTTP {outcome.status}, got {status}: {short(message)}"
    deviations = []
    if missing := [m for m in outcome.mentions if m.lower() not in message.lower()]:
        deviations.append((Vague, f"message does not mention {missing}: {short(message)!r}"))
    if any(sign in response.text for sign in TRACE_SIGNS):
        deviations.append((StackTrace, "the error body carries a stack trace"))
    if echoed := [f for f in FINGERPRINTS if f in response.text]:
        deviations.append((Echo, f"the error body echoes payload values {echoed}"))
    _raise_first(deviations)


# `mlflow models serve` answers {"predictions": [...]} or {"message": ...}.
def serve_message(response: requests.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        body = response.json()
        return str(body.get("message", body))
    return response.text


def serve_predictions(response: requests.Response) -> list | None:
    if response.status_code != 200:
        return None
    return [row[TARGET] for row in response.json()["predictions"]]


# The V2 runtime answers {"outputs": [...]} or {"error": ...}.
def v2_message(response: requests.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
        return str(response.json()["error"])
    return response.text


def v2_predictions(response: requests.Response) -> list | None:
    if response.status_code != 200:
        return None
    (output,) = [o for o in response.json()["outputs"] if o["name"] == TARGET]
    return output["data"]


# ------------------------------------------------------------------ the CLI


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stderr: str
    predictions: list | None

    @property
    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def mlflow_models_predict(model: str, content: bytes, content_type: str, workdir: Path) -> CliResult:
    """``mlflow models predict`` on ``content`` as a ``-t content_type`` file, in its own process group."""
    input_path, output_path = workdir / f"input.{content_type}", workdir / "out.json"
    input_path.write_bytes(content)
    argv = mlflow_cli.mlflow_models_predict(model, input_path, output_path, content_type)
    with open(workdir / "stderr", "wb") as stderr:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=process_env(),
            cwd=workdir,
            start_new_session=True,
        )
    try:
        returncode = proc.wait(timeout=CLI_TIMEOUT)
    finally:
        stop_process_group(proc, grace=5)
        input_path.unlink()  # the 50 MB file
    predictions = None
    if returncode == 0 and output_path.exists():
        predictions = [row[TARGET] for row in json.loads(output_path.read_text())["predictions"]]
    return CliResult(returncode, (workdir / "stderr").read_text(errors="replace"), predictions)


def judge_cli(outcome: Outcome, result: CliResult, expected_values) -> None:
    if outcome.accepted:
        assert result.returncode == 0, f"exit {result.returncode}: {short(result.last_line)}"
        assert_predictions(result.predictions, expected_values)
        return
    if result.returncode == 0:
        raise Accepted(f"exit 0 with {len(result.predictions or [])} prediction(s) instead of refusing")
    deviations = []
    if missing := [m for m in outcome.mentions if m.lower() not in result.last_line.lower()]:
        deviations.append(
            (Vague, f"the last stderr line does not mention {missing}: {short(result.last_line)!r}")
        )
    if echoed := [f for f in FINGERPRINTS if f in result.stderr]:
        deviations.append((Echo, f"stderr echoes payload values {echoed}"))
    _raise_first(deviations)
