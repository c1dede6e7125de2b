"""The alias lease between real processes, through a real `mlflow server` on PostgreSQL.

* A `promote` SIGKILLed mid-promotion (lease held, champion not yet moved), then two more
  promotions of the same challenger at once: they find the dead holder's lease, one takes it
  over after the lease's duration and moves `champion`, the other refuses, and no claim is
  left behind.
* A `rollback` that holds the lease far longer than its duration, alive and renewing: the
  `rollback` waiting behind it never takes it over, and the slow one finishes its move.

The holders are the real entry points, stopped just before their champion move by
tests/integration/paused_at_crown.py. The lease's duration is shortened with
``ALIAS_LEASE_SECONDS``; nothing here asserts on wall time (waits are for observed states,
with generous timeouts; the times measured are printed). The interleavings the protocol
must survive are stepped through one call at a time in tests/code/test_lease.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from model import registry
from model.data import PROJECT_ROOT
from model.lease import DURATION_VARIABLE, LEASE_NAME, Claims, LeaseTimes
from model.registry import CHALLENGER, CHAMPION, MODEL_NAME
from model.train import TrainingConfig, fit_model, log_and_register
from testbed.mlflow_cli import mlflow_server
from testbed.processes import free_port, process_env, running_server, stop_process_group
from tests.integration.servers import temporary_database

pytestmark = pytest.mark.integration

TIMES = LeaseTimes(6.0)  # renewals every second; a silent holder is replaced after 6 s
EXPERIMENT = "lease"
PATIENCE = 600  # seconds: generous bounds for what a loaded 2-core machine may take, never asserted on


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory, split):
    """A tracking server on a fresh PostgreSQL database with version 1 (10 trees) and version 2
    (40 trees, better) of the registered model; yields the environment for entry points."""
    root = tmp_path_factory.mktemp("alias-lease")
    train_frame, test_frame = split
    with temporary_database("mlflow_lease") as database, ThreadPoolExecutor(1) as pool:
        # The models are fitted while the server migrates its fresh database.
        fitting = pool.submit(
            lambda: [fit_model(train_frame, TrainingConfig(n_estimators=n)) for n in (10, 40)]
        )
        port = free_port()
        command = mlflow_server(database, root / "artifacts", port, workers=2)
        with running_server(command, port, "/health", timeout=240) as server:
            previous = mlflow.get_tracking_uri()
            mlflow.set_tracking_uri(server.base_url)
            try:
                experiment = MlflowClient().create_experiment(EXPERIMENT)
                for model in fitting.result():
                    with mlflow.start_run(experiment_id=experiment):
                        log_and_register(model, train_frame, test_frame)
                yield process_env(
                    {
                        "MLFLOW_TRACKING_URI": server.base_url,
                        "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
                        DURATION_VARIABLE: str(TIMES.duration),
                    }
                )
            finally:
                mlflow.set_tracking_uri(previous)


@dataclass
class EntryPoint:
    """A started entry point process (leader of its own process group) and its output files."""

    proc: subprocess.Popen
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def out(self) -> str:
        return self.stdout.read_text(errors="replace")

    def lines(self, prefix: str) -> list[str]:
        return [line for line in (self.out() + self.err()).splitlines() if line.startswith(prefix)]

    def finish(self) -> int:
        return self.proc.wait(timeout=PATIENCE)


@contextlib.contextmanager
def started(env: dict, logs: Path, commands: dict[str, list[str]]):
    """Each command in its own process group, output to files (a process holding the lease never
    blocks on a full pipe); every group still running is killed on the way out."""
    processes = {}
    try:
        for name, command in commands.items():
            out, err = logs / f"{name}.out", logs / f"{name}.err"
            with open(out, "w") as stdout, open(err, "w") as stderr:
                proc = subprocess.Popen(
                    command, cwd=PROJECT_ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True
                )
            processes[name] = EntryPoint(proc, out, err)
        yield processes
    finally:
        for process in processes.values():
            stop_process_group(process.proc, grace=2)


def entry_point(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", module, *arguments]


def paused_at_crown(paused: Path, resume: Path, module: str, *arguments: str) -> list[str]:
    return entry_point("tests.integration.paused_at_crown", str(paused), str(resume), module, *arguments)


def wait_for(condition, what: str, processes: list[EntryPoint], timeout: float = PATIENCE) -> None:
    """Wait until ``condition()``; fail (with their stderr) if one of ``processes`` exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            assert process.proc.poll() is None, (
                f"exited {process.proc.returncode} before {what}:\n{process.err()[-3000:]}"
            )
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f}s"
        time.sleep(0.1)


def alias(name: str) -> str | None:
    version = registry.version_by_alias(name)
    return str(version.version) if version else None


def beats(record) -> int:
    return int(record.heartbeat.split()[0])


def waiting_for(holder: EntryPoint):
    return lambda process: any(
        f":{holder.pid} since" in line for line in process.lines("waiting for the alias lease held by ")
    )


