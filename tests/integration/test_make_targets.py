"""The local path a newcomer takes, through the real make targets and README's own commands.

One temp SQLite store for the module: `make train` on a (pseudo-)terminal shows a bar per stage
and ends with the summary; a second `make train` in a log prints lines and, on unchanged data,
registers a challenger that `make promote` refuses (exit status 2 through make). The mistakes
`make serve`, `make serve-v2`, `make predict` and `make ui` refuse end in one line before any
model loads; `make ui` serves the store; README's serving and batch commands answer what the
champion predicts in process.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from model.data import FEATURE_COLUMNS, PROJECT_ROOT, TARGET
from model.intervals import LOWER_COLUMN, UPPER_COLUMN
from model.registry import CHALLENGER, CHAMPION, MODEL_NAME
from model.train import training_stages
from testbed.mlflow_cli import mlflow_models_predict
from testbed.processes import (
    LOOPBACK,
    free_port,
    listening_addresses,
    process_env,
    running_server,
    stop_process_group,
)
from testbed.terminal import PseudoTerminal

pytestmark = pytest.mark.integration

README = (PROJECT_ROOT / "README.md").read_text()
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION}"
# The Makefile's experiments (EXPERIMENT, BATCH_EXPERIMENT), made beforehand with their artifacts
# in the temp store rather than in the checkout's mlruns/.
EXPERIMENTS = ("california-housing", "california-housing-batch")
# Small enough to train in seconds, with the cross-validation stage still there.
QUICK = "MLFLOW_PARAMS=-P n_estimators=30 -P cv_folds=2"
CV_FOLDS = 2


def make(target: str, *assignments: str) -> list[str]:
    """``make target`` in the checkout; ``-o``: never rebuild the venv from a test."""
    venv_installed = PROJECT_ROOT / ".venv" / ".installed"
    return [
        "make",
        "--no-print-directory",
        "-C",
        str(PROJECT_ROOT),
        "-o",
        str(venv_installed),
        target,
        *assignments,
    ]


def run(command: list[str] | str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        env=env,
        cwd=PROJECT_ROOT,
        shell=isinstance(command, str),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_error(target: str) -> re.Pattern:
    """make's own line after a failed recipe."""
    return re.compile(rf"make: \*\*\* \[Makefile:\d+: {re.escape(target)}\] Error 1")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("make-targets")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    for name in EXPERIMENTS:
        MlflowClient().create_experiment(name, artifact_location=(root / name).as_uri())
    env = process_env({"MLFLOW_TRACKING_URI": uri})
    # make as a newcomer types it, not as a sub-make of `make test` (which would say `make[1]:`).
    for variable in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):
        env.pop(variable, None)
    yield {"uri": uri, "env": env, "root": root}
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def first_training(store) -> str:
    """`make train` as a newcomer runs it, on a terminal: everything the terminal showed."""
    terminal = PseudoTerminal(columns=150)
    process = subprocess.Popen(
        make("train", QUICK),
        stdin=terminal.fd,
        stdout=terminal.fd,
        stderr=terminal.fd,
        env=store["env"],
        start_new_session=True,
    )
    try:
        assert process.wait(timeout=1800) == 0, terminal.output[-5000:]
    finally:
        stop_process_group(process)
        output = terminal.close()
    return output.replace("\r\n", "\n")


def summary_lines(output: str, version: str, alias: str) -> list[str]:
    """The summary's lines, from its first to MLflow's closing line of the run."""
    lines = output.splitlines()
    start = lines.index(f"registered {MODEL_NAME} version {version} as {alias}")
    return lines[start:]


def logged(version: str) -> mlflow.entities.Run:
    return MlflowClient().get_run(MlflowClient().get_model_version(MODEL_NAME, version).run_id)


def expected_summary(store: dict, version: str, alias: str) -> list[str]:
    """The summary's figures as the registry holds them (a challenger's beside the champion's)."""
    run = logged(version)
    metrics = run.data.metrics
    champion = (
        ""
        if alias == CHAMPION
        else f"; the champion, version 1: {logged('1').data.metrics['test_rmse']:,.0f} USD"
    )
    return [
        f"registered {MODEL_NAME} version {version} as {alias}",
        f"  model URI   models:/{MODEL_NAME}@{alias} (this version: models:/{MODEL_NAME}/{version})",
        f"  test RMSE   {metrics['test_rmse']:,.0f} USD (95 % bootstrap interval"
        f" {metrics['test_rmse_ci95_low']:,.0f} USD to {metrics['test_rmse_ci95_high']:,.0f} USD){champion}",
        f"  intervals   the 80 % interval covers {metrics['test_interval_coverage_80'] * 100:.1f} % of test"
        " values (promotion needs 78 % to 82 %)",
        f"  store       {store['uri']}; run {run.info.run_id}, artifacts {run.info.artifact_uri}",
    ]


