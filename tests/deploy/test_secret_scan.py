"""``make secrets`` (``python -m deploy.secret_scan``): detect-secrets, configured by the
repository's ``.secrets.baseline``, reports seeded secrets in a temp git repository's tracked files
and in its history by file:line (never by value); audited findings and env / Secret references
pass; not a git repository is a usage error; the real repository passes, history included.

Secret-looking values are assembled at run time so this file itself holds none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.secret_scan import BASELINE, HISTORY
from model.data import PROJECT_ROOT

FAKE_PASSWORD = "Tr0ub4dor" + "-and-3"  # pragma: allowlist secret
AWS_KEY_ID = "AKIA" + "Q3EXAMPLE7TESTKEY"[:16]
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"  # pragma: allowlist secret
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"  # pragma: allowlist secret
SLACK_TOKEN = "xoxb-" + "123456789012-123456789012-" + "a1b2c3d4e5f6g7h8i9j0k1l2"
FLASK_KEY = "3f9a1c0b7e2d4a6f" * 4  # what `openssl rand -hex 32` gives  # pragma: allowlist secret

CLEAN_FILES = {
    "README.md": "# demo\n\nConnect with `postgresql://user@host/db`; libpq reads PGPASSWORD.\n",
    "k8s/deploy.yaml": (
        "env:\n"
        "  - name: PGPASSWORD\n"
        "    valueFrom:\n"
        "      secretKeyRef:\n"
        "        name: postgres-credentials\n"
        "        key: password\n"
        "  - name: DATABASE_URI\n"
        "    value: postgresql+psycopg://mlflow@postgres:5432/mlflow\n"
    ),
    "k8s/secrets.example.yaml": "stringData:\n  password: <admin-password>\n  flask-secret-key: <random-hex-string>\n",
    "docker-compose.yml": (
        "services:\n"
        "  db:\n"
        "    environment:\n"
        "      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}\n"
        "      MLFLOW_TRACKING_PASSWORD: ${MLFLOW_ADMIN_PASSWORD}\n"
        '      API_TOKEN: ""\n'
    ),
    ".env.example": "POSTGRES_PASSWORD=<choose-one>\n",
    "app.py": "def connect(password):\n    return password\n",
}

# (id, file, text, line, the detect-secrets type reported)
SEEDED = [
    (
        "yaml-password",
        "k8s/values.yaml",
        f"db:\n  host: postgres\n  password: {FAKE_PASSWORD}\n",
        3,
        "Secret Keyword",
    ),
    (
        "compose-env",
        "docker-compose.yml",
        f"services:\n  db:\n    environment:\n      POSTGRES_PASSWORD: {FAKE_PASSWORD}\n",
        4,
        "Secret Keyword",
    ),
    (
        "compose-env-list",
        "docker-compose.yml",
        f"services:\n  db:\n    environment:\n      - MLFLOW_TRACKING_PASSWORD={FAKE_PASSWORD}\n",
        4,
        "Secret Keyword",
    ),
    (
        "k8s-secret-stringdata",
        "k8s/secret.yaml",
        f"kind: Secret\nstringData:\n  flask-secret-key: {FLASK_KEY}\n",
        3,
        "Hex High Entropy String",
    ),
    ("ini-password", "config/app.ini", f"[db]\npassword = {FAKE_PASSWORD}\n", 2, "Secret Keyword"),
    (
        "uri-credentials",
        "model/settings.py",
        f'URI = "postgresql://mlflow:{FAKE_PASSWORD}@db:5432/mlflow"\n',
        1,
        "Basic Auth Credentials",
    ),
    ("private-key", "deploy/key.txt", PRIVATE_KEY, 1, "Private Key"),
    ("aws-key", "scripts/upload.sh", f"export AWS_ACCESS_KEY_ID={AWS_KEY_ID}\n", 1, "AWS Access Key"),
    ("github-token", "notes.md", f"token {GITHUB_TOKEN}\n", 1, "GitHub Token"),
    ("slack-token", "notes.md", f"webhook token {SLACK_TOKEN}\n", 1, "Slack Token"),
    ("env-file", ".env", f"POSTGRES_PASSWORD={FAKE_PASSWORD}\n", 1, "Secret Keyword"),
]


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy.secret_scan", "--root", str(root), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def write(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)


def baseline(results: dict | None = None) -> str:
    """The repository's detect-secrets configuration with these audited results."""
    config = json.loads((PROJECT_ROOT / BASELINE).read_text())
    return json.dumps({**config, "results": results or {}}, indent=2)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose one commit holds the clean files and an empty baseline."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    write(path, {**CLEAN_FILES, BASELINE: baseline()})
    git(path, "add", "-A")
    git(path, "commit", "-qm", "clean")
    return path