def test_a_holder_killed_mid_promotion_is_replaced_and_one_contender_moves_champion(
    tracking_server, tmp_path, raw_data_path
):
    client, claims = MlflowClient(), Claims(MlflowClient())
    registry.crown("1", client)
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, "2")
    promote = ("projects.promote", "--data-path", str(raw_data_path))
    paused, never = tmp_path / "paused", tmp_path / "never"

    with started(tracking_server, tmp_path, {"holder": paused_at_crown(paused, never, *promote)}) as first:
        holder = first["holder"]
        wait_for(paused.exists, "the holder paused before its champion move", [holder])
        held = claims.read(LEASE_NAME)
        assert f":{holder.pid} since" in held.holder
        os.killpg(holder.pid, signal.SIGKILL)  # mid-promotion: the lease held, champion not moved
        assert holder.proc.wait(timeout=30) == -signal.SIGKILL
    killed_at = time.monotonic()
    assert claims.read(LEASE_NAME).nonce == held.nonce and alias(CHAMPION) == "1"

    # Two promotions of the same challenger at once: both find the dead holder's lease.
    with started(
        tracking_server, tmp_path, {f"contender{i}": entry_point(*promote) for i in range(2)}
    ) as second:
        contenders = list(second.values())
        codes = [contender.finish() for contender in contenders]
    replaced_after = time.monotonic() - killed_at

    winners = [c for c, code in zip(contenders, codes) if code == 0]
    losers = [c for c, code in zip(contenders, codes) if code != 0]
    assert len(winners) == 1 and len(losers) == 1, [c.err()[-3000:] for c in contenders]
    [winner], [loser] = winners, losers
    [promoted] = winner.lines("promoted: ")
    assert promoted.startswith("promoted: version 2 (rmse ") and " replaces champion version 1 " in promoted
    assert waiting_for(holder)(winner), winner.err()[-3000:]  # it took over the killed holder's lease
    assert loser.lines("refused: ") == [
        "refused: race: champion moved during promotion (version 1 when the gates ran, now 2)"
    ], loser.err()[-3000:]
    assert (alias(CHAMPION), alias(CHALLENGER)) == ("2", None)
    tags = client.get_model_version(MODEL_NAME, "2").tags
    assert tags["promotion.decision"] == "promoted" and tags["promotion.previous_champion"] == "1"
    history = sorted(
        value.split(":")[0] for key, value in tags.items() if key.startswith("promotion.history.")
    )
    assert history == ["promoted", "refused"]  # the killed holder recorded nothing
    assert [model.name for model in client.search_registered_models()] == [MODEL_NAME]  # no lease, no guard
    print(
        f"\nSIGKILLed holder replaced: both contenders done {replaced_after:.1f}s after the kill "
        f"(lease {TIMES.duration:g}s; each contender ran the gates first)"
    )


def test_a_slow_live_holder_keeps_the_lease_and_finishes_its_move(tracking_server, tmp_path):
    client, claims = MlflowClient(), Claims(MlflowClient())
    registry.crown("2", client)
    registry.set_version_tags("2", {"promotion.previous_champion": "1"}, client)
    paused, resume = tmp_path / "paused", tmp_path / "resume"
    rollback = ("projects.rollback",)
    commands = {"holder": paused_at_crown(paused, resume, *rollback), "contender": entry_point(*rollback)}
    with started(tracking_server, tmp_path, {"holder": commands["holder"]}) as first:
        holder = first["holder"]
        wait_for(paused.exists, "the holder paused before its champion move", [holder])
        held = claims.read(LEASE_NAME)
        with started(tracking_server, tmp_path, {"contender": commands["contender"]}) as second:
            contender = second["contender"]
            wait_for(
                lambda: waiting_for(holder)(contender),
                "the contender waiting for the lease",
                [holder, contender],
            )
            # The contender has watched the lease for longer than it watches a silent one before
            # taking it over (it printed its line after its first look), while the holder renewed.
            watched_from, first_beats = time.monotonic(), beats(claims.read(LEASE_NAME))
            wait_for(
                lambda: (
                    time.monotonic() - watched_from > TIMES.duration + TIMES.renew_every
                    and beats(claims.read(LEASE_NAME)) >= first_beats + 2
                ),
                "a lease duration of heartbeats",
                [holder, contender],
            )
            assert claims.read(LEASE_NAME).nonce == held.nonce and alias(CHAMPION) == "2"
            resume.touch()
            codes = holder.finish(), contender.finish()

    assert codes == (0, 1), (holder.err()[-3000:], contender.err()[-3000:])
    assert holder.lines("rolled back: ") == ["rolled back: champion is version 1 again (was version 2)"]
    assert contender.lines("refused: ") == [
        "refused: no previous champion: champion version 1 has no promotion.previous_champion tag"
    ]
    assert alias(CHAMPION) == "1"
    assert [model.name for model in client.search_registered_models()] == [MODEL_NAME]
