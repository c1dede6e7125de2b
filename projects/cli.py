"""An entry point's parameters, declared once as a typed dataclass: its command line, and the
MLproject entry and docs tables that ``tests/code/test_entry_points.py`` checks against it.

An entry point is a module ``projects/<name>.py`` with a function ``main(parameters: P) -> str``
whose one parameter's type ``P`` is a dataclass: each field is one parameter, its type says how
the command line reads it, its default is the default, its description is the dataclass's
docstring's ``Parameters`` section (numpydoc, as scikit-learn documents estimators). A field
whose type is itself a dataclass contributes its own fields (``projects/train.py`` takes
``TrainingConfig`` whole). ``run(main)`` parses ``sys.argv`` into ``P``, calls ``main`` and
prints the line it returns; a failure it expects exits 1 with one line. See
docs/codebase/overview.md#entry-points for adding one.

Field types and how ``--name`` (the field name, ``_`` → ``-``) reads them, with their MLproject
type: ``int`` (int), ``float`` (float), ``str`` (string), ``Path`` (path), ``tuple[int, ...]``
(string, comma-separated: ``5,15,50``); ``X | None`` (X's type; the empty string is ``None``).
A field without a default is required.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from model.data import PROJECT_ROOT, DataContractError

# What an entry point expects to fail with: the tracking server, the data, the file system.
FAILURES: tuple[type[Exception], ...] = (MlflowException, DataContractError, OSError)


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One command-line option (and MLproject parameter): a leaf field of the declaration."""

    name: str
    type: Any
    default: Any  # dataclasses.MISSING when required
    help: str = ""

    @property
    def option(self) -> str:
        return f"--{self.name.replace('_', '-')}"

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @property
    def optional(self) -> bool:
        """``X | None``: the empty string means ``None``."""
        return _inner(self.type) is not self.type

    def parse(self, text: str):
        """The value of ``text`` as given on the command line (or as MLproject's default)."""
        if self.optional and text == "":
            return None
        kind = _inner(self.type)
        if kind == tuple[int, ...]:
            return tuple(int(part) for part in text.split(","))
        return kind(text)

    def spell(self, value) -> str:
        """``value`` as the command line (and MLproject) writes it."""
        if value is None:
            return ""
        if isinstance(value, tuple):
            return ",".join(map(str, value))
        if isinstance(value, Path) and value.is_relative_to(PROJECT_ROOT):
            return str(value.relative_to(PROJECT_ROOT))
        return str(value)

    @property
    def mlproject_type(self) -> str:
        kind = _inner(self.type)
        return {int: "int", float: "float", str: "string", Path: "path"}.get(kind, "string")


def parameters_of(main: Callable) -> type:
    """The dataclass ``main`` takes: the entry point's declaration."""
    hints = typing.get_type_hints(main)
    hints.pop("return", None)
    (declaration,) = hints.values()
    assert dataclasses.is_dataclass(declaration), f"{main.__qualname__} must take one dataclass"
    return declaration


def parameters(declaration: type) -> list[Parameter]:
    """The declaration's leaf fields, nested dataclasses flattened, in order."""
    return list(_leaves(declaration))


def _leaves(declaration: type) -> Iterator[Parameter]:
    hints = typing.get_type_hints(declaration)
    helps = _docstring_parameters(declaration.__doc__ or "")
    for field in dataclasses.fields(declaration):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            yield from _leaves(kind)
            continue
        default = field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        yield Parameter(field.name, kind, default, helps.get(field.name, ""))


def build(declaration: type, values: dict[str, Any]):
    """An instance of ``declaration`` from leaf values (nested dataclasses built from theirs)."""
    hints = typing.get_type_hints(declaration)
    fields = {}
    for field in dataclasses.fields(declaration):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            fields[field.name] = build(kind, values)
        elif field.name in values:
            fields[field.name] = values[field.name]
    return declaration(**fields)


def parse(declaration: type, argv: list[str] | None = None, description: str = "", parsers=None):
    """``argv`` (default ``sys.argv[1:]``) as an instance of ``declaration``.

    ``parsers``: field name → function reading its text, where an entry point reads one
    its own way: a ``ValueError`` it raises is argparse's usage error, any other exception
    reaches :func:`run` (e.g. to refuse a value with the entry point's own one-line error).
    """
    parser = argparse.ArgumentParser(description=description)
    leaves = parameters(declaration)
    for leaf in leaves:
        read = (parsers or {}).get(leaf.name, leaf.parse)
        if leaf.required:
            parser.add_argument(leaf.option, type=read, required=True, help=_escaped(leaf.help))
        else:
            shown = leaf.spell(leaf.default) or "''"
            help = _escaped(f"{leaf.help} (default {shown})")
            parser.add_argument(leaf.option, type=read, default=leaf.default, help=help)
    return build(declaration, vars(parser.parse_args(argv)))


def run(
    main: Callable[[Any], str],
    argv: list[str] | None = None,
    prefix: str = "error",
    failures: tuple[type[Exception], ...] = FAILURES,
    parsers: dict[str, Callable[[str], Any]] | None = None,
) -> None:
    """Parse the command line into ``main``'s parameters, call it and print what it returns.

    An expected failure (``failures``) exits 1 with ``<prefix>: <its first line>``: one line,
    the traceback is noise to whoever runs the entry point. ``main`` refuses otherwise (a
    promotion that does not move the alias) by raising ``SystemExit`` with its message.
    """
    module = sys.modules[main.__module__]
    try:
        parsed = parse(parameters_of(main), argv, (module.__doc__ or "").strip(), parsers)
        line = main(parsed)
    except failures as error:
        sys.exit(f"{prefix}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
    print(line)


def mlproject_entry(main: Callable) -> dict:
    """What MLproject must declare for the entry point ``main`` is: parameters and command."""
    leaves = parameters(parameters_of(main))
    declared = {}
    for leaf in leaves:
        spec = {"type": leaf.mlproject_type}
        if not leaf.required:
            spec["default"] = leaf.spell(leaf.default)
        declared[leaf.name] = spec
    options = " ".join(f"{leaf.option} {{{leaf.name}}}" for leaf in leaves)
    command = f"python -m {main.__module__} {options}".strip()
    return {"parameters": declared, "command": command}


def _inner(kind):
    """``X`` for ``X | None``, else ``kind`` itself."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        (inner,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return inner
    return kind


_HEADING = re.compile(r"^\s*Parameters\s*\n\s*-+\s*\n", re.M)


def _docstring_parameters(docstring: str) -> dict[str, str]:
    """name → description, from a numpydoc ``Parameters`` section (``a, b : type`` describes
    several names at once, and may wrap before its colon)."""
    found = _HEADING.search(docstring)
    if not found:
        return {}
    helps: dict[str, str] = {}
    header, names, indent = "", [], None
    for line in docstring[found.end() :].splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break
        if depth == indent or ":" not in header:  # a name line, or its continuation
            header = line.strip() if depth == indent else f"{header} {line.strip()}"
            names = [name.strip() for name in header.split(":")[0].split(",") if name.strip()]
            continue
        for name in names:
            helps[name] = f"{helps.get(name, '')} {line.strip()}".strip()
    return helps


def _escaped(help: str) -> str:
    """argparse formats help with ``%``."""
    return help.replace("%", "%%")
