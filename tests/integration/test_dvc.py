"""DVC for real: push the pinned raw file to a local-directory remote and pull it back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model.data import PROJECT_ROOT, ensure_raw_data, file_md5, pinned_md5

pytestmark = pytest.mark.integration


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "DVC_NO_ANALYTICS": "1"},
    )
    assert completed.returncode == 0, f"{command}: {completed.stderr}"
    return completed


def dvc(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *arguments], cwd)


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The project's DVC setup (config, pointer file) in a fresh git repository."""
    repo = tmp_path / "repo"
    (repo / "data" / "raw").mkdir(parents=True)
    run(["git", "init", "-q"], repo)
    shutil.copytree(
        PROJECT_ROOT / ".dvc",
        repo / ".dvc",
        ignore=shutil.ignore_patterns("cache", "tmp", "site-cache", "config.local"),
    )
    shutil.copy(PROJECT_ROOT / ".dvcignore", repo)
    shutil.copy(PROJECT_ROOT / "data" / "raw" / "housing.csv.dvc", repo / "data" / "raw")
    dvc("config", "--local", "core.site_cache_dir", str(tmp_path / "site-cache"), cwd=repo)
    return repo


def test_push_and_pull_round_trip_through_a_local_remote(
    project_copy: Path, raw_data_path: Path, tmp_path: Path
):
    destination = project_copy / "data" / "raw" / "housing.csv"
    assert ensure_raw_data(str(raw_data_path), destination) == str(raw_data_path)
    remote = tmp_path / "remote"
    dvc("remote", "add", "--default", "local", str(remote), cwd=project_copy)
    dvc("push", cwd=project_copy)
    md5 = pinned_md5()
    assert (remote / "files" / "md5" / md5[:2] / md5[2:]).exists()

    destination.chmod(0o644)
    destination.unlink()
    shutil.rmtree(project_copy / ".dvc" / "cache")
    # A source that cannot be read proves the bytes came from the remote.
    assert ensure_raw_data(str(tmp_path / "nowhere.csv"), destination) == "dvc pull"
    assert file_md5(destination) == md5
    assert "up to date" in dvc("status", cwd=project_copy).stdout


def test_get_data_refuses_a_file_with_one_changed_byte(
    project_copy: Path, raw_data_path: Path, tmp_path: Path
):
    corrupted = tmp_path / "corrupted.csv"
    data = bytearray(raw_data_path.read_bytes())
    data[len(data) // 2] ^= 0x20
    corrupted.write_bytes(bytes(data))
    destination = project_copy / "data" / "raw" / "housing.csv"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "projects.get_data",
            "--source",
            str(corrupted),
            "--destination",
            str(destination),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 1
    message = completed.stderr.strip()
    assert len(message.splitlines()) == 1 and "does not match the pinned" in message, message
    assert sorted(path.name for path in destination.parent.iterdir()) == ["housing.csv.dvc"]
