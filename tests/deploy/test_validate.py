"""The deployment files pass the offline checks (``python -m deploy``), and each seeded mistake is
caught by name.

Every seeded test works on a copy of the repository's deployment files in ``tmp_path``
(``deploy_copy``), changes one thing and asserts that the validator reports a problem naming it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from docker.utils.build import PatternMatcher

from deploy import validate as v
from deploy.compose import compose_binary
from deploy.dockerfile import dockerignore_patterns
from deploy.schemas import CRDS_ENV, default_crds_dir

REPO = v.REPO_ROOT
CRDS = default_crds_dir(REPO)

pytestmark = pytest.mark.skipif(not CRDS.is_dir(), reason=f"KServe CRDs not found at {CRDS} (set {CRDS_ENV})")

# What the Dockerfile's COPY instructions need in the build context.
BUILD_CONTEXT_FILES = ("MLproject", "conda.yaml", "pyproject.toml", "data/raw/housing.csv.dvc")

BUILD_CONTEXT_DIRS = ("model", "mlflowserver", "projects")


@pytest.fixture
def deploy_copy(tmp_path: Path) -> Path:
    """The deployment files of the repository, copied; the COPY sources as small stand-ins."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copytree(REPO / "k8s", root / "k8s")
    for name in ("Dockerfile", ".dockerignore", "docker-compose.yml", ".yamllint.yaml", ".secrets.baseline"):
        shutil.copy(REPO / name, root / name)
    for lock in ("requirements.lock", "requirements/serve.lock", "requirements/monitor.lock"):
        (root / lock).parent.mkdir(exist_ok=True)
        shutil.copy(REPO / lock, root / lock)
    for name in BUILD_CONTEXT_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("stand-in\n")
    for name in BUILD_CONTEXT_DIRS:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text("")
    return root


def run(root: Path) -> list[str]:
    return [str(p) for p in v.validate(root, crds_dir=CRDS)]


def assert_reported(problems: list[str], *fragments: str) -> None:
    """Some single problem line contains every fragment."""
    assert any(all(f in line for f in fragments) for line in problems), (
        f"no problem mentions {fragments}; got:\n" + "\n".join(problems)
    )


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def dump_docs(path: Path, docs: list[dict]) -> None:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def find(docs: list[dict], kind: str) -> dict:
    return next(d for d in docs if d.get("kind") == kind)


def edit_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# ---------------------------------------------------------------------------------------------
# The real files pass
# ---------------------------------------------------------------------------------------------


def test_repository_deployment_files_pass():
    problems = [str(p) for p in v.validate(REPO)]
    assert problems == [], "\n".join(problems)


def test_copy_fixture_passes(deploy_copy):
    assert run(deploy_copy) == []


