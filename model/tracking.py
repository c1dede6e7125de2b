"""The MLflow run an entry point works in: the parameters it already has, and the process that owns it.

* :func:`log_new_params`: ``mlflow run`` logs an entry point's parameters, as given on its
  command line, before the entry point starts; logging one again with another spelling
  (``5,15,50`` for ``(5, 15, 50)``) fails, so entry points log only what the run lacks.
* :func:`claim` and :func:`end_runs_of_dead_owners`: a run records the process that owns it
  (host, pid and that process's start time, since pids are reused). A process killed by
  SIGKILL or the OOM killer cannot end its run, which would stay ``RUNNING`` forever; the
  next job of the same experiment on the same host marks it ``KILLED``. A run whose owner
  is alive, or lives on another host (whose pids cannot be checked from here), is never
  touched.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import mlflow
import psutil
from mlflow import MlflowClient
from mlflow.entities import RunStatus

OWNER_HOST_TAG = "owner.host"
OWNER_PID_TAG = "owner.pid"
OWNER_STARTED_TAG = "owner.started_at"  # the process's start time, seconds since the epoch
ERROR_TAG = "error"


def log_new_params(params: Mapping[str, object]) -> None:
    """Log into the active run each of ``params`` it does not have yet."""
    run_id = mlflow.active_run().info.run_id
    logged = mlflow.get_run(run_id).data.params
    mlflow.log_params({key: value for key, value in params.items() if key not in logged})


def claim() -> None:
    """Record this process as the owner of the active run."""
    me = psutil.Process()
    mlflow.set_tags(
        {
            OWNER_HOST_TAG: socket.gethostname(),
            OWNER_PID_TAG: me.pid,
            OWNER_STARTED_TAG: repr(me.create_time()),
        }
    )


def owner_is_running(pid: int, started_at: float) -> bool:
    """Whether process ``pid`` of this host is alive and is the one that started at ``started_at``."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - started_at) < 1.0
    except psutil.NoSuchProcess:
        return False


def end_runs_of_dead_owners(experiment_id: str, client: MlflowClient | None = None) -> list[str]:
    """Mark ``KILLED`` each ``RUNNING`` run of ``experiment_id`` claimed by a process of this
    host that is gone; returns their ids. The active run (if any) names itself in their
    ``error`` tag."""
    client = client or MlflowClient()
    host = socket.gethostname()
    active = mlflow.active_run()
    closer = f"run {active.info.run_id}" if active else f"process {os.getpid()}"
    running = client.search_runs(
        [experiment_id], f"attributes.status = 'RUNNING' and tags.`{OWNER_HOST_TAG}` = '{host}'"
    )
    ended = []
    for run in running:
        tags = run.data.tags
        pid, started_at = int(tags[OWNER_PID_TAG]), float(tags[OWNER_STARTED_TAG])
        if owner_is_running(pid, started_at):
            continue
        message = f"killed: its process ({host}, pid {pid}) ended without ending the run; marked by {closer}"
        client.set_tag(run.info.run_id, ERROR_TAG, message)
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        ended.append(run.info.run_id)
    return ended
