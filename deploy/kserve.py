"""The KServe wiring of this project, which no schema covers: each InferenceService speaks V2 with
model format ``mlflow``, through a serving runtime defined in ``k8s/`` that can serve that format
and protocol, and its ``storageUri`` has a prefix a ClusterStorageContainer in ``k8s/`` serves."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from deploy.problem import Obj, Problem, items, mapping

RUNTIME_KINDS = ("ServingRuntime", "ClusterServingRuntime")
PROTOCOL = "v2"
MODEL_FORMAT = "mlflow"
# KServe recognises these containers by name: it injects the storage initializer under this
# name and mounts the downloaded model into the runtime's container of this name.
STORAGE_CONTAINER = "storage-initializer"
RUNTIME_CONTAINER = "kserve-container"


def serves_uri(storage: Obj, uri: str) -> bool:
    for fmt in items(mapping(storage.body.get("spec")).get("supportedUriFormats")):
        prefix, regex = mapping(fmt).get("prefix"), mapping(fmt).get("regex")
        if (prefix and uri.startswith(prefix)) or (regex and re.match(regex, uri)):
            return True
    return False


def cannot_serve(runtime: Obj, fmt: dict, protocol: Any) -> list[str]:
    """Why ``runtime`` cannot serve a model of format ``fmt`` over ``protocol`` ([] when it can)."""
    spec = mapping(runtime.body.get("spec"))
    name, version = fmt.get("name"), fmt.get("version")
    formats = [mapping(f) for f in items(spec.get("supportedModelFormats"))]
    why = ["it is disabled"] if spec.get("disabled") else []
    if not any(f.get("name") == name and version in (None, str(f.get("version"))) for f in formats):
        why.append(f"it does not support model format {name}" + (f" version {version}" if version else ""))
    if protocol not in (items(spec.get("protocolVersions")) or ["v1"]):
        why.append(f"it does not support protocol {protocol}")
    return why


def check_named_containers(objects: Sequence[Obj]) -> list[Problem]:
    problems = []
    for obj in objects:
        spec = mapping(obj.body.get("spec"))
        if obj.kind == "ClusterStorageContainer":
            name = mapping(spec.get("container")).get("name")
            if name != STORAGE_CONTAINER:
                message = (
                    f"spec.container.name must be {STORAGE_CONTAINER} (got {name!r}); "
                    "KServe recognises the init container by that name"
                )
                problems.append(obj.problem("kserve", message))
            if not spec.get("supportedUriFormats"):
                problems.append(obj.problem("kserve", "spec.supportedUriFormats is empty"))
        elif obj.kind in RUNTIME_KINDS:
            names = [mapping(c).get("name") for c in items(spec.get("containers"))]
            if RUNTIME_CONTAINER not in names:
                message = (
                    f"no container named {RUNTIME_CONTAINER} (got {names}); "
                    "KServe mounts the model into that container"
                )
                problems.append(obj.problem("kserve", message))
    return problems


def check_runtime(isvc: Obj, model: dict, runtimes: Sequence[Obj]) -> list[Problem]:
    fmt, protocol, name = (
        mapping(model.get("modelFormat")),
        model.get("protocolVersion"),
        model.get("runtime"),
    )
    if not name:
        auto = [
            r
            for r in runtimes
            if not cannot_serve(r, fmt, protocol)
            and any(
                mapping(f).get("autoSelect") and mapping(f).get("name") == fmt.get("name")
                for f in items(mapping(r.body.get("spec")).get("supportedModelFormats"))
            )
        ]
        message = (
            f"no runtime named and no runtime in k8s/ auto-selects format {fmt.get('name')} "
            f"with protocol {protocol}"
        )
        return [] if auto else [isvc.problem("kserve", message)]
    named = [
        r
        for r in runtimes
        if r.name == name and (r.kind == "ClusterServingRuntime" or r.namespace == isvc.namespace)
    ]
    if not named:
        where = "ServingRuntime in its namespace or ClusterServingRuntime"
        message = f"runtime {name!r} is not defined in k8s/ ({where})"
        return [isvc.problem("kserve", message)]
    return [
        isvc.problem("kserve", f"runtime {name!r} cannot serve it: {why}")
        for why in cannot_serve(named[0], fmt, protocol)
    ]


def check_inference_service(isvc: Obj, runtimes: Sequence[Obj], storage: Sequence[Obj]) -> list[Problem]:
    model = mapping(mapping(mapping(isvc.body.get("spec")).get("predictor")).get("model"))
    if not model:
        return [
            isvc.problem(
                "kserve",
                "spec.predictor.model is missing (the project serves through a model spec with a runtime)",
            )
        ]
    problems = []
    protocol, fmt_name = model.get("protocolVersion"), mapping(model.get("modelFormat")).get("name")
    if protocol != PROTOCOL:
        problems.append(
            isvc.problem(
                "kserve", f"spec.predictor.model.protocolVersion must be {PROTOCOL} (got {protocol!r})"
            )
        )
    if fmt_name != MODEL_FORMAT:
        problems.append(
            isvc.problem(
                "kserve", f"spec.predictor.model.modelFormat.name must be {MODEL_FORMAT} (got {fmt_name!r})"
            )
        )
    uri = model.get("storageUri")
    if not uri:
        problems.append(isvc.problem("kserve", "spec.predictor.model.storageUri is missing"))
    elif not any(serves_uri(s, str(uri)) for s in storage):
        served = sorted(
            str(mapping(f).get("prefix") or mapping(f).get("regex"))
            for s in storage
            for f in items(mapping(s.body.get("spec")).get("supportedUriFormats"))
        )
        served_text = ", ".join(served) or "none"
        message = (
            f"storageUri {uri!r} is served by no ClusterStorageContainer in k8s/ (served: {served_text})"
        )
        problems.append(isvc.problem("kserve", message))
    return problems + check_runtime(isvc, model, runtimes)


def check_kserve_wiring(objects: Sequence[Obj]) -> list[Problem]:
    applied = [o for o in objects if o.applied]
    runtimes = [o for o in applied if o.kind in RUNTIME_KINDS]
    storage = [
        o
        for o in applied
        if o.kind == "ClusterStorageContainer"
        and not mapping(o.body.get("spec")).get("disabled")
        and mapping(o.body.get("spec")).get("workloadType", "initContainer") == "initContainer"
    ]
    problems = check_named_containers(applied)
    for isvc in (o for o in applied if o.kind == "InferenceService"):
        problems += check_inference_service(isvc, runtimes, storage)
    return problems
