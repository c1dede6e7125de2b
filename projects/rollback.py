"""Entry point `rollback`: point `champion` back at the version the last promotion replaced."""

from __future__ import annotations

from dataclasses import dataclass

from model.promotion import print_waiting, rollback
from projects.cli import run


@dataclass(frozen=True)
class Parameters:
    """None: the registry's tags say which version to go back to."""


def main(parameters: Parameters) -> str:
    decision = rollback(on_wait=print_waiting)
    if not decision.moved:
        raise SystemExit(decision.message)
    return decision.message


if __name__ == "__main__":
    run(main)
