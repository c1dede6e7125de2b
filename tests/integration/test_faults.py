"""Faults with real processes: a tracking server SIGKILLed mid-training, a corrupted or truncated raw
file, a server started while the registry is unreachable (docs/reliability.md#faults).

Batch scoring SIGKILLed during its write is tested beside `projects.batch_predict` itself
(tests/integration/test_batch_predict.py::test_sigkill_during_the_write_leaves_no_output_and_a_rerun_succeeds).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from model import registry
from model.data import PROJECT_ROOT
from model.registry import CHALLENGER, CHAMPION, MODEL_NAME
from model.train import TrainingConfig, fit_model, log_and_register
from testbed.mlflow_cli import mlflow_run, mlflow_server
from testbed.processes import free_port, process_env, running_server, stop_process_group
from tests.integration.servers import temporary_database

pytestmark = pytest.mark.integration

EXPERIMENT = "faults"
QUICK = ["n_estimators=50", "cv_folds=0"]
# The trainer's MLflow client gives up on a dead server (connection refused) in seconds; MLflow's
# default retries take ~4.5 min per call. The timeout stays MLflow's: a busy server is not a dead one.
TRAINER_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
HTTP_SETTINGS = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)
SERVE_BOUND_SECONDS = (
    60  # the registry part is ~3 s; the rest is importing mlflow/kserve on a busy 2-core box
)


@contextlib.contextmanager
def tracking_uri(uri: str):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield MlflowClient()
    finally:
        mlflow.set_tracking_uri(previous)


class Clock:
    """Wall time of a test's phases, printed with the result."""

    def __init__(self):
        self.start = self.last = time.monotonic()
        self.phases = []

    def __call__(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append(f"{phase} +{now - self.last:.0f}s")
        self.last = now

    def __str__(self) -> str:
        return f"{', '.join(self.phases)} (total {time.monotonic() - self.start:.0f}s)"


def mlflow_run_train(data_path: Path, *params: str) -> list[str]:
    return mlflow_run(PROJECT_ROOT, "train", EXPERIMENT, f"data_path={data_path}", *params)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# --------------------------------------------------------------- 1. the tracking server dies mid-run


@pytest.fixture
def database():
    with temporary_database("mlflow_faults") as uri:
        yield uri


def wait_for_model_being_logged(
    client: MlflowClient, experiment: str, proc: subprocess.Popen, timeout: float = 300
):
    """The RUNNING run of ``experiment`` and its model, once ``log_model`` has created the model in the store
    (then it saves and validates it locally and uploads the artifacts; registration comes after all that)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the trainer ended before it could be interrupted"
        for run in client.search_runs([experiment], "attributes.status = 'RUNNING'"):
            models = client.search_logged_models([experiment], f"source_run_id = '{run.info.run_id}'")
            if models:
                return run, models[0]
        time.sleep(0.25)
    raise TimeoutError("the trainer never started logging its model")


def test_training_when_the_tracking_server_is_killed_mid_run(database, tmp_path, raw_data_path, split):
    clock = Clock()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = mlflow_server(database, tmp_path / "artifacts", port)
    env = process_env({"MLFLOW_TRACKING_URI": base_url, **TRAINER_HTTP})
    train_frame, test_frame = split

    with ThreadPoolExecutor(1) as pool:
        # The champion is fitted while the server migrates its fresh database.
        fitting = pool.submit(fit_model, train_frame, TrainingConfig(n_estimators=50, cv_folds=0))
        with (
            running_server(server, port, "/health", timeout=240) as first_life,
            tracking_uri(base_url) as client,
        ):
            clock("server up")
            experiment = client.create_experiment(EXPERIMENT)
            with mlflow.start_run(experiment_id=experiment):
                assert log_and_register(fitting.result(), train_frame, test_frame).aliases == [CHAMPION]
            clock("champion registered")

            # The production path (`make train`): `mlflow run` creates the run, the entry point fits and logs.
            log = tmp_path / "victim.log"
            with open(log, "w") as out:
                victim = subprocess.Popen(
                    mlflow_run_train(raw_data_path, *QUICK),
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                run, logged_model = wait_for_model_being_logged(client, experiment, victim)
                os.killpg(first_life.proc.pid, signal.SIGKILL)  # the server and its workers, no goodbye
                killed_at = time.monotonic()
                clock("server killed")
                code = victim.wait(timeout=120)
                failed_after = time.monotonic() - killed_at
                clock("trainer exited")
            finally:
                stop_process_group(victim)
    output = log.read_text()
    assert code != 0, output[-3000:]
    assert failed_after < 60, f"{failed_after:.0f}s"
    assert any(line.startswith("error: API request to ") for line in output.splitlines()), output[-3000:]

    # Same database, same artifact root, same address.
    with running_server(server, port, "/health", timeout=240), tracking_uri(base_url) as client:
        clock("server restarted")
        assert registry.champion_version(client).version == "1"
        versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
        assert run.info.run_id not in {version.run_id for version in versions}
        for version in versions:  # no version points at missing artifacts
            local = Path(
                mlflow.artifacts.download_artifacts(
                    registry.version_uri(version), dst_path=str(tmp_path / version.version)
                )
            )
            assert (local / "MLmodel").exists() and (local / "python_model.pkl").exists(), version.version
        # Nobody was left to mark the interrupted run or finalize its model (docs/reliability.md#faults).
        assert client.get_run(run.info.run_id).info.status == "RUNNING"
        print(f"\ninterrupted model: {client.get_logged_model(logged_model.model_id).status}")

        rerun = subprocess.run(
            [
                sys.executable,
                "-m",
                "projects.train",
                "--data-path",
                str(raw_data_path),
                "--n-estimators",
                "50",
                "--cv-folds",
                "0",
            ],
            cwd=PROJECT_ROOT,
            env={**env, "MLFLOW_EXPERIMENT_ID": experiment},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert re.search(rf"registered {MODEL_NAME} version \d+ as {CHALLENGER}", rerun.stdout), rerun.stdout
        assert registry.champion_version(client).version == "1"
        clock("rerun registered")
    print(f"\nkilled mid-run: trainer exited {code} {failed_after:.1f}s after the kill; {clock}")


# --------------------------------------------------------------- 2. a corrupted or truncated raw file


def cut_mid_line(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[: data.index(b",", middle) + 3]  # a few characters into a field, never at a line end


def project_copy(root: Path) -> Path:
    """What `make train` needs, in ``root``: its data/raw/housing.csv is a copy's, never the repo's."""
    root.mkdir()
    for name in ("Makefile", "MLproject", "conda.yaml", "requirements.lock", ".dvcignore"):
        shutil.copy2(PROJECT_ROOT / name, root / name)  # copy2: the lock stays older than .venv/.installed
    for package in ("model", "projects"):
        shutil.copytree(PROJECT_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".dvc").mkdir()
    shutil.copy2(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    (root / "data" / "raw").mkdir(parents=True)
    shutil.copy2(PROJECT_ROOT / "data" / "raw" / "housing.csv.dvc", root / "data" / "raw")
    (root / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    return root


@pytest.fixture
def untouched_store(tmp_path):
    """A SQLite tracking URI whose file does not exist: a refusal must leave it so (no run, not even a store)."""
    database = tmp_path / "store" / "mlflow.db"
    database.parent.mkdir()
    yield f"sqlite:///{database}"
    assert sorted(database.parent.iterdir()) == [], "the tracking store was opened"


def test_make_train_refuses_a_bad_raw_file_before_any_run(tmp_path, raw_data_path, untouched_store):
    """`make train` = `make data` (md5 of the DVC pointer) then `mlflow run`: bad bytes stop it at `data`."""
    data = raw_data_path.read_bytes()
    # A download cut short, into an empty data/raw/.
    truncated_root = project_copy(tmp_path / "truncated")
    truncated_source = tmp_path / "truncated.csv"
    truncated_source.write_bytes(cut_mid_line(data))
    # One flipped bit in the file already in place, and no network or DVC remote to replace it from.
    corrupted_root = project_copy(tmp_path / "corrupted")
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0x01
    (corrupted_root / "data" / "raw" / "housing.csv").write_bytes(bytes(corrupted))
    cases = {
        truncated_root: (truncated_source, truncated_source),
        corrupted_root: (tmp_path / "offline.csv", corrupted_root / "data" / "raw" / "housing.csv"),
    }
    env = process_env({"MLFLOW_TRACKING_URI": untouched_store})
    # -o: never rebuild the venv from the copy (its .venv is the repository's own, symlinked).
    makes = {
        root: subprocess.Popen(
            [
                "make",
                "-C",
                str(root),
                "-o",
                str(root / ".venv" / ".installed"),
                "train",
                f"DATA_SOURCE={source}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for root, (source, _) in cases.items()
    }
    for root, make in makes.items():
        stdout, stderr = make.communicate(timeout=300)
        assert make.returncode != 0, stdout[-3000:]
        [line] = error_lines(stderr)
        assert str(cases[root][1]) in line and "does not match the pinned" in line, line
        assert "mlflow run" not in stdout  # make stopped at `data`
    assert sorted(path.name for path in (truncated_root / "data" / "raw").iterdir()) == ["housing.csv.dvc"]
    assert (corrupted_root / "data" / "raw" / "housing.csv").read_bytes() == bytes(corrupted)


def test_train_entry_point_refuses_a_bad_file_at_another_path_before_start_run(
    tmp_path, raw_data_path, untouched_store
):
    """Off the DVC-tracked path there is no md5 pin: the file's own contract is checked before start_run."""
    data = raw_data_path.read_bytes()
    header_end = data.index(b"\n") + 1
    first_row = data.index(b"\n", header_end) + 1
    faults = {
        "truncated": (cut_mid_line(data), "truncated"),
        # One digit of the first row's longitude replaced by a letter.
        "corrupted": (
            data[:header_end] + data[header_end:first_row].replace(b"122", b"1x2", 1) + data[first_row:],
            "'longitude' is not numeric",
        ),
    }
    env = process_env({"MLFLOW_TRACKING_URI": untouched_store})
    processes = {}
    for name, (content, _) in faults.items():
        path = tmp_path / f"{name}.csv"
        path.write_bytes(content)
        processes[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "projects.train",
                "--data-path",
                str(path),
                "--n-estimators",
                "10",
                "--cv-folds",
                "0",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for name, proc in processes.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1, stderr[-3000:]
        [line] = stderr.strip().splitlines()
        assert line.startswith(f"error: {tmp_path / name}.csv: ") and faults[name][1] in line, line


# --------------------------------------------------------------- 4. serving while the registry is unreachable


def make_serve(target: str, registry_uri: str, log: Path) -> tuple[subprocess.Popen, float]:
    env = process_env({"MLFLOW_TRACKING_URI": registry_uri})
    for key in HTTP_SETTINGS:  # the Makefile's own settings, not the caller's
        env.pop(key, None)
    port = "PORT" if target == "serve" else "V2_PORT"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            ["make", "-C", str(PROJECT_ROOT), target, f"{port}={free_port()}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    return proc, time.monotonic()


def wait_all(started: dict, timeout: float) -> dict:
    """Each process's exit code and seconds from its start to its exit (None if still running at ``timeout``)."""
    ended = {}
    deadline = time.monotonic() + timeout
    try:
        while len(ended) < len(started) and time.monotonic() < deadline:
            for case, (proc, t0) in started.items():
                if case not in ended and proc.poll() is not None:
                    ended[case] = (proc.returncode, time.monotonic() - t0)
            time.sleep(0.2)
    finally:
        for proc, _ in started.values():
            stop_process_group(proc)
    return {case: ended.get(case, (None, None)) for case in started}


def registry_failure(stderr: str) -> str:
    """The line that says why: the targets' pre-flight check (projects/preflight.py) resolves the
    model URI before the server starts."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0].startswith(f"error: model models:/{MODEL_NAME}@{CHAMPION}: "), lines[0]
    return lines[0]


def test_servers_started_while_the_registry_is_unreachable_fail_fast(tmp_path):
    """`make serve` and `make serve-v2` against a dead port and against a registry that never answers."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    with socket.socket() as silent_socket:
        silent_socket.bind(("127.0.0.1", 0))
        silent_socket.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
        silent = f"http://127.0.0.1:{silent_socket.getsockname()[1]}"
        # Refused: a few seconds of retries; silent: 3 tries x MLFLOW_HTTP_REQUEST_TIMEOUT=10 s. Plus imports.
        cases = {
            (target, uri): bound
            for target in ("serve", "serve-v2")
            for uri, bound in ((dead, SERVE_BOUND_SECONDS), (silent, SERVE_BOUND_SECONDS + 30))
        }
        logs = {case: tmp_path / f"{case[0]}-{i}.log" for i, case in enumerate(cases)}
        started = {case: make_serve(*case, logs[case]) for case in cases}
        finished = wait_all(started, max(cases.values()) + 60)
    report = []
    for (target, uri), (code, elapsed) in finished.items():
        stderr = logs[target, uri].read_text()
        assert code and elapsed < cases[target, uri], (target, uri, code, elapsed, stderr[-3000:])
        line = registry_failure(stderr)
        assert f"the model registry at {uri} is unreachable: " in line, line
        assert f"API request to {uri}/api/2.0/mlflow/registered-models/alias failed" in line, line
        assert ("Connection refused" if uri == dead else "Read timed out") in line, line
        report.append(
            f"make {target} ({'refused' if uri == dead else 'silent'}): exit {code} after {elapsed:.0f}s"
        )
    print("\n" + "; ".join(report))