def test_make_train_on_a_terminal_shows_a_bar_per_stage_and_ends_with_the_summary(store, first_training):
    frames = re.split(r"[\r\n]+", first_training)
    stages = [stage for stage in training_stages(CV_FOLDS) if stage.steps]
    for number, stage in enumerate(stages, start=1):
        done = re.compile(
            rf"train \[{number}/{len(stages)}\] {re.escape(stage.name)}: 100%\|█+\| {stage.steps}/{stage.steps}"
            rf" \[\d\d:\d\d<00:00, +[\d.]+(s/{stage.unit}|{stage.unit}/s)\]"
        )
        assert any(done.match(frame) for frame in frames), (stage, first_training[-5000:])
    summary = summary_lines(first_training, "1", CHAMPION)
    assert summary[:5] == expected_summary(store, "1", CHAMPION)
    assert (
        summary[5]
        == "next: make serve (MLflow's scoring server), make serve-v2 (KServe V2), make ui (the run in the UI)"
    )
    # Only MLflow's own line about the run comes after it.
    assert len(summary) == 7 and re.fullmatch(r".*=== Run \(ID '[0-9a-f]+'\) succeeded ===", summary[6])


def test_a_second_make_train_in_a_log_prints_lines_and_registers_a_challenger_that_promote_refuses(
    store, first_training
):
    completed = run(make("train", QUICK), store["env"])
    assert completed.returncode == 0, completed.stderr[-5000:]
    assert "\r" not in completed.stderr
    stages = [stage for stage in training_stages(CV_FOLDS) if stage.steps]
    for number, stage in enumerate(stages, start=1):
        done = rf"^train \[{number}/{len(stages)}\] {re.escape(stage.name)}: {stage.steps}/{stage.steps} {stage.unit}s"
        assert re.search(done + r" done, \d\d:\d\d elapsed, 00:00 left \(", completed.stderr, re.M), stage
    # Unchanged data, parameters and seed: the same model, with the same test RMSE.
    summary = summary_lines(completed.stdout, "2", CHALLENGER)
    assert summary[:5] == expected_summary(store, "2", CHALLENGER)
    assert summary[5] == (
        "next: none: make promote (= mlflow run . -e promote) will refuse it, as its test RMSE equals the"
        " champion's (promotion needs a strictly lower one); the same data, parameters and seed reproduce the same model"
    )

    promoted = run(make("promote"), store["env"])
    assert promoted.returncode == 2, promoted.stderr[-5000:]  # the entry point exits 1; make, 2
    [refusal] = [line for line in promoted.stderr.splitlines() if line.startswith("refused:")]
    assert refusal.startswith("refused: rmse gate: challenger "), refusal
    assert make_error("promote").search(promoted.stderr)
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHALLENGER).version) == "2"


# ---------------------------------------------------------------------------------------------
# Mistakes end in one line, before any model loads
# ---------------------------------------------------------------------------------------------


@contextmanager
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        yield listener.getsockname()[1]


# A real pyfunc whose loading leaves a mark: a refused command must never have loaded it.
LOAD_PROBE_CODE = """
import os
from pathlib import Path

import mlflow


class LoadProbe(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        if os.environ.get("LOAD_PROBE_MARKER"):
            Path(os.environ["LOAD_PROBE_MARKER"]).touch()

    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(LoadProbe())
"""


@pytest.fixture(scope="module")
def load_probe(store, first_training) -> str:
    """``models:/LoadProbe@champion``: loading it touches the file ``$LOAD_PROBE_MARKER`` names."""
    code = store["root"] / "load_probe.py"
    code.write_text(LOAD_PROBE_CODE)
    experiment = MlflowClient().get_experiment_by_name(EXPERIMENTS[0]).experiment_id
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(
            name="probe", python_model=str(code), pip_requirements=[], registered_model_name="LoadProbe"
        )
    MlflowClient().set_registered_model_alias("LoadProbe", CHAMPION, "1")
    return f"models:/LoadProbe@{CHAMPION}"


