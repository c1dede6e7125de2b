"""Every check over one checkout; the command line.

    python -m deploy                 # this checkout (make validate-deploy)
    python -m deploy --root DIR      # another checkout or a copy (the tests use this)

One line per problem, ``<file>: <what> [<check>]``; exit status 0 when everything passes, 1 when
any problem was found.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from deploy.compose import check_compose, load_compose
from deploy.dockerfile import check_dockerfiles
from deploy.images import builds_of, check_images, check_requirements, uses_of
from deploy.kserve import check_kserve_wiring
from deploy.policy import check_policy
from deploy.problem import Problem, relative
from deploy.render import lint_yaml, load_k8s
from deploy.schemas import CRDS_ENV, check_schemas, default_crds_dir

REPO_ROOT = Path(__file__).resolve().parents[1]


def validate(root: Path = REPO_ROOT, crds_dir: Path | None = None) -> list[Problem]:
    """Every problem in the deployment files of ``root``: ``k8s/``, ``docker-compose.yml`` and
    the Dockerfiles it builds."""
    root = Path(root).resolve()
    compose_file = root / "docker-compose.yml"
    objects, problems = load_k8s(root / "k8s", root)
    problems += check_schemas(objects, crds_dir or default_crds_dir(root))
    problems += check_kserve_wiring(objects) + check_policy(objects, root)
    compose, compose_problems = load_compose(compose_file, root)
    problems += compose_problems + lint_yaml([compose_file] if compose_file.is_file() else [], root)
    problems += check_compose(compose, compose_file, root)
    builds = builds_of(compose, root)
    uses = uses_of(objects, compose, relative(compose_file, root))
    problems += (
        check_dockerfiles(builds, root) + check_images(builds, uses) + check_requirements(builds, uses, root)
    )
    return list(dict.fromkeys(problems))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)"
    )
    parser.add_argument(
        "--crds", type=Path, help=f"KServe CRD directory (default: ${CRDS_ENV} or ROOT/../shared/kserve/crds)"
    )
    args = parser.parse_args(argv)
    problems = validate(args.root, args.crds)
    for problem in problems:
        print(problem)
    if problems:
        print(f"deploy validation: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("deploy validation: OK", file=sys.stderr)
    return 0
