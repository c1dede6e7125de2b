"""k8s/monitor as kubectl kustomize renders it: the InferenceService of k8s/serving with capture on a
shared volume, and the monitor CronJob hardened (non-root, read-only root) with its mounts.

`make validate-deploy` runs the generic checks on it (schemas, hardening, images); these tests
hold what the monitor needs on top: the runtime writes where the job reads."""

from __future__ import annotations

import pytest

from deploy.render import render
from deploy.validate import REPO_ROOT
from mlflowserver.capture import DIR_ENV


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    rendered, problems = render(REPO_ROOT / "k8s" / "monitor", REPO_ROOT)
    assert problems == []
    return {obj.kind: obj.body for obj in rendered}


def mounts_and_claims(container: dict, pod: dict) -> dict[str, tuple[str, bool]]:
    """Mount path → (claim name or volume kind, read-only) for every mount of ``container``."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    found = {}
    for mount in container.get("volumeMounts", []):
        assert mount["name"] in volumes, f"volumeMount {mount['name']} has no volume"
        volume = volumes[mount["name"]]
        source = (
            volume["persistentVolumeClaim"]["claimName"] if "persistentVolumeClaim" in volume else "emptyDir"
        )
        found[mount["mountPath"]] = (source, bool(mount.get("readOnly")))
    return found


def test_the_runtime_captures_to_the_claim_the_cronjob_reads(objects):
    predictor = objects["InferenceService"]["spec"]["predictor"]
    model = predictor["model"]
    env = {e["name"]: e.get("value") for e in model["env"]}
    assert env["OMP_NUM_THREADS"] == "1"  # the runtime's own env survives the patch
    assert env[DIR_ENV] == "/captures"
    assert mounts_and_claims(model, predictor)["/captures"] == ("captures", False)
    claim = objects["PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "captures" and claim["spec"]["accessModes"] == ["ReadWriteMany"]

    pod = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    command = container["command"]
    assert command[:5] == ["mlflow", "run", ".", "-e", "monitor"]
    assert "window=/captures" in command
    assert mounts_and_claims(container, pod) == {
        "/captures": ("captures", True),
        "/tmp": ("emptyDir", False),
        "/home/app": ("emptyDir", False),
    }


def test_the_cronjob_runs_non_root_on_a_read_only_root_from_the_monitor_image(objects):
    job = objects["CronJob"]["spec"]
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert container["image"] == "california-housing-monitor:dev"
    assert {e["name"]: e.get("value") for e in container["env"]}["DO_NOT_TRACK"] == "1"
    assert job["concurrencyPolicy"] == "Forbid"
