"""Each entry point's parameters are declared once, by the dataclass its ``main`` takes
(``projects/cli.py``): MLproject's entry, its command line and the docs' parameter tables must
agree with that declaration."""

from __future__ import annotations

import importlib
import re
import shlex

import pytest
import yaml

from model.data import PROJECT_ROOT
from projects import cli

ENTRY_POINTS = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())["entry_points"]
# The docs' parameter table of each entry point that has one.
DOCS_TABLES = {
    "train": "docs/workflows/training.md",
    "batch_predict": "docs/workflows/inference-batch.md",
    "monitor": "docs/workflows/monitoring.md",
}


def main_of(entry_point: str):
    """The ``main`` of the module MLproject's command runs."""
    words = shlex.split(ENTRY_POINTS[entry_point]["command"])
    assert words[:2] == ["python", "-m"], words
    return importlib.import_module(words[2]).main


def leaves(entry_point: str) -> dict[str, cli.Parameter]:
    return {leaf.name: leaf for leaf in cli.parameters(cli.parameters_of(main_of(entry_point)))}


def _takes_a_declaration(main) -> bool:
    try:
        cli.parameters_of(main)
    except (AssertionError, ValueError):
        return False
    return True


def test_every_module_with_a_main_in_projects_is_an_mlproject_entry_point():
    """A module whose ``main`` takes a declaration (not a command-line helper such as
    ``projects.preflight``, whose ``main`` takes argv) must be declared in MLproject."""
    modules = set()
    for path in (PROJECT_ROOT / "projects").glob("*.py"):
        module = importlib.import_module(f"projects.{path.stem}")
        main = getattr(module, "main", None)
        if main is not None and main.__module__ == module.__name__ and _takes_a_declaration(main):
            modules.add(module.__name__)
    assert modules == {main_of(entry_point).__module__ for entry_point in ENTRY_POINTS}


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_mlproject_declares_the_parameters_and_command_of_the_declaration(entry_point):
    declared = cli.mlproject_entry(main_of(entry_point))
    given = ENTRY_POINTS[entry_point]
    assert " ".join(given["command"].split()) == declared["command"]
    parameters = given.get("parameters", {})
    assert list(parameters) == list(declared["parameters"])
    for name, spec in parameters.items():
        assert spec["type"] == declared["parameters"][name]["type"], name
        assert ("default" in spec) == ("default" in declared["parameters"][name]), name


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_mlproject_defaults_are_the_declared_defaults(entry_point):
    """Each MLproject default, read as the command line reads it, is the declaration's default
    (``2`` and ``2.0`` agree; a path is relative to the project)."""
    for name, spec in ENTRY_POINTS[entry_point].get("parameters", {}).items():
        if "default" in spec:
            leaf = leaves(entry_point)[name]
            assert leaf.spell(leaf.parse(str(spec["default"]))) == leaf.spell(leaf.default), name


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_the_command_mlflow_renders_with_every_default_parses_to_the_defaults(entry_point):
    """`mlflow run` with no -P: the command MLflow renders (strings shell-quoted, paths made
    absolute under the project) parses to the declaration built from its defaults."""
    declaration = cli.parameters_of(main_of(entry_point))
    required = {leaf.name: f"{leaf.name}.csv" for leaf in cli.parameters(declaration) if leaf.required}
    values = {}
    for name, spec in ENTRY_POINTS[entry_point].get("parameters", {}).items():
        value = spec.get("default", required.get(name))
        values[name] = shlex.quote(str(PROJECT_ROOT / value if spec["type"] == "path" else value))
    argv = shlex.split(ENTRY_POINTS[entry_point]["command"].format(**values))[3:]
    defaults = {leaf.name: leaf.default for leaf in cli.parameters(declaration) if not leaf.required}
    assert cli.parse(declaration, argv) == cli.build(declaration, {**defaults, **required})


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
def test_the_docs_parameter_table_is_the_declaration(entry_point):
    declared = {
        name: None if leaf.required else leaf.spell(leaf.default)
        for name, leaf in leaves(entry_point).items()
    }
    documented = docs_table(DOCS_TABLES[entry_point])
    assert {name: documented.get(name) for name in declared} == declared
    assert set(documented) == set(declared)
