"""The active run's bookkeeping on a real (SQLite) tracking store: parameters `mlflow run` already
logged, and runs left RUNNING by killed processes (tested with a real dead process; a real
SIGKILLed batch job: tests/integration/test_batch_predict.py)."""

from __future__ import annotations

import os
import socket
import subprocess

import mlflow
import psutil
import pytest
from mlflow import MlflowClient

from model.tracking import (
    ERROR_TAG,
    OWNER_HOST_TAG,
    OWNER_PID_TAG,
    OWNER_STARTED_TAG,
    claim,
    end_runs_of_dead_owners,
    log_new_params,
)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    yield MlflowClient().create_experiment("tracking", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_tracking_uri(previous)


def test_parameters_already_logged_keep_the_value_they_were_logged_with(experiment):
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_param("n_neighbors", "5,15,50")  # as `mlflow run` logs it from its command line
        log_new_params({"n_neighbors": (5, 15, 50), "seed": 42})
        log_new_params({"seed": 42, "cv_folds": 0})
    assert MlflowClient().get_run(run.info.run_id).data.params == {
        "n_neighbors": "5,15,50",
        "seed": "42",
        "cv_folds": "0",
    }


def test_claim_names_this_process(experiment):
    with mlflow.start_run(experiment_id=experiment) as run:
        claim()
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert (tags[OWNER_HOST_TAG], tags[OWNER_PID_TAG]) == (socket.gethostname(), str(os.getpid()))
    assert float(tags[OWNER_STARTED_TAG]) == psutil.Process().create_time()


def owned_by(host: str, pid: int, started_at: float) -> dict[str, str]:
    return {OWNER_HOST_TAG: host, OWNER_PID_TAG: str(pid), OWNER_STARTED_TAG: repr(started_at)}


def test_only_running_runs_of_dead_processes_of_this_host_are_marked_killed(experiment):
    client = MlflowClient()
    here, me = socket.gethostname(), psutil.Process()
    gone = subprocess.Popen(["sleep", "60"])
    gone_started = psutil.Process(gone.pid).create_time()
    gone.kill()
    gone.wait()
    runs = {
        "dead": owned_by(here, gone.pid, gone_started),
        "pid reused": owned_by(here, me.pid, me.create_time() - 3600),  # this pid, another process's start
        "alive": owned_by(here, me.pid, me.create_time()),
        "other host": owned_by("elsewhere", gone.pid, gone_started),
        "unclaimed": {},
        "finished": owned_by(here, gone.pid, gone_started),
    }
    ids = {case: client.create_run(experiment, tags=tags).info.run_id for case, tags in runs.items()}
    client.set_terminated(ids["finished"], "FINISHED")

    with mlflow.start_run(experiment_id=experiment) as closer:
        ended = end_runs_of_dead_owners(experiment)

    assert sorted(ended) == sorted([ids["dead"], ids["pid reused"]])
    for case, run_id in ids.items():
        run = client.get_run(run_id)
        expected = {"dead": "KILLED", "pid reused": "KILLED", "finished": "FINISHED"}.get(case, "RUNNING")
        assert run.info.status == expected, case
        if expected == "KILLED":
            assert run.data.tags[ERROR_TAG].startswith(f"killed: its process ({here}, pid ")
            assert run.data.tags[ERROR_TAG].endswith(f"marked by run {closer.info.run_id}")
            assert run.info.end_time is not None
        else:
            assert ERROR_TAG not in run.data.tags, case
