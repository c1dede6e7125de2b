""".ci/check-secrets: seeded secrets in a temp git repository are reported by file:line (never by
value); documented placeholders and env / Secret references pass; the real repository passes.

Secret-looking values are assembled at run time so this file itself holds none.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from model.data import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / ".ci" / "check-secrets"

FAKE_PASSWORD = "Tr0ub4dor" + "-and-3"  # one value reused by every seeded case
AWS_KEY_ID = "AKIA" + "Q3EXAMPLE7TESTKEY"[:16]
PRIVATE_KEY = "-----" + "BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----" + "END RSA PRIVATE KEY-----\n"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"

CLEAN_FILES = {
    "README.md": "# demo\n\nConnect with `postgresql://user:password@host/db` (example).\n",
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
        "      - MLFLOW_TRACKING_PASSWORD=${MLFLOW_ADMIN_PASSWORD}\n"
        "      API_TOKEN: \"\"\n"
        "      DB_PASSWORD: $(DB_PASSWORD)\n"
    ),
    ".env.example": "POSTGRES_PASSWORD=<choose-one>\n",
    "app.py": "def connect(password):\n    return password\n",
}


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args], capture_output=True, text=True, timeout=60
    )


def git_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    return path


def test_clean_repository_passes(tmp_path):
    completed = run(git_repo(tmp_path / "repo", CLEAN_FILES))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "no secrets found" in completed.stdout


SEEDED = [
    ("yaml-password", "k8s/values.yaml", f"db:\n  host: postgres\n  password: {FAKE_PASSWORD}\n", 3,
     "literal value assigned to 'password'"),
    ("compose-env", "docker-compose.yml",
     f"services:\n  db:\n    environment:\n      POSTGRES_PASSWORD: {FAKE_PASSWORD}\n", 4, "POSTGRES_PASSWORD"),
    ("compose-env-list", "docker-compose.yml",
     f"services:\n  db:\n    environment:\n      - MLFLOW_TRACKING_PASSWORD={FAKE_PASSWORD}\n", 4,
     "MLFLOW_TRACKING_PASSWORD"),
    ("k8s-secret-stringdata", "k8s/secret.yaml",
     f"kind: Secret\nstringData:\n  flask-secret-key: {FAKE_PASSWORD}\n", 3, "flask-secret-key"),
    ("ini-password", "config/app.ini", f"[db]\npassword = {FAKE_PASSWORD}\n", 2, "password"),
    ("uri-credentials", "model/settings.py",
     f'URI = "postgresql://mlflow:{FAKE_PASSWORD}@db:5432/mlflow"\n',  # check-secrets: allow (built at run time)
     1, "URI with embedded credentials"),
    ("private-key", "deploy/key.txt", PRIVATE_KEY, 1, "private key block"),
    ("aws-key", "scripts/upload.sh", f"export AWS_ACCESS_KEY_ID={AWS_KEY_ID}\n", 1, "AWS access key id"),
    ("github-token", "notes.md", f"token {GITHUB_TOKEN}\n", 1, "GitHub token"),
    ("env-file", ".env", "POSTGRES_PASSWORD=${FROM_VAULT}\n", 1, "committed env file"),
]


@pytest.mark.parametrize("name,path,text,line,what", SEEDED, ids=[s[0] for s in SEEDED])
def test_seeded_secret_fails_naming_file_and_line(tmp_path, name, path, text, line, what):
    repo = git_repo(tmp_path / "repo", {**CLEAN_FILES, path: text})
    completed = run(repo)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    reported = completed.stdout.splitlines()
    assert any(r.startswith(f"{path}:{line}: ") and what in r for r in reported), reported
    assert len(reported) == 1, reported  # nothing in the clean files
    for secret in (FAKE_PASSWORD, AWS_KEY_ID, GITHUB_TOKEN, "MIIEowIBAAKCAQEA"):
        assert secret not in completed.stdout + completed.stderr  # reports never print the value


def test_allow_marker_and_untracked_files(tmp_path):
    repo = git_repo(tmp_path / "repo", {
        **CLEAN_FILES,
        "tests/fixture.yaml": f"password: {FAKE_PASSWORD}  # check-secrets: allow (seeded test value)\n",
    })
    (repo / "scratch.yaml").write_text(f"password: {FAKE_PASSWORD}\n")  # not tracked
    assert run(repo).returncode == 0
    untracked = run(repo, "--include-untracked")
    assert untracked.returncode == 1 and untracked.stdout.startswith("scratch.yaml:1: ")


def test_not_a_git_repository_is_a_usage_error(tmp_path):
    completed = run(tmp_path)
    assert completed.returncode == 2 and "git" in completed.stderr


def test_the_project_repository_passes():
    completed = run(PROJECT_ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
