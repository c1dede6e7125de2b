"""What every check returns, and the small helpers they share."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One finding, printed as one line: ``<file>: <what> [<check>]``."""

    check: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.check}]"


@dataclass
class Obj:
    """One Kubernetes object: rendered by ``kubectl kustomize`` (applied) or an example file."""

    source: str  # the file under k8s/ it comes from, relative to the repository
    body: dict
    applied: bool = True

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion", ""))

    @property
    def name(self) -> str:
        return str(mapping(self.body.get("metadata")).get("name", "?"))

    @property
    def namespace(self) -> str | None:
        return mapping(self.body.get("metadata")).get("namespace")

    @property
    def ref(self) -> str:
        return f"{self.kind or '?'}/{self.name}"

    def problem(self, check: str, message: str) -> Problem:
        return Problem(check, self.source, f"{self.ref}: {message}")


def mapping(value: Any) -> dict:
    """``value`` if it is a mapping, else {} (wrong types are the schema checks' business)."""
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list:
    """``value`` if it is a list, else []."""
    return value if isinstance(value, list) else []


def short(text: Any, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def tool(name: str) -> str | None:
    """An executable installed beside this Python (the venv's PyPI wheels), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def run_tool(
    argv: Sequence[str], cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(argv), check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
