"""`batch_predict -P engine=spark` on a real Spark standalone cluster: a master and two workers of
one core each on 127.0.0.1 (``testbed.spark_cluster``), each worker with its own executor JVM
running the venv's Python; the model resolved by the driver alone, from a tracking server over
HTTP (`mlflow server` on PostgreSQL); a million rows per job, in files every executor reaches.

Every job's output is checked row by row against the local engine's: each id exactly once,
every prediction within 1e-9. One worker is SIGKILLed (with its executor and Python workers)
in the middle of a job, which must still complete; a job that loses every worker must fail
with one line and leave nothing at the output path. Run by ``make test-cluster``, not
``make test``: 1 M-row jobs on two shared cores take minutes each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from model.batch import BatchJob
from model.batch.local import score_local
from model.batch.spark import NO_EXECUTOR_TIMEOUT
from model.data import FEATURE_COLUMNS, PROJECT_ROOT, TARGET
from model.intervals import LOWER_COLUMN, UPPER_COLUMN
from model.registry import CHAMPION, MODEL_NAME
from model.train import TrainingConfig, fit_model, log_and_register
from testbed.mlflow_cli import mlflow_run, mlflow_server
from testbed.processes import free_port, running_server, stop_process_group
from testbed.spark_cluster import running_spark_cluster, spark_env
from tests.integration.servers import temporary_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

ROWS = 1_000_000
EXPERIMENT = "batch-cluster"
VERSION_URI = f"models:/{MODEL_NAME}/1"
INTERVAL_COLUMNS = (TARGET, LOWER_COLUMN, UPPER_COLUMN)
NO_EXECUTOR_SECONDS = 20
JOB_TIMEOUT = 1200


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_spark_cluster(tmp_path_factory.mktemp("spark-cluster"), workers=2, cores=1) as running:
        yield running
    assert running.processes() == [], "the cluster left processes running"


@pytest.fixture(scope="module")
def tracking(tmp_path_factory, split) -> str:
    """A tracking server over HTTP (PostgreSQL behind `mlflow server`) whose champion, version 1,
    is a small model (50 trees per booster: the test is about Spark, not the trees)."""
    artifacts = tmp_path_factory.mktemp("tracking-artifacts")
    port = free_port()
    with (
        temporary_database("spark_cluster") as database,
        running_server(mlflow_server(database, artifacts, port), port, "/health") as server,
    ):
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(server.base_url)
        try:
            model = fit_model(split[0], TrainingConfig(n_estimators=50, cv_folds=0))
            with mlflow.start_run(experiment_id=MlflowClient().create_experiment(EXPERIMENT)):
                assert CHAMPION in log_and_register(model, *split).aliases
            yield server.base_url
        finally:
            mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, split) -> dict[str, Path]:
    """1 M test rows drawn with replacement (some ``total_bedrooms`` missing), ids 0 … N-1, as CSV
    and as Parquet in 50 k-row groups. pandas writes each float's shortest round-trip text, so
    both files hold the same values."""
    test = split[1][list(FEATURE_COLUMNS)].reset_index(drop=True)
    frame = test.iloc[np.random.default_rng(0).integers(0, len(test), ROWS)].reset_index(drop=True)
    assert frame["total_bedrooms"].isna().any()
    frame.insert(0, "block_id", np.arange(ROWS))
    directory = tmp_path_factory.mktemp("inputs")
    frame.to_parquet(directory / "blocks.parquet", index=False, row_group_size=50_000)
    frame.to_csv(directory / "blocks.csv", index=False)
    return {"csv": directory / "blocks.csv", "parquet": directory / "blocks.parquet"}


@pytest.fixture(scope="module")
def local_engine(tracking, inputs, tmp_path_factory) -> dict[float | None, pd.DataFrame]:
    """The local engine's output on the same rows, without and with ``interval=0.8``, in id order."""
    directory = tmp_path_factory.mktemp("local-engine")
    scored = {}
    for interval in (None, 0.8):
        output = directory / f"interval-{interval}.parquet"
        job = BatchJob(str(inputs["parquet"]), str(output), id_column="block_id", interval=interval)
        assert score_local(job, VERSION_URI, progress=False).rows_scored == ROWS
        scored[interval] = pd.read_parquet(output)
        assert scored[interval]["block_id"].tolist() == list(range(ROWS))
    return scored


