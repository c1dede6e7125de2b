"""Which images the roles run and what those images install: every image ``k8s/`` runs is one
Compose builds or runs too; one image name is built one way; each built image installs a lock
file, the locks agree on every package they share, and each role's lock pins what the role needs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from deploy.dockerfile import Build, Stages, copy_sources
from deploy.policy import containers
from deploy.problem import Obj, Problem, relative

# (pattern in a role's command, distribution the role's lock must pin, why)
ROLE_REQUIREMENTS = (
    (
        r"--app-name[= ]basic-auth",
        "flask-wtf",
        "`mlflow server --app-name basic-auth` imports Flask-WTF (mlflow[auth])",
    ),
    (r"postgresql\+psycopg://", "psycopg", "the tracking server's backend store URI uses psycopg"),
    (r"-m mlflowserver", "kserve", "the V2 runtime (python -m mlflowserver) is built on kserve"),
    (r"mlflow artifacts download", "mlflow", "the storage initializer runs MLflow's client"),
)
LOCK_GLOBS = ("requirements*.lock", "requirements/*.lock")


@dataclass(frozen=True)
class Use:
    """A container or service that runs an image, and the command it runs."""

    source: str
    where: str
    image: str
    command: str
    in_compose: bool = False


def builds_of(compose: dict, root: Path) -> list[Build]:
    """What Compose builds (each service's ``build:``); the root Dockerfile when nothing is."""
    found = set()
    for service in (compose.get("services") or {}).values():
        build = service.get("build")
        if build:
            context = Path(build["context"])
            found.add(
                Build(
                    service.get("image"),
                    context,
                    context / build.get("dockerfile", "Dockerfile"),
                    build.get("target"),
                )
            )
    if not found and (root / "Dockerfile").is_file():
        found.add(Build(None, root, root / "Dockerfile"))
    return sorted(found, key=str)


def uses_of(objects: Sequence[Obj], compose: dict, compose_rel: str) -> list[Use]:
    uses = [
        Use(
            o.source,
            f"{o.ref}: {where}",
            str(c.get("image")),
            " ".join(map(str, (c.get("command") or []) + (c.get("args") or []))),
        )
        for o in objects
        if o.applied
        for where, c, _ in containers(o)
    ]
    for name, service in sorted((compose.get("services") or {}).items()):
        command = " ".join(map(str, (service.get("entrypoint") or []) + (service.get("command") or [])))
        uses.append(Use(compose_rel, f"services.{name}", str(service.get("image")), command, in_compose=True))
    return uses


def repository(image: str) -> str:
    name, _, tag = image.rpartition(":")
    return name if name and "/" not in tag else image


def check_images(builds: Sequence[Build], uses: Sequence[Use]) -> list[Problem]:
    built = {b.image for b in builds if b.image}
    known = built | {u.image for u in uses if u.in_compose}
    problems = []
    for use in uses:
        ways = {(b.dockerfile.name, b.target) for b in builds if b.image == use.image}
        if use.in_compose and len(ways) > 1:
            problems.append(
                Problem(
                    "images",
                    use.source,
                    f"{use.where}: image {use.image} is built {len(ways)} different ways",
                )
            )
        if use.image not in known:
            same = sorted(b for b in built if repository(b) == repository(use.image))
            hint = f"; the project builds {', '.join(same)}" if same else ""
            problems.append(
                Problem(
                    "images",
                    use.source,
                    f"{use.where}: image {use.image} is neither built nor run by Compose{hint}",
                )
            )
    return problems


def pins(lock: Path) -> dict[str, str]:
    """Distribution → pinned version of a lock file (``name==version`` lines)."""
    pinned = {}
    for line in lock.read_text().splitlines():
        try:
            requirement = Requirement(line.split("#")[0].strip().rstrip("\\").strip())
        except InvalidRequirement:
            continue
        versions = [s.version for s in requirement.specifier if s.operator == "=="]
        if versions:
            pinned[canonicalize_name(requirement.name)] = versions[0]
    return pinned


def check_locks_agree(root: Path) -> list[Problem]:
    locks = sorted({p for pattern in LOCK_GLOBS for p in root.glob(pattern)})
    pinned = {lock: pins(lock) for lock in locks}
    problems = []
    for i, lock in enumerate(locks):
        for other in locks[i + 1 :]:
            for name in sorted(pinned[lock].keys() & pinned[other].keys()):
                if pinned[lock][name] != pinned[other][name]:
                    theirs = f"{relative(other, root)} pins {pinned[other][name]}"
                    message = f"pins {name}=={pinned[lock][name]} but {theirs}"
                    problems.append(Problem("requirements", relative(lock, root), message))
    return problems


def locks_installed(build: Build) -> list[Path]:
    """The lock files a build installs: those the stages it is built from (its FROM chain and
    COPY --from sources) copy in and a RUN then names (``pip install -r <copied path>``); a lock
    copied only to be read, as the project's own ``requirements.lock``, is not installed."""
    if not build.dockerfile.is_file():
        return []
    stages = Stages(build.dockerfile.read_text())
    index = stages.index(build.target)
    used = stages.used_by(index) if index is not None else []
    runs = " ".join(i["value"] for i in stages.instructions(used, "RUN"))
    installed = set()
    for copy in stages.instructions(used, "COPY"):
        sources = copy_sources(copy)
        destination = copy["value"].split()[-1]
        for source in sources:
            if not source.endswith(".lock"):
                continue
            path = destination if len(sources) == 1 and not destination.endswith("/") else ""
            path = path or f"{destination.rstrip('/')}/{Path(source).name}"
            if re.search(rf"-r\s+{re.escape(path)}\b", runs):
                installed.add(build.context / source)
    return sorted(installed)


def check_requirements(builds: Sequence[Build], uses: Sequence[Use], root: Path) -> list[Problem]:
    problems = check_locks_agree(root)
    by_image = {b.image: b for b in builds if b.image}
    for build in builds:
        if build.dockerfile.is_file() and not locks_installed(build):
            problems.append(
                Problem(
                    "requirements",
                    relative(build.dockerfile, root),
                    f"image {build.image} installs from no *.lock file",
                )
            )
    for use in uses:
        locks = (
            [lock for lock in locks_installed(by_image[use.image]) if lock.is_file()]
            if use.image in by_image
            else []
        )
        pinned = {name for lock in locks for name in pins(lock)}
        for pattern, distribution, why in ROLE_REQUIREMENTS:
            if locks and re.search(pattern, use.command) and distribution not in pinned:
                where = ", ".join(relative(lock, root) for lock in locks)
                problems.append(
                    Problem(
                        "requirements",
                        where,
                        f"does not pin {distribution}, but {why} ({use.source}: {use.where})",
                    )
                )
    return sorted(set(problems), key=str)
