"""Entry point `rollback`: point `champion` back at the version the last promotion replaced."""

from __future__ import annotations

import argparse
import sys

from mlflow.exceptions import MlflowException

from model.promotion import print_waiting, rollback


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return argparse.ArgumentParser(description=__doc__).parse_args(argv)


if __name__ == "__main__":
    parse_args()
    try:
        decision = rollback(on_wait=print_waiting)
    except MlflowException as error:
        sys.exit(f"error: {str(error).splitlines()[0]}")
    if not decision.moved:
        sys.exit(decision.message)
    print(decision.message)