@pytest.fixture(scope="module")
def driver_env(tracking, tmp_path_factory) -> dict[str, str]:
    """The driver's environment: the tracking server (the driver's alone: the workers have no
    ``MLFLOW_TRACKING_URI``), and a ``SPARK_CONF_DIR`` whose spark-defaults.conf splits the input
    into tasks of at most 8 MB (tens per job, so a lost executor costs a few), gives up after
    20 s without an executor, and keeps each application's event log."""
    conf = tmp_path_factory.mktemp("spark-conf")
    events = tmp_path_factory.mktemp("spark-events")
    (conf / "spark-defaults.conf").write_text(
        "spark.sql.files.maxPartitionBytes 8m\n"
        f"{NO_EXECUTOR_TIMEOUT} {NO_EXECUTOR_SECONDS}\n"
        "spark.ui.showConsoleProgress false\n"
        "spark.eventLog.enabled true\n"
        f"spark.eventLog.dir {events.as_uri()}\n"
        # One plain JSON-lines file per application (Spark 4 defaults to rolled, compressed logs).
        "spark.eventLog.rolling.enabled false\n"
        "spark.eventLog.compress false\n"
    )
    return spark_env(
        {
            "MLFLOW_TRACKING_URI": tracking,
            "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
            "SPARK_CONF_DIR": str(conf),
            "SPARK_EVENTS": str(events),  # read back by the tests, not by Spark
        }
    )


def batch_predict(cluster, *parameters: str) -> list[str]:
    """The entry point's own command line (``mlflow run`` runs the same), on the cluster."""
    arguments = [
        f"--{name.replace('_', '-')}={value}" for name, value in (p.split("=", 1) for p in parameters)
    ]
    return [
        sys.executable,
        "-m",
        "projects.batch_predict",
        "--engine=spark",
        f"--spark-master={cluster.master_url}",
        "--model-uri",
        VERSION_URI,
        "--id-column=block_id",
        *arguments,
    ]