def test_cli_exit_codes(deploy_copy):
    env = dict(os.environ, **{CRDS_ENV: str(CRDS)})
    ok = subprocess.run(
        [sys.executable, "-m", "deploy", "--root", str(deploy_copy)],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout == ""

    isvc = deploy_copy / "k8s/serving/inferenceservice.yaml"
    edit_text(isvc, "storageUri:", "storageUrl:")
    bad = subprocess.run(
        [sys.executable, "-m", "deploy", "--root", str(deploy_copy)],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert lines and all(line.startswith("k8s/") for line in lines), bad.stdout
    assert_reported(lines, "k8s/serving/inferenceservice.yaml", "'storageUrl' was unexpected")


# Seeded mistakes that are one text edit of one deployment file: (file, text, replaced by,
# fragments the validator's report must name).
TEXT_EDITS = [
    pytest.param(
        "k8s/serving/inferenceservice.yaml",
        "serving.kserve.io/v1beta1",
        "serving.kserve.io/v1",
        ("InferenceService/california-housing", "not served by the CRD"),
        id="unserved_api_version",
    ),
    pytest.param(
        "k8s/serving/inferenceservice.yaml",
        "storageUri: models:/CaliforniaHousingRegressor@champion",
        "storageUri: gs://bucket/model",
        (
            "InferenceService/california-housing",
            "'gs://bucket/model'",
            "served by no ClusterStorageContainer",
            "models:/",
        ),
        id="unsupported_uri_prefix",
    ),
    pytest.param(
        "k8s/serving/inferenceservice.yaml",
        "protocolVersion: v2",
        "protocolVersion: v1",
        ("protocolVersion must be v2", "'v1'"),
        id="v1_protocol_is_refused",
    ),
    pytest.param(
        "k8s/serving/inferenceservice.yaml",
        "runtime: kserve-mlflowserver",
        "runtime: kserve-mlserver",
        ("runtime 'kserve-mlserver' is not defined in k8s/",),
        id="unknown_runtime",
    ),
    pytest.param(
        "k8s/base/mlflow.yaml",
        "postgresql+psycopg://mlflow@postgres",
        "postgresql+psycopg://mlflow:hunter2@postgres",  # pragma: allowlist secret
        ("Deployment/mlflow", "args[3]: literal secret (Basic Auth Credentials)", "[secrets]"),
        id="literal_password_in_uri",
    ),
    pytest.param(
        "k8s/secrets.example.yaml",
        "password: <postgres-password>",
        "password: hunter2",
        ("k8s/secrets.example.yaml", "Secret/postgres-credentials", "must be a placeholder"),
        id="example_secret_must_hold_placeholders",
    ),
    pytest.param(
        "k8s/base/kserve-storage.yaml",
        "key: password",
        "key: pasword",
        ("ClusterStorageContainer/mlflow-registry", "Secret mlflow-client key pasword is not declared"),
        id="secret_key_reference_must_be_declared",
    ),
    pytest.param(
        "k8s/base/kustomization.yaml",
        "  - networkpolicies.yaml\n",
        "",
        ("k8s/base/networkpolicies.yaml", "listed in no kustomization"),
        id="manifest_listed_in_no_kustomization",
    ),
    pytest.param(
        "k8s/base/kustomization.yaml",
        "kind: Kustomization\n",
        "kind: Kustomization\nnamespace: other\n",
        ("k8s/base/kserve-storage.yaml", "ClusterStorageContainer/mlflow-registry", "cluster-scoped"),
        id="kustomize_namespace_on_cluster_scoped_kinds",
    ),
    pytest.param(
        "docker-compose.yml",
        "      trainer:\n        condition: service_completed_successfully",
        "      trainr:\n        condition: service_completed_successfully",
        ("docker-compose.yml", "docker compose config", "trainr", "[compose]"),
        id="compose_error",
    ),
    pytest.param(
        "docker-compose.yml",
        "    restart: unless-stopped\n",
        "    restrat: unless-stopped\n",
        ("docker-compose.yml", "restrat"),
        id="compose_unknown_key",
    ),
    pytest.param(
        "docker-compose.yml",
        "      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (e.g. in .env)}",
        "      POSTGRES_PASSWORD: hunter2",
        (
            "docker-compose.yml",
            "services.postgres.environment.POSTGRES_PASSWORD",
            "literal secret (Secret Keyword)",
        ),
        id="compose_literal_password",
    ),
    pytest.param(
        "docker-compose.yml",
        '"127.0.0.1:${V2_HOST_PORT:-8080}:8080"',
        '"${V2_HOST_PORT:-8080}:8080"',
        ("services.runtime.ports", "bind it to 127.0.0.1"),
        id="compose_port_on_all_interfaces",
    ),
    pytest.param(
        "docker-compose.yml",
        'user: "999:999"',
        'user: "0:0"',
        ("services.postgres", "non-root user"),
        id="compose_root_user",
    ),
    pytest.param(
        "Dockerfile",
        "USER 1000:1000\n",
        "RUN apt-get update && apt-get install -y curl\nUSER 1000:1000\n",
        ("Dockerfile", "DL3008", "[hadolint]"),
        id="dockerfile_lint_error",
    ),
    pytest.param(
        "Dockerfile",
        "USER 1000:1000\n",
        "",
        ("Dockerfile", "numeric non-root USER"),
        id="dockerfile_runs_as_root",
    ),
    pytest.param(
        "Dockerfile",
        "    OMP_NUM_THREADS=1 \\\n",
        "    OMP_NUM_THREADS=1 \\\n    MLFLOW_TRACKING_PASSWORD=hunter2 \\\n",
        (
            "Dockerfile",
            "ENV MLFLOW_TRACKING_PASSWORD",
            "literal secret (Secret Keyword)",
            "baked into the image",
        ),
        id="dockerfile_secret_env",
    ),
    pytest.param(
        "Dockerfile",
        "    MLFLOW_DISABLE_TELEMETRY=true \\\n",
        "",
        ("Dockerfile", "ENV MLFLOW_DISABLE_TELEMETRY=true is required"),
        id="dockerfile_required_env",
    ),
]


@pytest.mark.parametrize("relative_path, old, new, fragments", TEXT_EDITS)
def test_a_seeded_text_mistake_is_reported_by_name(deploy_copy, relative_path, old, new, fragments):
    edit_text(deploy_copy / relative_path, old, new)
    assert_reported(run(deploy_copy), *fragments)


# ---------------------------------------------------------------------------------------------
# 1. KServe CRD schemas (strict)
# ---------------------------------------------------------------------------------------------


def test_misspelt_field_in_inferenceservice(deploy_copy):
    edit_text(deploy_copy / "k8s/serving/inferenceservice.yaml", "storageUri:", "storageUrl:")
    problems = run(deploy_copy)
    assert_reported(
        problems,
        "InferenceService/california-housing",
        "spec.predictor.model",
        "'storageUrl' was unexpected",
        "[kserve-schema]",
    )
    assert_reported(problems, "storageUri is missing")


def test_protocol_versions_as_string_in_runtime(deploy_copy):
    path = deploy_copy / "k8s/base/kserve-runtime.yaml"
    docs = load_docs(path)
    find(docs, "ClusterServingRuntime")["spec"]["protocolVersions"] = "v2"
    dump_docs(path, docs)
    assert_reported(
        run(deploy_copy),
        "ClusterServingRuntime/kserve-mlflowserver",
        "spec.protocolVersions",
        "'v2' is not of type 'array'",
    )


def test_unknown_metadata_field_is_rejected(deploy_copy):
    path = deploy_copy / "k8s/base/kserve-storage.yaml"
    docs = load_docs(path)
    find(docs, "ClusterStorageContainer")["metadata"]["lables"] = {"a": "b"}
    dump_docs(path, docs)
    assert_reported(
        run(deploy_copy), "ClusterStorageContainer/mlflow-registry", "metadata", "'lables' was unexpected"
    )


def test_int_or_string_accepts_both_and_rejects_others(deploy_copy):
    path = deploy_copy / "k8s/base/kserve-runtime.yaml"
    docs = load_docs(path)
    container = find(docs, "ClusterServingRuntime")["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["port"] = "http1"  # named port: a string is fine
    container["livenessProbe"]["httpGet"]["port"] = 8080  # an integer is fine
    dump_docs(path, docs)
    assert run(deploy_copy) == []

    container["readinessProbe"]["httpGet"]["port"] = 80.5
    dump_docs(path, docs)
    assert_reported(run(deploy_copy), "spec.containers[0].readinessProbe.httpGet.port", "80.5")


def test_cluster_scoped_kind_with_namespace(deploy_copy):
    path = deploy_copy / "k8s/base/kserve-storage.yaml"
    docs = load_docs(path)
    find(docs, "ClusterStorageContainer")["metadata"]["namespace"] = "california-housing"
    dump_docs(path, docs)
    assert_reported(run(deploy_copy), "ClusterStorageContainer/mlflow-registry", "cluster-scoped")


# ---------------------------------------------------------------------------------------------
# 2. Built-in kinds (kubernetes-validate, strict)
# ---------------------------------------------------------------------------------------------


def test_replicas_as_string_in_deployment(deploy_copy):
    path = deploy_copy / "k8s/base/mlflow.yaml"
    docs = load_docs(path)
    find(docs, "Deployment")["spec"]["replicas"] = "1"
    dump_docs(path, docs)
    assert_reported(
        run(deploy_copy), "Deployment/mlflow", "spec.replicas", "'1' is not of type 'integer'", "[k8s-schema]"
    )


def test_unknown_field_in_builtin_kind(deploy_copy):
    path = deploy_copy / "k8s/train/job.yaml"
    docs = load_docs(path)
    find(docs, "Job")["spec"]["backofLimit"] = 1
    dump_docs(path, docs)
    assert_reported(run(deploy_copy), "Job/train", "backofLimit")


# ---------------------------------------------------------------------------------------------
# 5. Project rules
# ---------------------------------------------------------------------------------------------


def test_models_uri_without_storage_container(deploy_copy):
    (deploy_copy / "k8s/base/kserve-storage.yaml").unlink()
    edit_text(deploy_copy / "k8s/base/kustomization.yaml", "  - kserve-storage.yaml\n", "")
    assert_reported(
        run(deploy_copy),
        "'models:/CaliforniaHousingRegressor@champion'",
        "served by no ClusterStorageContainer",
        "served: none",
    )


def test_missing_protocol_version(deploy_copy):
    path = deploy_copy / "k8s/serving/inferenceservice.yaml"
    docs = load_docs(path)
    del find(docs, "InferenceService")["spec"]["predictor"]["model"]["protocolVersion"]
    dump_docs(path, docs)
    assert_reported(run(deploy_copy), "InferenceService/california-housing", "protocolVersion must be v2")


def test_wrong_model_format(deploy_copy):
    path = deploy_copy / "k8s/serving/inferenceservice.yaml"
    docs = load_docs(path)
    find(docs, "InferenceService")["spec"]["predictor"]["model"]["modelFormat"]["name"] = "sklearn"
    dump_docs(path, docs)
    problems = run(deploy_copy)
    assert_reported(problems, "modelFormat.name must be mlflow", "'sklearn'")
    assert_reported(problems, "runtime 'kserve-mlflowserver' cannot serve it", "model format sklearn")


def test_runtime_without_v2(deploy_copy):
    path = deploy_copy / "k8s/base/kserve-runtime.yaml"
    docs = load_docs(path)
    find(docs, "ClusterServingRuntime")["spec"]["protocolVersions"] = ["v1"]
    dump_docs(path, docs)
    assert_reported(run(deploy_copy), "cannot serve it", "does not support protocol v2")


def test_storage_container_name(deploy_copy):
    path = deploy_copy / "k8s/base/kserve-storage.yaml"
    docs = load_docs(path)
    find(docs, "ClusterStorageContainer")["spec"]["container"]["name"] = "mlflow-download"
    dump_docs(path, docs)
    assert_reported(run(deploy_copy), "spec.container.name must be storage-initializer")


def test_literal_password_in_env(deploy_copy):
    path = deploy_copy / "k8s/base/mlflow.yaml"
    docs = load_docs(path)
    env = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    pg = next(e for e in env if e["name"] == "PGPASSWORD")
    pg.pop("valueFrom")
    pg["value"] = "hunter2"
    dump_docs(path, docs)
    assert_reported(run(deploy_copy), "Deployment/mlflow", "env.PGPASSWORD: literal secret (Secret Keyword)")


def test_secret_with_data_in_applied_set(deploy_copy):
    (deploy_copy / "k8s/base/secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: mlflow-admin\n  namespace: california-housing\n"
        "stringData:\n  password: hunter2\n"
    )
    edit_text(
        deploy_copy / "k8s/base/kustomization.yaml",
        "  - namespace.yaml\n",
        "  - namespace.yaml\n  - secret.yaml\n",
    )
    assert_reported(run(deploy_copy), "k8s/base/secret.yaml", "Secret/mlflow-admin", "applied set")


def test_container_must_drop_capabilities(deploy_copy):
    path = deploy_copy / "k8s/train/job.yaml"
    docs = load_docs(path)
    del find(docs, "Job")["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
    dump_docs(path, docs)
    assert_reported(run(deploy_copy), "Job/train", "(train)", "capabilities.drop must contain ALL")


def test_container_must_set_resources(deploy_copy):
    path = deploy_copy / "k8s/base/kserve-runtime.yaml"
    docs = load_docs(path)
    del find(docs, "ClusterServingRuntime")["spec"]["containers"][0]["resources"]["limits"]
    dump_docs(path, docs)
    assert_reported(
        run(deploy_copy),
        "ClusterServingRuntime/kserve-mlflowserver",
        "resources.limits must set cpu and memory",
    )


def test_kustomization_resource_must_exist(deploy_copy):
    (deploy_copy / "k8s/base/networkpolicies.yaml").unlink()
    assert_reported(
        run(deploy_copy), "k8s/base: kubectl kustomize", "networkpolicies.yaml", "no such file or directory"
    )


def test_yaml_lint_error(deploy_copy):
    edit_text(
        deploy_copy / "k8s/train/job.yaml", "  backoffLimit: 1\n", "  backoffLimit: 1\n  backoffLimit: 2\n"
    )
    assert_reported(run(deploy_copy), "k8s/train/job.yaml", 'duplication of key "backoffLimit"', "[yamllint]")


# ---------------------------------------------------------------------------------------------
# Images and requirements: what k8s/ runs is what Compose builds or runs, from agreeing locks
# ---------------------------------------------------------------------------------------------


def test_k8s_image_tag_differs_from_the_built_one(deploy_copy):
    edit_text(deploy_copy / "k8s/train/kustomization.yaml", "newTag: dev", "newTag: v2")
    assert_reported(
        run(deploy_copy),
        "k8s/train/job.yaml",
        "Job/train",
        "image california-housing:v2 is neither built nor run by Compose; the project builds california-housing:dev",
    )


def test_k8s_and_compose_run_different_postgres_images(deploy_copy):
    edit_text(
        deploy_copy / "docker-compose.yml",
        "image: ${POSTGRES_IMAGE:-postgres:16-bookworm}",
        "image: ${POSTGRES_IMAGE:-postgres:17-bookworm}",
    )
    assert_reported(
        run(deploy_copy),
        "k8s/base/postgres.yaml",
        "StatefulSet/postgres",
        "image postgres:16-bookworm is neither built nor run by Compose",
    )


def test_compose_builds_a_target_the_dockerfile_lacks(deploy_copy):
    edit_text(deploy_copy / "docker-compose.yml", "    context: .\n", "    context: .\n    target: serve\n")
    assert_reported(run(deploy_copy), "Dockerfile", "no stage named serve")


def test_a_target_built_on_another_stage_keeps_its_base_and_env(deploy_copy):
    # Compose's `monitor` target is built on the `runtime` stage: ENV and base come from the stage below.
    assert run(deploy_copy) == []
    edit_text(deploy_copy / "Dockerfile", "    OMP_NUM_THREADS=1 \\\n", "")
    assert_reported(run(deploy_copy), "Dockerfile", "target monitor: ENV OMP_NUM_THREADS=1 is required")


def test_the_base_image_is_the_default_of_its_build_argument(deploy_copy):
    edit_text(
        deploy_copy / "Dockerfile", "ARG PYTHON_BASE=python:3.11-slim", "ARG PYTHON_BASE=python:3.12-slim"
    )
    assert_reported(
        run(deploy_copy), "Dockerfile", "must be based on python:3.11-slim (got python:3.12-slim)"
    )


def test_locks_disagree_on_a_shared_package(deploy_copy):
    (deploy_copy / "requirements" / "serve.lock").write_text("mlflow==0.0.1\n")
    assert_reported(
        run(deploy_copy),
        "requirements/serve.lock: pins mlflow==0.0.1 but requirements.lock pins",
        "[requirements]",
    )


# ---------------------------------------------------------------------------------------------
# 3. Compose
# ---------------------------------------------------------------------------------------------


def test_compose_required_variables_are_really_required(deploy_copy):
    # The validator fills ${VAR:?} with placeholders; without them Compose refuses the file.
    binary = compose_binary()
    assert binary is not None
    env = {k: val for k, val in os.environ.items() if not k.startswith(("POSTGRES_", "MLFLOW_"))}
    empty = deploy_copy / "empty.env"
    empty.write_text("")
    result = subprocess.run(
        [str(binary), "--env-file", str(empty), "-f", "docker-compose.yml", "config", "-q"],
        check=False,
        cwd=deploy_copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "required variable" in result.stderr


def test_lock_must_pin_what_the_roles_run(deploy_copy):
    lock = deploy_copy / "requirements" / "serve.lock"
    lock.write_text(
        "\n".join(
            line for line in lock.read_text().splitlines() if not line.lower().startswith("flask-wtf==")
        )
    )
    assert_reported(
        run(deploy_copy), "requirements/serve.lock", "does not pin flask-wtf", "basic-auth", "[requirements]"
    )


# ---------------------------------------------------------------------------------------------
# 4. Dockerfile and .dockerignore
# ---------------------------------------------------------------------------------------------


def test_dockerfile_copy_source_missing(deploy_copy):
    shutil.rmtree(deploy_copy / "projects")
    assert_reported(run(deploy_copy), "Dockerfile", "COPY source projects/ does not exist")


def test_dockerignore_must_exclude_venv(deploy_copy):
    (deploy_copy / ".dockerignore").write_text("**/__pycache__\n")
    problems = run(deploy_copy)
    assert_reported(problems, ".dockerignore", ".venv/bin/python is not excluded")
    assert_reported(problems, ".dockerignore", ".git/HEAD is not excluded")


def test_dockerignore_must_not_exclude_copy_sources(deploy_copy):
    with (deploy_copy / ".dockerignore").open("a") as handle:
        handle.write("model/\n")
    assert_reported(run(deploy_copy), "Dockerfile", "COPY source model/ is excluded by .dockerignore")


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("model/data.py", False),
        ("model/__pycache__/data.cpython-311.pyc", True),
        ("data/raw/housing.csv.dvc", False),
        ("data/raw/housing.csv", True),
        ("deploy/validate.py", True),
        ("tests/deploy/test_validate.py", True),
        (".env", True),
        ("requirements.lock", False),
    ],
)
def test_dockerignore_semantics_on_the_real_file(path, ignored):
    assert PatternMatcher(dockerignore_patterns(REPO)).matches(path) is ignored