def test_clean_repository_passes(repo):
    completed = run(repo)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "no unaudited secrets (tree and history)" in completed.stdout


@pytest.mark.parametrize("name,path,text,line,kind", SEEDED, ids=[s[0] for s in SEEDED])
def test_seeded_secret_in_a_tracked_file_fails_naming_file_and_line(repo, name, path, text, line, kind):
    write(repo, {path: text})
    git(repo, "add", "-A")  # tracked, not committed: the tree scan finds it, the history has none
    completed = run(repo)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert completed.stdout.splitlines() == [f"{path}:{line}: {kind}"]
    for secret in (FAKE_PASSWORD, AWS_KEY_ID, GITHUB_TOKEN, SLACK_TOKEN, FLASK_KEY, "MIIEowIBAAKCAQEA"):
        assert secret not in completed.stdout + completed.stderr  # reports never print the value


def test_a_secret_removed_from_the_tree_is_still_found_in_the_history(repo):
    write(repo, {"config/app.ini": f"[db]\npassword = {FAKE_PASSWORD}\n"})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "leak")
    leak = git(repo, "rev-parse", "--short", "HEAD")
    git(repo, "rm", "-q", "config/app.ini")
    git(repo, "commit", "-qm", "remove it")
    assert run(repo, "--no-history").returncode == 0
    completed = run(repo)
    assert completed.returncode == 1
    [reported] = completed.stdout.splitlines()
    assert reported.startswith(f"{leak} config/app.ini:2: Secret Keyword (hash ")
    # Rotated, and audited as such: listed with why, by hash.
    secret_hash = reported.rsplit(" ", 1)[1].rstrip(")")
    write(repo, {HISTORY: json.dumps({secret_hash: "seeded test value, never a credential"})})
    assert run(repo).returncode == 0


def test_a_finding_passes_only_once_audited_as_a_false_positive(repo):
    write(repo, {"k8s/values.yaml": f"password: {FAKE_PASSWORD}\n"})
    git(repo, "add", "-A")
    found = subprocess.run(
        [sys.executable, "-m", "detect_secrets", "scan", "--baseline", BASELINE], cwd=repo, check=True
    )
    assert found.returncode == 0
    results = json.loads((repo / BASELINE).read_text())["results"]
    assert list(results) == ["k8s/values.yaml"]
    not_audited = run(repo, "--no-history")
    assert not_audited.returncode == 1 and "not audited as a false positive" in not_audited.stdout
    results["k8s/values.yaml"][0]["is_secret"] = False
    (repo / BASELINE).write_text(baseline(results))
    assert run(repo, "--no-history").returncode == 0


def test_inline_allowlist_pragma(repo):
    write(repo, {"tests/fixture.yaml": f"password: {FAKE_PASSWORD}  # pragma: allowlist secret\n"})
    git(repo, "add", "-A")
    assert run(repo).returncode == 0


def test_not_a_git_repository_is_a_usage_error(tmp_path):
    (tmp_path / BASELINE).write_text(baseline())
    completed = run(tmp_path)
    assert completed.returncode == 2 and "git" in completed.stderr


def test_the_project_repository_passes():
    completed = run(PROJECT_ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