def read_output(path: Path) -> pd.DataFrame:
    """Spark's directory of part files, Parquet or CSV, as one frame."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.concat([pd.read_csv(part) for part in sorted(path.glob("part-*.csv"))], ignore_index=True)


def assert_same_as_local(output: Path, expected: pd.DataFrame, columns) -> None:
    """Row by row, by id: every id of the input exactly once, each column within 1e-9."""
    scored = read_output(output)
    assert sorted(scored.columns) == sorted(["block_id", *columns])
    ids = scored["block_id"].astype(np.int64).to_numpy()
    order = np.argsort(ids, kind="stable")
    assert len(ids) == ROWS and np.array_equal(ids[order], np.arange(ROWS)), "duplicate or missing ids"
    for column in columns:
        np.testing.assert_allclose(scored[column].to_numpy()[order], expected[column], rtol=0, atol=1e-9)


def committed_tasks(output: Path) -> list[Path]:
    """The write's tasks committed so far: Hadoop's committer moves each finished task's files to
    ``<partial directory>/_temporary/0/task_…`` (the partial is ``.<name>.<host>.<pid>.partial``)."""
    return list(output.parent.glob(f".{output.name}.*.partial/_temporary/0/task_*"))


def leftovers(output: Path) -> list[Path]:
    return list(output.parent.glob(f".{output.name}.*"))


def start_job(cluster, driver_env, log: Path, *parameters: str) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen(
            batch_predict(cluster, *parameters),
            env=driver_env,
            cwd=PROJECT_ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def wait_mid_write(job: subprocess.Popen, output: Path, log: Path, timeout: float = JOB_TIMEOUT) -> None:
    """Return once the write has committed its first task (the job is mid-way: tens of tasks)."""
    deadline = time.monotonic() + timeout
    while not committed_tasks(output):
        assert job.poll() is None, f"the job ended before any task committed:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, "no task committed in time"
        time.sleep(0.2)


def latest_run() -> mlflow.entities.Run:
    [run] = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(EXPERIMENT).experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return run


def events(driver_env) -> list[dict]:
    """The event log (the history server's JSON lines) of the latest application."""
    logs = sorted(Path(driver_env["SPARK_EVENTS"]).glob("app-*"), key=lambda path: path.stat().st_mtime)
    return [json.loads(line) for line in logs[-1].read_text().splitlines()]


@pytest.mark.parametrize(
    ("source", "target", "interval"),
    [("csv", "parquet", None), ("parquet", "csv", 0.8)],
    ids=["csv-to-parquet", "parquet-to-csv-with-interval"],
)
def test_mlflow_run_on_the_cluster_gives_the_local_engine_predictions(
    cluster, driver_env, inputs, local_engine, tmp_path, source, target, interval
):
    cluster.replace_lost_workers()
    output = tmp_path / f"scored.{target}"
    executors_before = set(cluster.executor_dirs())
    parameters = [
        f"input={inputs[source]}",
        f"output={output}",
        "engine=spark",
        f"spark_master={cluster.master_url}",
        f"model_uri=models:/{MODEL_NAME}@{CHAMPION}",
        "id_column=block_id",
    ]
    if interval is not None:
        parameters.append(f"interval={interval}")
    completed = subprocess.run(
        mlflow_run(PROJECT_ROOT, "batch_predict", EXPERIMENT, *parameters),
        env=driver_env,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    assert f"scored {ROWS:,} of {ROWS:,} rows with {VERSION_URI}" in completed.stdout

    columns = INTERVAL_COLUMNS if interval else (TARGET,)
    assert_same_as_local(output, local_engine[interval], columns)
    assert leftovers(output) == []
    # Both workers launched an executor for the job, and the run records the cluster's master.
    new_executors = set(cluster.executor_dirs()) - executors_before
    assert {path.parents[1].name for path in new_executors} == {w.name for w in cluster.alive_workers()}
    run = latest_run()
    assert run.info.status == "FINISHED"
    assert (run.data.params["spark_master"], run.data.params["model_version_uri"]) == (
        cluster.master_url,
        VERSION_URI,
    )


def test_a_worker_lost_mid_job_is_rescheduled_and_the_output_is_complete(
    cluster, driver_env, inputs, local_engine, tmp_path
):
    """SIGKILL one worker, its executor and its Python workers once the write has committed a
    task: the job completes on the other worker, every row scored once, as the local engine does."""
    cluster.replace_lost_workers()
    output, log = tmp_path / "scored.parquet", tmp_path / "job.log"
    job = start_job(cluster, driver_env, log, f"input={inputs['csv']}", f"output={output}", "interval=0.8")
    try:
        wait_mid_write(job, output, log)
        victim = cluster.alive_workers()[0]
        assert len(victim.processes()) >= 3  # the worker, its executor, the executor's Python daemon
        victim.kill()
        assert victim.processes() == []
        assert job.wait(timeout=JOB_TIMEOUT) == 0, log.read_text()[-5000:]
    finally:
        stop_process_group(job)  # the driver's JVM with it, whatever happened
    assert f"scored {ROWS:,} of {ROWS:,} rows" in log.read_text()
    assert_same_as_local(output, local_engine[0.8], INTERVAL_COLUMNS)
    assert leftovers(output) == []
    assert cluster.status()["aliveworkers"] == 1
    # Spark's own record: tasks failed with the lost executor and every task ended in success
    # on the surviving one.
    ends = [event for event in events(driver_env) if event["Event"] == "SparkListenerTaskEnd"]
    lost = [end for end in ends if end["Task End Reason"]["Reason"] == "ExecutorLostFailure"]
    assert lost, "no task was running on the lost executor"
    lost_executor = {end["Task Info"]["Executor ID"] for end in lost}
    rescheduled = [
        end
        for end in ends
        if end["Task End Reason"]["Reason"] == "Success"
        and end["Task Info"]["Index"] in {lost_end["Task Info"]["Index"] for lost_end in lost}
        and end["Stage ID"] in {lost_end["Stage ID"] for lost_end in lost}
    ]
    assert rescheduled and {end["Task Info"]["Executor ID"] for end in rescheduled}.isdisjoint(lost_executor)


def test_a_job_that_loses_every_worker_fails_with_one_line_and_writes_nothing(
    cluster, driver_env, inputs, tmp_path
):
    cluster.replace_lost_workers()
    output, log = tmp_path / "scored.parquet", tmp_path / "job.log"
    job = start_job(cluster, driver_env, log, f"input={inputs['parquet']}", f"output={output}")
    try:
        wait_mid_write(job, output, log)
        for worker in cluster.alive_workers():
            worker.kill()
        assert job.wait(timeout=NO_EXECUTOR_SECONDS + 120) == 1
    finally:
        stop_process_group(job)  # the driver's JVM with it, whatever happened
    text = log.read_text()
    lines = text.strip().splitlines()
    assert lines[-1] == (
        f"batch_predict: spark {cluster.master_url}: no executor for {NO_EXECUTOR_SECONDS} s "
        f"(every worker lost?), job cancelled; {NO_EXECUTOR_TIMEOUT} sets the wait"
    )
    assert [line for line in lines if line.startswith("batch_predict:")] == lines[-1:]
    assert "Traceback" not in text
    assert not output.exists() and leftovers(output) == []
    run = latest_run()
    assert run.info.status == "FAILED" and run.data.tags["error"] == lines[-1].removeprefix("batch_predict: ")
