"""Batch scoring for real: `mlflow run . -e batch_predict`, the CLI's one-line failure, a SIGKILL
mid-write (and the killed job's run ended by the next), intervals on request (`-P interval=0.8`), and the Spark engine (one Spark
session) agreeing with the local one and with the pyfunc in process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from model import batch
from model.batch import BatchError, BatchJob
from model.batch.output import partial_path
from model.batch.spark import hadoop_path, score_spark, spark_session
from model.data import FEATURE_COLUMNS, PROJECT_ROOT, TARGET
from model.intervals import LOWER_COLUMN, UPPER_COLUMN
from model.registry import CHAMPION, MODEL_NAME
from model.tracking import ERROR_TAG, OWNER_PID_TAG
from model.train import TrainingConfig, fit_model, log_and_register
from testbed.mlflow_cli import mlflow_run
from testbed.processes import process_env

pytestmark = pytest.mark.integration

EXPERIMENT = "batch"
INTERVAL_COLUMNS = [TARGET, LOWER_COLUMN, UPPER_COLUMN]
VERSION_URI = f"models:/{MODEL_NAME}/1"
RUN_ID = re.compile(r"Run \(ID '([0-9a-f]+)'\)")


@pytest.fixture(scope="module")
def store(tmp_path_factory, split):
    """A temp SQLite registry whose champion (version 1) is a small model; env for child processes."""
    root = tmp_path_factory.mktemp("batch-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    with pytest.MonkeyPatch.context() as patch:
        # In-process jobs log into this experiment (never into a global active experiment).
        patch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        experiment = MlflowClient().create_experiment(
            EXPERIMENT, artifact_location=(root / "artifacts").as_uri()
        )
        model = fit_model(split[0], TrainingConfig(n_estimators=200, cv_folds=0))
        with mlflow.start_run(experiment_id=experiment):
            assert CHAMPION in log_and_register(model, *split).aliases
        env = process_env({"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": EXPERIMENT})
        yield {"env": env, "model": model, "experiment": experiment}
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def rows(split) -> pd.DataFrame:
    """500 test rows with an integer id, one missing total_bedrooms."""
    frame = split[1].head(500)[list(FEATURE_COLUMNS)].reset_index(drop=True)
    frame.loc[7, "total_bedrooms"] = np.nan
    frame.insert(0, "block_id", np.arange(100_000, 100_500))
    return frame


@pytest.fixture(scope="module")
def expected(store, rows) -> np.ndarray:
    return store["model"].predict(None, rows[list(FEATURE_COLUMNS)])[TARGET].to_numpy()


@pytest.fixture(scope="module")
def expected_interval(store, rows) -> pd.DataFrame:
    """The registered version's pyfunc, in process, asked for an 80 % interval."""
    return mlflow.pyfunc.load_model(VERSION_URI).predict(
        rows[list(FEATURE_COLUMNS)], params={"interval": 0.8}
    )


