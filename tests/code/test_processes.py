"""testbed.processes on small real processes: a server's whole life, its memory, a command's peak."""

from __future__ import annotations

import sys

import pytest

from testbed.processes import (
    free_port,
    listening_addresses,
    process_env,
    run_measured,
    running_server,
    tree_rss,
)

MIB = 2**20


def test_a_server_is_up_inside_the_block_and_gone_after_it():
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    with running_server(command, port, "/", timeout=60) as server:
        assert server.base_url == f"http://127.0.0.1:{port}"
        assert listening_addresses(port) == ["127.0.0.1"]
        assert tree_rss(server.pid) > MIB
    assert server.proc.poll() is not None and listening_addresses(port) == []


def test_a_server_that_exits_before_it_answers_fails_with_its_log():
    command = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"exited with status 3 before .* answered:\nno model here"):
        with running_server(command, free_port(), "/", timeout=60):
            pass


def test_a_command_s_peak_memory_counts_its_children():
    """The parent stays small; the child it starts holds 200 MiB for a moment."""
    child = "x = bytearray(200 * 2**20); import time; time.sleep(0.5)"
    parent = f"import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', {child!r}]))"
    completed = run_measured([sys.executable, "-c", parent], process_env(), timeout=60)
    assert completed.returncode == 0 and not completed.killed_at_cap
    assert completed.peak_rss_bytes > 200 * MIB


def test_a_command_past_its_memory_cap_is_killed():
    hog = "x = bytearray(300 * 2**20); import time; time.sleep(30)"
    completed = run_measured([sys.executable, "-c", hog], process_env(), timeout=60, rss_cap=100 * MIB)
    assert completed.killed_at_cap and completed.returncode != 0 and completed.wall_seconds < 30
