"""Schemas: KServe objects against the KServe CRDs (check-jsonschema), built-in kinds with
kubernetes-validate, both as strictly as the API server's strict field validation."""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from kubernetes_validate import utils
from packaging.version import Version

from deploy.problem import Obj, Problem, run_tool, short, tool
from deploy.render import LOADER

KSERVE_GROUP = "serving.kserve.io"
CRDS_ENV = "KSERVE_CRDS_DIR"
# The Kubernetes version whose built-in schemas the manifests are checked against.
K8S_VERSION = "1.34"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# A CRD schema is OpenAPI 3.0's dialect, a subset of JSON Schema draft 4 (and checking the
# schema itself against the 2020-12 metaschema took seconds for the InferenceService CRD alone).
DIALECT = "http://json-schema.org/draft-04/schema#"


def default_crds_dir(root: Path) -> Path:
    override = os.environ.get(CRDS_ENV)
    return Path(override) if override else (root / ".." / "shared" / "kserve" / "crds").resolve()


def strict(schema: Any) -> Any:
    """A CRD's structural schema as JSON Schema, rejecting what the API server rejects: unknown
    fields (an object with ``properties`` and no ``additionalProperties`` or
    ``x-kubernetes-preserve-unknown-fields``), ``x-kubernetes-int-or-string`` values that are
    neither, and (at the top) ``metadata`` that is not an ObjectMeta."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items() if key != "properties"}
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if not ({"additionalProperties", "x-kubernetes-preserve-unknown-fields"} & set(schema)):
            out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string") and not ({"type", "anyOf"} & set(schema)):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


@dataclass(frozen=True)
class CRD:
    kind: str
    scope: str
    versions: dict  # served version -> openAPIV3Schema


@functools.cache
def load_crds(crds_dir: Path) -> dict[str, CRD]:
    crds = {}
    for path in sorted(crds_dir.glob("*.y*ml")):
        for body in yaml.load_all(path.read_text(), Loader=LOADER):
            spec = body.get("spec", {}) if isinstance(body, dict) else {}
            if body.get("kind") == "CustomResourceDefinition" and spec.get("group") == KSERVE_GROUP:
                versions = {
                    v["name"]: v["schema"]["openAPIV3Schema"]
                    for v in spec["versions"]
                    if v.get("served", True)
                }
                kind = spec["names"]["kind"]
                crds[kind] = CRD(kind, spec.get("scope", "Namespaced"), versions)
    return crds


@functools.cache
def _k8s_definitions() -> dict:
    """kubernetes-validate's strict definitions (ObjectMeta and what it refers to)."""
    wanted = Version(K8S_VERSION)
    version = [v for v in utils.all_versions() if Version(utils.major_minor(v)) <= wanted][-1]
    files = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    return json.loads((files / f"v{version}-local-strict" / "_definitions.json").read_text())["$defs"]


def _schema_file(crd_schema: dict, workdir: str) -> str:
    schema = strict(crd_schema)
    schema["properties"]["metadata"] = {"$ref": f"#/$defs/{OBJECT_META}"}
    schema["$defs"] = _k8s_definitions()
    schema["$schema"] = DIALECT
    path = os.path.join(workdir, "schema.json")
    Path(path).write_text(json.dumps(schema))
    return path


# (CRD directory, kind, version, object as JSON) -> [(path, message)]: an object is checked once
# per process (the seeded-mistake tests validate the same unchanged objects many times over).
_CHECKED: dict[tuple[str, str, str, str], list[tuple[str, str]]] = {}


def _check_jsonschema(crd: CRD, version: str, objects: Sequence[Obj], crds_dir: Path) -> list[Problem]:
    keys = {
        id(obj): (str(crds_dir), crd.kind, version, json.dumps(obj.body, sort_keys=True)) for obj in objects
    }
    unchecked = {keys[id(obj)]: obj for obj in objects if keys[id(obj)] not in _CHECKED}
    with tempfile.TemporaryDirectory() as workdir:
        files = {os.path.join(workdir, f"{index}.json"): key for index, key in enumerate(unchecked)}
        for path, key in files.items():
            Path(path).write_text(key[3])
            _CHECKED[key] = []
        if files:
            schema = _schema_file(crd.versions[version], workdir)
            binary = tool("check-jsonschema") or "check-jsonschema"
            result = run_tool([binary, "--schemafile", schema, "--output-format", "json", *files])
            if not result.stdout.startswith("{"):
                return [
                    objects[0].problem("kserve-schema", f"check-jsonschema failed: {short(result.stderr)}")
                ]
            for error in json.loads(result.stdout).get("errors", []):
                path = error["path"].removeprefix("$").removeprefix(".") or "(root)"
                _CHECKED[files[error["filename"]]].append((path, short(error["message"])))
    return [
        obj.problem("kserve-schema", f"{path}: {message}")
        for obj in objects
        for path, message in _CHECKED[keys[id(obj)]]
    ]


def check_kserve(objects: Sequence[Obj], crds_dir: Path) -> list[Problem]:
    """Every KServe object against its CRD version's schema; cluster-scoped kinds without namespace."""
    problems, by_schema, crds = [], defaultdict(list), load_crds(crds_dir)
    for obj in objects:
        crd = crds.get(obj.kind)
        version = obj.api_version.rpartition("/")[2]
        if crd is None:
            problems.append(obj.problem("kserve-schema", f"no CRD for kind {obj.kind} in the KServe CRDs"))
        elif version not in crd.versions:
            served = ", ".join(sorted(crd.versions))
            message = f"apiVersion {obj.api_version} is not served by the CRD (served: {served})"
            problems.append(obj.problem("kserve-schema", message))
        else:
            by_schema[(obj.kind, version)].append(obj)
            if crd.scope == "Cluster" and obj.namespace:
                problems.append(
                    obj.problem("kserve-schema", "cluster-scoped kind must not set metadata.namespace")
                )
    for (kind, version), group in sorted(by_schema.items()):
        problems += _check_jsonschema(crds[kind], version, group, crds_dir)
    return problems


def check_builtin(objects: Sequence[Obj]) -> list[Problem]:
    problems = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj.body, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path) or "(root)"
            problems.append(obj.problem("k8s-schema", f"{where}: {short(error.message)}"))
        except kubernetes_validate.SchemaNotFoundError:
            message = f"unknown kind {obj.kind} in {obj.api_version} (Kubernetes {K8S_VERSION}, no schema)"
            problems.append(obj.problem("k8s-schema", message))
    return problems


def check_schemas(objects: Sequence[Obj], crds_dir: Path) -> list[Problem]:
    kserve = [o for o in objects if o.api_version.startswith(f"{KSERVE_GROUP}/")]
    builtin = [o for o in objects if not o.api_version.startswith(f"{KSERVE_GROUP}/")]
    if not crds_dir.is_dir():
        missing = Problem("kserve-schema", str(crds_dir), f"KServe CRD directory not found (set {CRDS_ENV})")
        return [missing] + check_builtin(builtin)
    return check_kserve(kserve, crds_dir) + check_builtin(builtin)
