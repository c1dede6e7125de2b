"""MLproject declares every entry point's parameters once; the command lines, the package's
configuration objects and the docs' parameter tables must agree with it."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

from model.batch.job import BatchJob
from model.data import PROJECT_ROOT
from model.train import TrainingConfig
from model.tune import TuneSettings

MLPROJECT = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())
ENTRY_POINTS = MLPROJECT["entry_points"]
# Values for parameters MLproject gives no default (batch_predict's paths, monitor's window).
REQUIRED_VALUES = {"input": "in.csv", "output": "out.parquet", "window": "capture"}
# The docs' parameter table of each entry point that has one.
DOCS_TABLES = {
    "train": "docs/workflows/training.md",
    "batch_predict": "docs/workflows/inference-batch.md",
    "monitor": "docs/workflows/monitoring.md",
}


def parameters(entry_point: str) -> dict[str, dict]:
    return ENTRY_POINTS[entry_point].get("parameters", {})


def argv(entry_point: str, leave_out: str | None = None) -> tuple[str, list[str]]:
    """The entry point's module and its arguments, as `mlflow run` renders the command with every
    default (string values shell-quoted, as MLflow does), without the option of ``leave_out``."""
    values = {
        name: shlex.quote(str(spec.get("default", REQUIRED_VALUES.get(name))))
        for name, spec in parameters(entry_point).items()
    }
    words = shlex.split(ENTRY_POINTS[entry_point]["command"].format(**values))
    assert words[:2] == ["python", "-m"], words
    if leave_out is not None:
        option = words.index(f"--{leave_out.replace('_', '-')}")
        del words[option : option + 2]
    return words[2], words[3:]


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_the_command_passes_every_parameter_under_its_own_name(entry_point):
    command = ENTRY_POINTS[entry_point]["command"]
    for name in parameters(entry_point):
        assert f"--{name.replace('_', '-')} {{{name}}}" in command, name
    assert set(re.findall(r"{(\w+)}", command)) == set(parameters(entry_point))


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_argparse_defaults_are_the_mlproject_defaults(entry_point):
    """Leaving an option out gives what MLproject's default gives, unless the option is required."""
    module, full = argv(entry_point)
    parse_args = importlib.import_module(module).parse_args
    everything = parse_args(full)
    for name, spec in parameters(entry_point).items():
        if "default" not in spec:
            continue
        try:
            without = parse_args(argv(entry_point, leave_out=name)[1])
        except SystemExit:  # required on the command line: argparse has no default to disagree
            continue
        assert without == everything, f"{entry_point}: --{name} defaults differently from MLproject"


def test_training_config_defaults_are_the_mlproject_defaults():
    data_path, config = importlib.import_module("projects.train").parse_args(argv("train")[1])
    assert config == TrainingConfig()
    assert data_path == Path(parameters("train")["data_path"]["default"])
    assert set(parameters("train")) == {"data_path", *TrainingConfig.__dataclass_fields__}


def test_tune_settings_defaults_are_the_mlproject_defaults():
    data_path, settings = importlib.import_module("projects.tune").parse_args(argv("tune")[1])
    assert settings == TuneSettings()
    assert set(parameters("tune")) == {"data_path", *TuneSettings.__dataclass_fields__}


def test_batch_job_defaults_are_the_mlproject_defaults():
    job = importlib.import_module("projects.batch_predict").parse_args(argv("batch_predict")[1])
    assert job == BatchJob(REQUIRED_VALUES["input"], REQUIRED_VALUES["output"])
    assert set(parameters("batch_predict")) == set(BatchJob.__dataclass_fields__)


def docs_table(path: str) -> dict[str, str | None]:
    """Parameter → default as the docs' ``| parameter | default | meaning |`` table gives it
    (a row may name several parameters, with their defaults in the same order)."""
    lines = (PROJECT_ROOT / path).read_text().splitlines()
    start = lines.index("| parameter | default | meaning |") + 2
    table = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        names_cell, default_cell = (cell.strip() for cell in line.strip("|").split("|")[:2])
        names = re.findall(r"`(\w+)`", names_cell)
        defaults = [default_cell] if len(names) == 1 else [d.strip() for d in default_cell.split(",")]
        assert len(defaults) == len(names), line
        for name, default in zip(names, defaults):
            if default == "(required)":
                table[name] = None
            else:
                quoted = re.match(r"`([^`]*)`", default)
                value = quoted.group(1) if quoted else default
                table[name] = "" if value == '""' else value
    return table


@pytest.mark.parametrize("entry_point", sorted(DOCS_TABLES))
def test_the_docs_parameter_table_is_mlproject(entry_point):
    declared = {
        name: str(spec["default"]) if "default" in spec else None
        for name, spec in parameters(entry_point).items()
    }
    assert docs_table(DOCS_TABLES[entry_point]) == declared