def refused(store: dict, tmp_path: Path, target: str, *assignments: str) -> str:
    """Run a make target that must refuse: its one line (then make's own). A model it loaded
    would have left ``tmp_path/loaded``; none did."""
    marker = tmp_path / "loaded"
    completed = run(
        make(target, *assignments), {**store["env"], "LOAD_PROBE_MARKER": str(marker)}, timeout=300
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    line, make_line = completed.stderr.splitlines()
    assert make_error(target).fullmatch(make_line), completed.stderr
    assert not marker.exists(), "the model was loaded"
    return line


@pytest.mark.parametrize(
    "target, uri, problem",
    [
        (
            "serve",
            f"models:/CaliforniaHousingRegresor@{CHAMPION}",
            "Registered Model with name=CaliforniaHousingRegresor not found",
        ),
        ("serve", f"models:/{MODEL_NAME}@champoin", "Registered model alias champoin not found"),
        ("serve-v2", f"models:/{MODEL_NAME}/99", f"Model Version (name={MODEL_NAME}, version=99) not found"),
    ],
)
def test_a_misspelt_model_is_refused_in_one_line_naming_what_the_registry_holds(
    store, first_training, tmp_path, target, uri, problem
):
    port = free_port()
    line = refused(store, tmp_path, target, f"MODEL_URI={uri}", f"PORT={port}", f"V2_PORT={port}")
    assert line.startswith(f"error: model {uri}: {problem}; {store['uri']} holds {MODEL_NAME} ("), line
    assert f"@{CHAMPION} = version 1" in line
    assert listening_addresses(port) == []


@pytest.mark.parametrize("target, variable", [("serve", "PORT"), ("serve-v2", "V2_PORT"), ("ui", "UI_PORT")])
def test_a_busy_port_is_refused_in_one_line_before_the_model_loads(
    store, load_probe, tmp_path, target, variable
):
    with busy_port() as port:
        line = refused(store, tmp_path, target, f"MODEL_URI={load_probe}", f"{variable}={port}")
    assert line == (
        f"error: port {port} on {LOOPBACK} is already in use: stop what listens there,"
        f" or choose another port, e.g. {variable}={port + 1}"
    )


def test_a_missing_input_file_is_refused_in_one_line_before_the_model_loads(store, load_probe, tmp_path):
    missing, output = tmp_path / "blocks.csv", tmp_path / "predictions.json"
    line = refused(
        store, tmp_path, "predict", f"MODEL_URI={load_probe}", f"INPUT={missing}", f"OUTPUT={output}"
    )
    assert line == f"error: input file {missing} does not exist"
    assert not output.exists()
    # What the check spares: MLflow's own CLI loads the model, and only then fails on the input.
    marker = tmp_path / "loaded-by-mlflow"
    unchecked = run(
        mlflow_models_predict(load_probe, missing, output, "csv"),
        {**store["env"], "LOAD_PROBE_MARKER": str(marker)},
    )
    assert unchecked.returncode != 0 and "No such file or directory" in unchecked.stderr
    assert marker.exists()


# ---------------------------------------------------------------------------------------------
# make ui, and README's commands
# ---------------------------------------------------------------------------------------------


def test_make_ui_shows_the_project_store_on_loopback(store, first_training):
    port = free_port()
    with running_server(make("ui", f"UI_PORT={port}"), port, "/health", env=store["env"]) as ui:
        answer = requests.get(
            f"{ui.base_url}/api/2.0/mlflow/registered-models/get", params={"name": MODEL_NAME}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        aliases = {alias["alias"]: alias["version"] for alias in answer.json()["registered_model"]["aliases"]}
        assert aliases[CHAMPION] == "1"
        assert listening_addresses(port) == [LOOPBACK]
    assert readme_block("See the run in the MLflow UI").startswith("make ui ")


def readme_block(heading: str) -> str:
    """The bash blocks of README's section ``## heading``, one after the other."""
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return "".join(block.split("```", 1)[0] for block in section.split("```bash\n")[1:])


@pytest.fixture(scope="module")
def champion_predicts(store, first_training):
    model = mlflow.pyfunc.load_model(CHAMPION_URI)
    return lambda frame, **params: model.predict(frame[list(FEATURE_COLUMNS)], params=params or None)


README_ROW = pd.DataFrame(
    [[-122.23, 37.88, 41.0, 880.0, 129.0, 322.0, 126.0, 8.3252, "NEAR BAY"]], columns=list(FEATURE_COLUMNS)
)


def curl_answers(block: str, port: int, readme_port: int, env: dict) -> list[dict]:
    """The JSON answers of the block's curl commands (its `make` lines left out), run against ``port``."""
    commands = "\n".join(line for line in block.splitlines() if not line.startswith("make "))
    completed = run(["bash", "-c", commands.replace(f"127.0.0.1:{readme_port}/", f"127.0.0.1:{port}/")], env)
    assert completed.returncode == 0, completed.stderr
    decoder, text, answers = json.JSONDecoder(), completed.stdout.strip(), []
    while text:
        answer, end = decoder.raw_decode(text)
        answers.append(answer)
        text = text[end:].strip()
    return answers


def test_readme_serve_requests_answer_what_the_champion_predicts(store, champion_predicts):
    block = readme_block("Serve the champion (MLflow's own scoring server)")
    assert block.startswith("make serve ")
    # README's dataframe_records request leaves total_bedrooms null (imputed); the others send 129.
    imputed = README_ROW.assign(total_bedrooms=np.nan)
    expected = [
        champion_predicts(rows)[TARGET].to_numpy() for rows in (README_ROW, imputed, README_ROW, README_ROW)
    ]
    port = free_port()
    with running_server(make("serve", f"PORT={port}"), port, "/ping", env=store["env"]):
        answers = curl_answers(block, port, 5001, store["env"])
    assert len(answers) == 4  # dataframe_split, dataframe_records, inputs, CSV
    for answer, values in zip(answers, expected):
        np.testing.assert_allclose([row[TARGET] for row in answer["predictions"]], values, rtol=0, atol=1e-9)


def test_readme_v2_request_answers_what_the_champion_predicts_with_its_interval(store, champion_predicts):
    block = readme_block("Serve it over KServe V2 (Open Inference Protocol)")
    assert block.startswith("make serve-v2 ") and "127.0.0.1:8080, model name california-housing" in block
    expected = champion_predicts(README_ROW, interval=0.8)
    port = free_port()
    with running_server(make("serve-v2", f"V2_PORT={port}"), port, "/v2/health/ready", env=store["env"]):
        [answer] = curl_answers(block, port, 8080, store["env"])
    assert answer["model_name"] == "california-housing"
    outputs = {output["name"]: output["data"] for output in answer["outputs"]}
    for column in (TARGET, LOWER_COLUMN, UPPER_COLUMN):
        np.testing.assert_allclose(outputs[column], expected[column], rtol=0, atol=1e-9)


def test_readme_batch_commands_score_the_file_they_make(store, champion_predicts, tmp_path):
    block = readme_block("Batch scoring")
    names = {"blocks.csv": tmp_path / "blocks.csv", "predictions.json": tmp_path / "predictions.json"}
    names["scored.parquet"] = tmp_path / "scored.parquet"
    commands = [line.split("  #", 1)[0].strip() for line in block.splitlines() if not line.startswith("#")]
    assert commands == [
        "head -n 1001 data/raw/housing.csv > blocks.csv",
        "make predict INPUT=blocks.csv OUTPUT=predictions.json",
        "make batch-predict INPUT=blocks.csv OUTPUT=scored.parquet",
    ]
    for command in commands:
        for name, path in names.items():
            command = command.replace(name, str(path))
        if command.startswith("make "):
            target, *assignments = command.split()[1:]
            command = make(target, *assignments)
        completed = run(command, store["env"])
        assert completed.returncode == 0, completed.stderr[-3000:]
    blocks = pd.read_csv(names["blocks.csv"])
    assert len(blocks) == 1000
    expected = champion_predicts(blocks)[TARGET].to_numpy()
    predicted = [row[TARGET] for row in json.loads(names["predictions.json"].read_text())["predictions"]]
    np.testing.assert_allclose(predicted, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pd.read_parquet(names["scored.parquet"])[TARGET], expected, rtol=0, atol=1e-9)
