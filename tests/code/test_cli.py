"""projects/cli.py: a dataclass declaration becomes the command line; run's one-line outcome."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from model.data import PROJECT_ROOT, DataContractError
from projects import cli


@dataclass(frozen=True)
class Inner:
    """
    Parameters
    ----------
    sizes, depth :
        Wrapped before its colon,
        and described on two lines.
    """

    sizes: tuple[int, ...] = (5, 15)
    depth: int = 3


@dataclass(frozen=True)
class Declared:
    """
    Parameters
    ----------
    target : str
        Required: no default.
    level : float or None
        Empty for none (100 % = all).
    path : Path
        Inside the project.
    """

    target: str
    level: float | None = None
    path: Path = PROJECT_ROOT / "data" / "x.csv"
    inner: Inner = field(default_factory=Inner)


def test_leaves_flatten_nested_declarations_with_their_docstring_help():
    leaves = cli.parameters(Declared)
    assert [leaf.name for leaf in leaves] == ["target", "level", "path", "sizes", "depth"]
    help = {leaf.name: leaf.help for leaf in leaves}
    assert help["sizes"] == help["depth"] == "Wrapped before its colon, and described on two lines."
    assert help["level"] == "Empty for none (100 % = all)."


def test_the_command_line_reads_each_type_and_builds_the_nested_instance():
    parsed = cli.parse(Declared, ["--target", "t", "--level", "0.8", "--sizes", "1,2,3", "--path", "a.csv"])
    assert parsed == Declared("t", 0.8, Path("a.csv"), Inner((1, 2, 3), 3))
    assert cli.parse(Declared, ["--target", "t", "--level", ""]) == Declared("t")


def test_a_missing_required_option_or_a_bad_number_is_a_usage_error(capsys):
    for argv in ([], ["--target", "t", "--depth", "deep"]):
        with pytest.raises(SystemExit) as exit:
            cli.parse(Declared, argv)
        assert exit.value.code == 2
    assert "--depth: invalid" in capsys.readouterr().err


def test_mlproject_entry_spells_types_defaults_and_the_command():
    def main(parameters: Declared) -> str:
        return ""

    entry = cli.mlproject_entry(main)
    assert entry["parameters"] == {
        "target": {"type": "string"},
        "level": {"type": "float", "default": ""},
        "path": {"type": "path", "default": "data/x.csv"},
        "sizes": {"type": "string", "default": "5,15"},
        "depth": {"type": "int", "default": "3"},
    }
    assert entry["command"] == (
        f"python -m {__name__} --target {{target}} --level {{level}} --path {{path}} "
        "--sizes {sizes} --depth {depth}"
    )


def test_run_prints_the_line_or_exits_with_one_line_for_an_expected_failure(monkeypatch, capsys):
    def main(parameters: Declared) -> str:
        if parameters.target == "bad":
            raise DataContractError("data/x.csv: truncated\nsecond line")
        return f"done {parameters.target}"

    monkeypatch.setattr(sys, "argv", ["prog", "--target", "good"])
    cli.run(main)
    assert capsys.readouterr().out == "done good\n"
    with pytest.raises(SystemExit) as exit:
        cli.run(main, ["--target", "bad"], prefix="entry")
    assert exit.value.code == "entry: data/x.csv: truncated"


class Refused(Exception):
    """Not a ValueError: argparse would turn that into a usage error."""


def test_an_entry_point_s_own_parser_fails_like_main():
    def refuse(text: str):
        raise Refused(f"not a level: {text!r}")

    def main(parameters: Declared) -> str:
        raise AssertionError("never reached")

    with pytest.raises(SystemExit) as exit:
        cli.run(main, ["--target", "t", "--level", "wide"], failures=(Refused,), parsers={"level": refuse})
    assert exit.value.code == "error: not a level: 'wide'"
