"""The project's rules for what the cluster runs: hardened containers, no literal secret in an
applied object (detect-secrets decides what looks like one), Secrets created out of band with
only placeholders in the example file, and every Secret key a manifest references declared there."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from deploy.problem import Obj, Problem, items, mapping
from deploy.secret_scan import find_in_values

WORKLOAD_KINDS = (
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "Pod",
)  # pod template at spec.template
PLACEHOLDER = re.compile(r"^<[^<>]+>$")


def containers(obj: Obj) -> Iterator[tuple[str, dict, dict]]:
    """(path, container, pod securityContext) for every container an object declares."""
    spec = mapping(obj.body.get("spec"))
    if obj.kind == "ClusterStorageContainer":
        yield "spec.container", mapping(spec.get("container")), {}
        return
    if obj.kind in ("ServingRuntime", "ClusterServingRuntime"):
        where, pod = (
            "spec",
            spec,
        )  # KServe builds the pod; its securityContext comes from the InferenceService
    elif obj.kind in WORKLOAD_KINDS:
        where = "spec" if obj.kind == "Pod" else "spec.template.spec"
        pod = spec if obj.kind == "Pod" else mapping(mapping(spec.get("template")).get("spec"))
    elif obj.kind == "CronJob":
        where = "spec.jobTemplate.spec.template.spec"
        pod = mapping(
            mapping(mapping(mapping(spec.get("jobTemplate")).get("spec")).get("template")).get("spec")
        )
    else:
        return
    pod_security = {} if obj.kind.endswith("ServingRuntime") else mapping(pod.get("securityContext"))
    for key in ("initContainers", "containers"):
        for index, container in enumerate(items(pod.get(key))):
            if isinstance(container, dict):
                yield f"{where}.{key}[{index}]", container, pod_security


def hardening(label: str, container: dict, pod_security: dict) -> list[str]:
    """What a container lacks: non-root, no privilege escalation, no capabilities, requests and limits."""
    security = mapping(container.get("securityContext"))
    lacks = []
    non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
    if non_root is not True or security.get("runAsUser", pod_security.get("runAsUser")) == 0:
        lacks.append(f"{label}: must run as non-root (securityContext.runAsNonRoot: true)")
    if security.get("allowPrivilegeEscalation") is not False:
        lacks.append(f"{label}: securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in items(mapping(security.get("capabilities")).get("drop")):
        lacks.append(f"{label}: securityContext.capabilities.drop must contain ALL")
    if security.get("privileged"):
        lacks.append(f"{label}: must not be privileged")
    for level in ("requests", "limits"):
        missing = [
            r for r in ("cpu", "memory") if r not in mapping(mapping(container.get("resources")).get(level))
        ]
        if missing:
            lacks.append(f"{label}: resources.{level} must set {' and '.join(missing)}")
    return lacks


def leaves(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) of every string in an object, an env entry as ``env.NAME`` and a multi-line
    string one line at a time, so that a secret's name stands next to its value."""
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and isinstance(node.get("value"), str) and path.endswith("]"):
            yield f"{path.rpartition('[')[0]}.{node['name']}", node["value"]
            return
        for key, value in node.items():
            yield from leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, f"{path}[{index}]")
    elif isinstance(node, str):
        for line in node.splitlines() or [node]:
            yield path, line


def literal_secrets(found_in: Sequence[tuple[Any, str, str]], root: Path) -> list[tuple[Any, str]]:
    """(owner, message) for each (owner, path, value) detect-secrets finds a secret in."""
    pairs = [(path, value) for _, path, value in found_in]
    return [
        (
            found_in[index][0],
            f"{found_in[index][1]}: literal secret ({kind}); take it from a Secret or env file",
        )
        for index, kind in find_in_values(pairs, root)
    ]


def check_secrets(objects: Sequence[Obj], root: Path) -> list[Problem]:
    applied = [o for o in objects if o.applied]
    problems = [
        o.problem(
            "policy",
            "Secret with data in the applied set (create Secrets out of band; keep only an example file)",
        )
        for o in applied
        if o.kind == "Secret" and (o.body.get("data") or o.body.get("stringData"))
    ]
    found_in = [(o, path, value) for o in applied for path, value in leaves(o.body)]
    problems += [obj.problem("secrets", message) for obj, message in literal_secrets(found_in, root)]
    examples = [o for o in objects if not o.applied and o.kind == "Secret"]
    declared: dict[str, set[str]] = {}
    for example in examples:
        for field in ("stringData", "data"):
            for key, value in mapping(example.body.get(field)).items():
                declared.setdefault(example.name, set()).add(str(key))
                if not PLACEHOLDER.match(str(value)):
                    problems.append(
                        example.problem(
                            "policy", f"{field}.{key} must be a placeholder like <{key}>, not a value"
                        )
                    )
    for obj in applied if examples else []:
        for path, ref in secret_key_refs(obj.body):
            if ref.get("key") not in declared.get(str(ref.get("name")), set()):
                secret = f"Secret {ref.get('name')} key {ref.get('key')}"
                message = f"{path}: {secret} is not declared in the example Secrets"
                problems.append(obj.problem("policy", message))
    return problems


def secret_key_refs(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "secretKeyRef" and isinstance(value, dict):
                yield where, value
            else:
                yield from secret_key_refs(value, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from secret_key_refs(value, f"{path}[{index}]")


def check_policy(objects: Sequence[Obj], root: Path) -> list[Problem]:
    problems = []
    for obj in (o for o in objects if o.applied):
        for where, container, pod_security in containers(obj):
            label = f"{where} ({container.get('name', '?')})"
            problems += [obj.problem("policy", lack) for lack in hardening(label, container, pod_security)]
    return problems + check_secrets(objects, root)
