"""Literal secrets, found by detect-secrets with the plugins and filters ``.secrets.baseline``
records: in the tracked files, in what every commit of the history added, and (for the deploy
checks) in the values a deployment file sets.

    python -m deploy.secret_scan [--root DIR] [--no-history]     # make secrets

A finding passes only when audited: in the tree, listed in ``.secrets.baseline`` with
``"is_secret": false``; in the history, its hash is such a baseline entry's or is listed, with why,
in ``.secrets.history.json``. Findings print as ``[commit ]file:line: type``, never the value.
Exit status 0 clean, 1 findings, 2 when the baseline or git cannot be read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from detect_secrets import SecretsCollection
from detect_secrets.core import baseline, scan
from detect_secrets.exceptions import UnableToReadBaselineError
from detect_secrets.settings import transient_settings

BASELINE = ".secrets.baseline"
HISTORY = ".secrets.history.json"


@contextmanager
def configured(root: Path) -> Iterator[dict]:
    """detect-secrets set up as the baseline says; yields the baseline."""
    config = baseline.load_from_file(str(root / BASELINE))
    with transient_settings(config) as settings:
        # Scanned files may not exist in the working tree (a value's stand-in, a past commit's file).
        settings.disable_filters("detect_secrets.filters.common.is_invalid_file")
        yield config


def find_in_values(pairs: Sequence[tuple[str, str]], root: Path) -> list[tuple[int, str]]:
    """(index, secret type) of the ``(key, value)`` pairs detect-secrets finds a secret in, each
    scanned as the YAML line ``key: value``."""
    with tempfile.TemporaryDirectory() as workdir, configured(root):
        path = Path(workdir, "values.yaml")
        path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in pairs))
        return sorted({(secret.line_number - 1, secret.type) for secret in scan.scan_file(str(path))})


def unaudited(config: dict) -> list[str]:
    return [
        f"{filename}:{entry.get('line_number', '?')}: {entry['type']} is in {BASELINE} "
        "but not audited as a false positive"
        for filename, entries in config["results"].items()
        for entry in entries
        if entry.get("is_secret") is not False
    ]


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True, errors="replace"
    ).stdout


def check_tree(root: Path, config: dict) -> list[str]:
    """Secrets in the tracked files (as they are in the working tree) that the baseline lacks."""
    files = [name for name in git(root, "ls-files", "-z").split("\0") if (root / name).is_file()]
    found = SecretsCollection(root=str(root))
    found.scan_files(*files)
    audited = {
        (name, e["type"], e["hashed_secret"]) for name, entries in config["results"].items() for e in entries
    }
    return sorted(
        f"{name}:{secret.line_number}: {secret.type}"
        for name, secret in found
        if (name, secret.type, secret.secret_hash) not in audited
    )


def commit_diffs(root: Path) -> Iterator[tuple[str, str]]:
    """(commit, the lines it added as a diff) for every non-merge commit reachable from HEAD."""
    log = git(root, "log", "-p", "--no-merges", "--no-renames", "--no-color", "--format=%x00%h", "HEAD")
    for chunk in log.split("\0")[1:]:
        commit, _, diff = chunk.partition("\n")
        yield commit, diff


def check_history(root: Path, config: dict) -> list[str]:
    """Secrets any commit added whose hash is audited neither in the baseline nor in the history list."""
    allowed = {entry["hashed_secret"] for entries in config["results"].values() for entry in entries}
    history = root / HISTORY
    allowed |= set(json.loads(history.read_text())) if history.is_file() else set()
    problems = []
    for commit, diff in commit_diffs(root):
        found = SecretsCollection()
        found.scan_diff(diff)
        problems += [
            f"{commit} {filename}:{secret.line_number}: {secret.type} (hash {secret.secret_hash})"
            for filename, secret in found
            if secret.secret_hash not in allowed
        ]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.secret_scan", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="git work tree (default: the current directory)"
    )
    parser.add_argument("--no-history", action="store_true", help="scan the tracked files only")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        with configured(root) as config:
            problems = unaudited(config) + check_tree(root, config)
            if not args.no_history:
                problems += check_history(root, config)
    except (UnableToReadBaselineError, subprocess.CalledProcessError) as error:
        print(f"secret scan: cannot read {root / BASELINE} or the git history: {error!r}", file=sys.stderr)
        return 2
    print(
        "\n".join(problems)
        if problems
        else f"secret scan: no unaudited secrets ({'tree' if args.no_history else 'tree and history'})"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