def run_batch_predict(store, *parameters: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        mlflow_run(PROJECT_ROOT, "batch_predict", EXPERIMENT, *parameters),
        env=store["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "projects.batch_predict", *args]


def latest_run(store) -> mlflow.entities.Run:
    [run] = MlflowClient().search_runs(
        [store["experiment"]], order_by=["attributes.start_time DESC"], max_results=1
    )
    return run


def left_by_job(pid: int, final: str, suffix: str) -> Path:
    """What the job ``pid`` writing ``final`` names its partial (``.partial``) or the previous
    result it moved aside (``.old``)."""
    return Path(partial_path(final)[: -len(f"{os.getpid()}.partial")] + f"{pid}{suffix}")


def partials(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".partial"))


def test_mlflow_run_scores_a_csv_into_parquet_and_logs_the_run(store, rows, expected, tmp_path):
    rows.to_csv(tmp_path / "in.csv", index=False)
    completed = run_batch_predict(
        store,
        f"input={tmp_path / 'in.csv'}",
        f"output={tmp_path / 'out.parquet'}",
        "id_column=block_id",
        "chunk_size=128",
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    assert f"scored 500 of 500 rows with {VERSION_URI}" in completed.stdout

    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert list(scored.columns) == ["block_id", TARGET]
    assert scored["block_id"].tolist() == rows["block_id"].astype(str).tolist()  # a CSV's ids, as written
    np.testing.assert_allclose(scored[TARGET], expected, rtol=0, atol=1e-9)
    assert partials(tmp_path) == []

    run = MlflowClient().get_run(RUN_ID.search(completed.stderr).group(1))
    assert run.info.status == "FINISHED"
    params, metrics = run.data.params, run.data.metrics
    assert (
        params["model_uri"] == f"models:/{MODEL_NAME}@{CHAMPION}"
        and params["model_version_uri"] == VERSION_URI
    )
    assert (params["engine"], params["chunk_size"], params["on_error"]) == ("local", "128", "fail")
    assert (metrics["rows_read"], metrics["rows_scored"], metrics["rows_rejected"]) == (500, 500, 0)
    assert metrics["seconds"] > 0 and metrics["rows_per_second"] == pytest.approx(500 / metrics["seconds"])


def test_mlflow_run_with_an_interval_writes_its_bounds(store, rows, expected, expected_interval, tmp_path):
    rows.to_parquet(tmp_path / "in.parquet", index=False)
    completed = run_batch_predict(
        store,
        f"input={tmp_path / 'in.parquet'}",
        f"output={tmp_path / 'out.csv'}",
        "id_column=block_id",
        "chunk_size=128",
        "interval=0.8",
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    scored = pd.read_csv(tmp_path / "out.csv")
    assert list(scored.columns) == ["block_id", *INTERVAL_COLUMNS]
    assert scored["block_id"].tolist() == rows["block_id"].tolist()
    for column in INTERVAL_COLUMNS:
        np.testing.assert_allclose(scored[column], expected_interval[column], rtol=0, atol=1e-9)
    np.testing.assert_allclose(scored[TARGET], expected, rtol=0, atol=1e-9)  # the point is unchanged
    assert (scored[LOWER_COLUMN] <= scored[TARGET]).all() and (scored[TARGET] < scored[UPPER_COLUMN]).all()
    run = MlflowClient().get_run(RUN_ID.search(completed.stderr).group(1))
    assert run.info.status == "FINISHED" and run.data.params["interval"] == "0.8"


@pytest.mark.parametrize("value", ["1.5", "wide"])
def test_a_bad_interval_fails_with_one_line_before_anything_runs(store, rows, tmp_path, value):
    rows.to_csv(tmp_path / "in.csv", index=False)
    output = tmp_path / "out.parquet"
    runs_before = len(MlflowClient().search_runs([store["experiment"]]))
    completed = subprocess.run(
        cli("--input", str(tmp_path / "in.csv"), "--output", str(output), "--interval", value),
        env=store["env"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
    )
    shown = "1.5" if value == "1.5" else "'wide'"
    assert (completed.returncode, completed.stderr.strip().splitlines()) == (
        1,
        [
            f"batch_predict: interval must be a coverage level from 0.5 to 0.99 (e.g. 0.8), or '' for none, not {shown}"
        ],
    )
    assert not output.exists() and partials(tmp_path) == []
    assert len(MlflowClient().search_runs([store["experiment"]])) == runs_before  # refused before its run
    # The entry point under `mlflow run`: the same line, a failed command, no output.
    completed = run_batch_predict(
        store, f"input={tmp_path / 'in.csv'}", f"output={output}", f"interval={value}"
    )
    assert (
        completed.returncode != 0 and "batch_predict: interval must be a coverage level" in completed.stderr
    )
    assert not output.exists() and partials(tmp_path) == []
    assert MlflowClient().get_run(RUN_ID.search(completed.stderr).group(1)).info.status == "FAILED"


def test_a_bad_row_fails_the_cli_with_one_line_naming_row_column_and_rule(store, rows, tmp_path):
    broken = rows.copy()
    broken.loc[320, "households"] = -4242.0
    broken.to_parquet(tmp_path / "in.parquet", index=False)
    output = tmp_path / "out.csv"
    completed = subprocess.run(
        cli("--input", str(tmp_path / "in.parquet"), "--output", str(output), "--chunk-size", "100"),
        env=store["env"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
    )
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [
        f"batch_predict: input {tmp_path / 'in.parquet'}, row 321: column 'households': must be greater than 0 "
        "(use -P on_error=reject to set bad rows aside)"
    ]
    assert "4242" not in completed.stderr + completed.stdout
    assert not output.exists() and partials(tmp_path) == []
    run = latest_run(store)
    assert run.info.status == "FAILED" and "row 321" in run.data.tags["error"]


def test_reject_scores_the_good_rows_and_logs_the_rejected_count(store, rows, expected, tmp_path):
    broken = rows.copy()
    broken.loc[[3, 250, 499], "latitude"] = 55.0
    broken.to_csv(tmp_path / "in.csv", index=False)
    job = BatchJob(
        str(tmp_path / "in.csv"),
        str(tmp_path / "out.csv"),
        id_column="block_id",
        on_error="reject",
        chunk_size=100,
    )
    result = batch.run(job, progress=False)
    assert (result.rows_scored, result.rows_rejected) == (497, 3)
    rejected = pd.read_csv(tmp_path / "out.rejects.csv")
    assert rejected[["block_id", "row"]].values.tolist() == [[100_003, 4], [100_250, 251], [100_499, 500]]
    assert set(rejected["column"]) == {"latitude"}
    scored = pd.read_csv(tmp_path / "out.csv")
    kept = np.ones(len(rows), dtype=bool)
    kept[[3, 250, 499]] = False
    assert scored["block_id"].tolist() == rows["block_id"][kept].tolist()
    np.testing.assert_allclose(scored[TARGET], expected[kept], rtol=0, atol=1e-9)
    metrics = latest_run(store).data.metrics
    assert (metrics["rows_scored"], metrics["rows_rejected"]) == (497, 3)


def growing_partial(directory: Path, sizes: list[int]) -> bool:
    """Whether the one partial in ``directory`` exists and grew since the last look (sizes so far)."""
    found = partials(directory)
    sizes.append(found[0].stat().st_size if found else 0)
    return len(sizes) > 1 and sizes[-1] > sizes[-2] > 0


def run_owned_by(store, pid: int) -> mlflow.entities.Run:
    [run] = MlflowClient().search_runs([store["experiment"]], f"tags.`{OWNER_PID_TAG}` = '{pid}'")
    return run


def test_sigkill_during_the_write_leaves_no_output_and_a_rerun_succeeds(store, rows, tmp_path):
    """Two real jobs: one SIGKILLed once its partial file exists and grows (its output path must not
    exist, its run is left RUNNING), one SIGSTOPped as it writes (alive). The rerun of the killed
    job marks the killed job's run KILLED and leaves the stopped job's run alone; resumed, that
    job finishes its run."""
    big = rows.sample(60_000, replace=True, random_state=0).reset_index(drop=True)
    big["block_id"] = np.arange(len(big))
    big.to_parquet(tmp_path / "in.parquet", index=False)
    jobs = {}
    for name in ("killed", "stopped"):
        (tmp_path / name).mkdir()
        arguments = [
            "--input",
            str(tmp_path / "in.parquet"),
            "--output",
            str(tmp_path / name / "out.parquet"),
        ]
        jobs[name] = subprocess.Popen(
            cli(*arguments, "--id-column", "block_id", "--chunk-size", "500"),
            env=store["env"],
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    signals = {"killed": signal.SIGKILL, "stopped": signal.SIGSTOP}
    sizes = {name: [] for name in jobs}
    try:
        deadline = time.monotonic() + 180
        while signals and time.monotonic() < deadline:
            for name in list(signals):
                if jobs[name].poll() is None and growing_partial(tmp_path / name, sizes[name]):
                    os.killpg(jobs[name].pid, signals.pop(name))
            if any(jobs[name].poll() is not None for name in signals):
                break
            time.sleep(0.005)
        assert not signals, f"not signalled mid-write: {signals}"
        killed, stopped = jobs["killed"], jobs["stopped"]
        killed.wait(timeout=30)
        assert killed.returncode == -signal.SIGKILL, f"not killed mid-write: {killed.stderr.read()[-3000:]}"
        output = tmp_path / "killed" / "out.parquet"
        assert not output.exists()
        [corpse] = partials(tmp_path / "killed")  # the killed writer's partial, hidden beside the output
        assert corpse.name.startswith(".out.parquet.")
        orphan = run_owned_by(store, killed.pid)
        assert orphan.info.status == "RUNNING"  # nothing was left to end it

        result = batch.run(
            BatchJob(str(tmp_path / "in.parquet"), str(output), id_column="block_id"), progress=False
        )
        assert result.rows_scored == len(big)
        assert pd.read_parquet(output)["block_id"].tolist() == big["block_id"].tolist()
        assert partials(tmp_path / "killed") == []  # the dead process's partial went with the rerun
        ended = MlflowClient().get_run(orphan.info.run_id)
        assert ended.info.status == "KILLED" and ended.info.end_time is not None
        assert re.fullmatch(
            rf"killed: its process \(.+, pid {killed.pid}\) ended without ending the run; marked by run \w+",
            ended.data.tags[ERROR_TAG],
        ), ended.data.tags[ERROR_TAG]
        assert run_owned_by(store, stopped.pid).info.status == "RUNNING"  # alive, only stopped

        os.killpg(stopped.pid, signal.SIGCONT)
        assert stopped.wait(timeout=180) == 0, stopped.stderr.read()[-3000:]
        assert run_owned_by(store, stopped.pid).info.status == "FINISHED"
        assert len(pd.read_parquet(tmp_path / "stopped" / "out.parquet")) == len(big)
    finally:
        for job in jobs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)


@pytest.fixture(scope="module")
def local_spark():
    """One ``local[*]`` Spark session for the module's Spark tests (its Python workers: this venv)."""
    spark = spark_session(None)
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()


def test_hadoop_filesystem_through_the_py4j_gateway_agrees_with_the_os(local_spark, tmp_path):
    """``hadoop_path`` is the Spark engine's one private PySpark access (``spark._jvm``,
    ``spark._jsc``: PySpark has no public FileSystem API): on local paths, what its FileSystem
    lists, finds, renames and deletes is what the os sees."""
    (tmp_path / "a.csv").write_text("a\n")
    (tmp_path / "run[1]").mkdir()
    (tmp_path / "run[1]" / "part-0").write_text("b\n")
    directory, fs = hadoop_path(local_spark, str(tmp_path))
    listed = sorted(status.getPath().getName() for status in fs.listStatus(directory))
    assert listed == sorted(os.listdir(tmp_path))
    for name in ("a.csv", "run[1]", "absent"):
        path, _ = hadoop_path(local_spark, str(tmp_path / name))
        assert (fs.exists(path), fs.isDirectory(path)) == (
            (tmp_path / name).exists(),
            (tmp_path / name).is_dir(),
        )
    source, _ = hadoop_path(local_spark, str(tmp_path / "run[1]"))
    target, _ = hadoop_path(local_spark, str(tmp_path / "renamed"))
    assert fs.rename(source, target)
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "renamed"]
    assert (tmp_path / "renamed" / "part-0").read_text() == "b\n"
    assert fs.delete(target, True) and os.listdir(tmp_path) == ["a.csv"]


def test_spark_engine_gives_the_local_engine_predictions(
    store, rows, expected, expected_interval, tmp_path, local_spark
):
    """One Spark session (local[*]): CSV → Parquet through the tracked job, an interval, Parquet → CSV
    over an existing output, a bad row failing with its column and rule, and Spark's own refusals."""
    rows.to_csv(tmp_path / "in.csv", index=False)
    rows.to_parquet(tmp_path / "in.parquet", index=False)
    spark = local_spark
    job = BatchJob(
        str(tmp_path / "in.csv"), str(tmp_path / "spark.parquet"), id_column="block_id", engine="spark"
    )
    result = batch.run(job, spark=spark)
    assert result.rows_scored == 500
    run = latest_run(store)
    assert run.data.params["spark_master"].startswith("local") and run.data.metrics["rows_scored"] == 500
    scored = pd.read_parquet(tmp_path / "spark.parquet")  # Spark's directory of part files
    assert sorted(scored.columns) == sorted(["block_id", TARGET])
    merged = rows.assign(block_id=rows["block_id"].astype(str), local=expected).merge(scored, on="block_id")
    assert len(merged) == 500
    np.testing.assert_allclose(merged[TARGET], merged["local"], rtol=0, atol=1e-9)

    # An interval: spark_udf's params, the three columns of a struct result.
    job = BatchJob(
        str(tmp_path / "in.parquet"),
        str(tmp_path / "interval.parquet"),
        id_column="block_id",
        engine="spark",
        interval=0.8,
    )
    assert batch.run(job, spark=spark).rows_scored == 500
    scored = pd.read_parquet(tmp_path / "interval.parquet")
    assert sorted(scored.columns) == sorted(["block_id", *INTERVAL_COLUMNS])
    merged = (
        rows[["block_id"]].join(expected_interval).merge(scored, on="block_id", suffixes=("_in_process", ""))
    )
    assert len(merged) == 500
    for column in INTERVAL_COLUMNS:
        np.testing.assert_allclose(merged[column], merged[f"{column}_in_process"], rtol=0, atol=1e-9)

    # Over an older result, in a directory whose name a glob would misread, where a killed
    # job left its partial directory.
    out = tmp_path / "run[1]"
    out.mkdir()
    (out / "spark.csv").write_text("an older result\n")
    ended = subprocess.Popen(["true"])
    ended.wait()
    corpse = left_by_job(ended.pid, str(out / "spark.csv"), ".partial")
    corpse.mkdir()
    job = BatchJob(str(tmp_path / "in.parquet"), str(out / "spark.csv"), id_column="block_id", engine="spark")
    score_spark(job, VERSION_URI, spark)
    assert partials(out) == []
    scored = pd.concat(pd.read_csv(part) for part in sorted((out / "spark.csv").glob("part-*.csv")))
    merged = rows.assign(local=expected).merge(scored, on="block_id")
    assert len(merged) == 500
    np.testing.assert_allclose(merged[TARGET], merged["local"], rtol=0, atol=1e-9)

    broken = rows.copy()
    broken.loc[42, "median_income"] = -1.0
    broken.to_parquet(tmp_path / "broken.parquet", index=False)
    job = BatchJob(str(tmp_path / "broken.parquet"), str(tmp_path / "broken-out.parquet"), engine="spark")
    with pytest.raises(BatchError, match="column 'median_income': must not be negative"):
        score_spark(job, VERSION_URI, spark)
    assert not (tmp_path / "broken-out.parquet").exists() and partials(tmp_path) == []

    # A job killed between moving the previous result aside and renaming its own into
    # place: the next job puts the previous result back before it fails.
    aside = left_by_job(ended.pid, job.output, ".old")
    aside.mkdir()
    (aside / "part-0.csv").write_text("the previous result\n")
    with pytest.raises(BatchError, match="must not be negative"):
        score_spark(job, VERSION_URI, spark)
    assert (tmp_path / "broken-out.parquet" / "part-0.csv").read_text() == "the previous result\n"
    assert not aside.exists() and partials(tmp_path) == []

    # Spark's own refusals, told apart by their error conditions.
    broken = rows.astype({"households": str})
    broken.loc[42, "households"] = "4242x"
    broken.to_csv(tmp_path / "broken.csv", index=False)
    job = BatchJob(str(tmp_path / "broken.csv"), str(tmp_path / "text-out.parquet"), engine="spark")
    with pytest.raises(
        BatchError, match=r"a value does not parse as its column's type \(Spark FAILFAST\)$"
    ) as failure:
        score_spark(job, VERSION_URI, spark)
    assert "4242" not in str(failure.value) and not (tmp_path / "text-out.parquet").exists()
    job = BatchJob(str(tmp_path / "absent.parquet"), str(tmp_path / "absent-out.parquet"), engine="spark")
    with pytest.raises(BatchError, match=r"absent.parquet: no such file$"):
        score_spark(job, VERSION_URI, spark)
    assert partials(tmp_path) == []
