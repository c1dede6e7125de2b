"""Gated champion/challenger promotion and rollback, each decision recorded on the model versions.

``promote`` moves ``champion`` to the current ``challenger`` only when every gate of
``model.gates`` passes (``gates.run`` is their order). The gates run without the lease;
the alias move runs under ``model.lease.alias_lease``, and since MLflow has no
compare-and-set on aliases, the champion is re-read under the lease right before it
moves: if it is no longer the version the gates compared against, the promotion is
refused ("champion moved during promotion"). ``rollback`` takes the same lease. Both
check the lease is still theirs before each alias move.
"""

from __future__ import annotations

import math
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from model import evaluate, gates, registry
from model.gates import Findings, Refusal
from model.lease import AliasLease, LeaseError, alias_lease

PROMOTION = "promotion."
ROLLBACK = "rollback."
PREVIOUS_CHAMPION_TAG = f"{PROMOTION}previous_champion"


def print_waiting(line: str) -> None:
    """The entry points' ``on_wait``: the line on stderr at once (the verdict comes later)."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Decision:
    """What ``promote`` did, with the one line that says so (versions are registry version numbers)."""

    moved: bool
    message: str
    gate: str = ""
    challenger: str | None = None
    champion: str | None = None
    findings: Findings = field(default_factory=Findings)

    @property
    def challenger_rmse(self) -> float | None:
        return self.findings.challenger_rmse

    @property
    def champion_rmse(self) -> float | None:
        return self.findings.champion_rmse


def _download(version: str, into: Path) -> gates.Candidate:
    uri = registry.version_uri(version)
    return gates.Candidate.at(
        Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(into / f"v{version}")))
    )


def promote(
    data_path: Path,
    min_improvement: float = 0.0,
    client: MlflowClient | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Decision:
    """One tracked run: gate the ``challenger`` against the ``champion`` and move the alias if it wins.

    ``on_wait`` gets one line if another process holds the alias lease.
    """
    client = client or MlflowClient()
    with mlflow.start_run() as run:
        decision = _promote(Path(data_path), min_improvement, client, run.info.run_id, on_wait)
        mlflow.set_tags(
            {
                f"{PROMOTION}decision": "promoted" if decision.moved else "refused",
                f"{PROMOTION}gate": decision.gate or "none",
                f"{PROMOTION}message": decision.message,
                f"{PROMOTION}challenger_version": decision.challenger or "",
                f"{PROMOTION}champion_version": decision.champion or "",
            }
        )
    return decision


def _promote(
    data_path: Path,
    min_improvement: float,
    client: MlflowClient,
    run_id: str,
    on_wait: Callable[[str], None] | None,
) -> Decision:
    challenger = registry.challenger_version(client)
    if challenger is None:
        refusal = Refusal("no challenger", "no version has the alias 'challenger'")
        return Decision(False, refusal.message, "challenger")
    champion = registry.champion_version(client)
    challenger_number = str(challenger.version)
    champion_number = str(champion.version) if champion else None

    found = Findings()

    def decide(refusal: Refusal | None, note: str = "") -> Decision:
        if refusal is None:
            message = _promoted_message(challenger_number, champion_number, found) + note
            decision = Decision(True, message, "", challenger_number, champion_number, found)
        else:
            decision = Decision(
                False, refusal.message, refusal.gate, challenger_number, champion_number, found
            )
        _record_promotion(decision, min_improvement, run_id, client)
        return decision

    if champion_number == challenger_number:
        return decide(Refusal("challenger", f"version {challenger_number} already is champion"))
    try:
        with tempfile.TemporaryDirectory() as workdir:
            test_frame = evaluate.load_test_split(data_path)
            candidate = _download(challenger_number, Path(workdir))
            incumbent = _download(champion_number, Path(workdir)) if champion_number else None
            gates.run(candidate, incumbent, test_frame, min_improvement, found)
    except Refusal as refusal:
        return decide(refusal)

    try:
        with alias_lease(client, on_wait=on_wait) as lease:
            # No compare-and-set in MLflow: re-read under the lease every champion mover takes.
            current = registry.champion_version(client)
            current_number = str(current.version) if current else None
            if current_number != champion_number:
                was, now = champion_number or "none", current_number or "none"
                moved = f"champion moved during promotion (version {was} when the gates ran, now {now})"
                return decide(Refusal("race", moved))
            lease.check()
            registry.crown(challenger_number, client)
            return decide(None, _drop_challenger_alias(challenger_number, lease, client))
    except LeaseError as error:
        return decide(Refusal("lease", str(error)))


def _drop_challenger_alias(version: str, lease: AliasLease, client: MlflowClient) -> str:
    """Remove ``challenger`` if it still points at the new champion ``version`` (a `train` that
    registered a newer one meanwhile keeps its alias); a note for the message if the lease
    was lost first."""
    try:
        lease.check()
    except LeaseError as error:
        return f"; the challenger alias stays on it ({error})"
    still_challenger = registry.challenger_version(client)
    if still_challenger and str(still_challenger.version) == version:
        registry.remove_alias(registry.CHALLENGER, client)
    return ""


def _promoted_message(challenger: str, champion: str | None, found: Findings) -> str:
    if champion is None:
        message = f"promoted: version {challenger} (rmse {found.challenger_rmse:,.0f}) is the first champion"
    else:
        message = (
            f"promoted: version {challenger} (rmse {found.challenger_rmse:,.0f}) replaces champion version "
            f"{champion} (rmse {found.champion_rmse:,.0f})"
        )
    if found.signature_change:
        message += f"; signature changed as declared: {found.signature_change}"
    return message


def _stamp(at: str, run_id: str) -> str:
    """A tag-key-safe, sortable suffix: ``20261126T085227123456Z-<run>``."""
    return re.sub(r"[^0-9TZ]", "", at) + f"-{run_id[:8]}"


def _record_promotion(decision: Decision, min_improvement: float, run_id: str, client: MlflowClient) -> None:
    """Tags on the challenger (summary + one history line) and, when promoted, on the replaced champion.

    A refusal about a version that is champion right now (a concurrent promotion won
    the race for it) goes to the history only, so the champion's summary keeps saying
    how it became champion.
    """
    if decision.challenger is None:
        return
    at = registry.utc_now()
    history = {f"{PROMOTION}history.{_stamp(at, run_id)}": f"{decision.message} (run {run_id})"}
    current = registry.champion_version(client)
    if not decision.moved and current is not None and str(current.version) == decision.challenger:
        registry.set_version_tags(decision.challenger, history, client)
        return
    summary = {
        f"{PROMOTION}decision": "promoted" if decision.moved else "refused",
        f"{PROMOTION}gate": decision.gate or "none",
        f"{PROMOTION}message": decision.message,
        f"{PROMOTION}challenger_rmse": _number(decision.challenger_rmse),
        f"{PROMOTION}champion_rmse": _number(decision.champion_rmse),
        f"{PROMOTION}challenger_coverage": _number(decision.findings.coverage),
        f"{PROMOTION}signature_change": decision.findings.signature_change or "none",
        f"{PROMOTION}champion_version": decision.champion or "none",
        f"{PROMOTION}min_improvement": min_improvement,
        f"{PROMOTION}at": at,
        f"{PROMOTION}run_id": run_id,
    }
    if decision.moved:
        summary[PREVIOUS_CHAMPION_TAG] = decision.champion or "none"
    registry.set_version_tags(decision.challenger, summary | history, client)
    if decision.moved and decision.champion:
        registry.set_version_tags(
            decision.champion,
            {f"{PROMOTION}replaced_by": decision.challenger, f"{PROMOTION}replaced_at": at},
            client,
        )


def _number(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


@dataclass(frozen=True)
class Rollback:
    """What ``rollback`` did: ``champion`` moved from ``from_version`` to ``to_version``, or not."""

    moved: bool
    message: str
    from_version: str | None = None
    to_version: str | None = None


def rollback(client: MlflowClient | None = None, on_wait: Callable[[str], None] | None = None) -> Rollback:
    """One tracked run: point ``champion`` back at the version ``promote`` recorded it replaced.

    ``on_wait`` gets one line if another process holds the alias lease.
    """
    client = client or MlflowClient()
    with mlflow.start_run() as run:
        try:
            with alias_lease(client, on_wait=on_wait) as lease:
                result = _rollback(client, run.info.run_id, lease)
        except LeaseError as error:
            result = Rollback(False, Refusal("lease", str(error)).message)
        mlflow.set_tags(
            {
                f"{ROLLBACK}decision": "rolled_back" if result.moved else "refused",
                f"{ROLLBACK}message": result.message,
                f"{ROLLBACK}from_version": result.from_version or "",
                f"{ROLLBACK}to_version": result.to_version or "",
            }
        )
    return result


def _rollback(client: MlflowClient, run_id: str, lease: AliasLease) -> Rollback:
    """Under the alias lease."""
    current = registry.champion_version(client)
    if current is None:
        return Rollback(False, Refusal("no champion", "nothing to roll back").message)
    number = str(current.version)
    at = registry.utc_now()
    history_key = f"{ROLLBACK}history.{_stamp(at, run_id)}"
    previous = current.tags.get(PREVIOUS_CHAMPION_TAG)
    if previous is None:
        problem = f"champion version {number} has no {PREVIOUS_CHAMPION_TAG} tag"
    elif previous == "none":
        problem = f"champion version {number} was promoted when there was none"
    elif registry.get_version(previous, client) is None:
        problem = f"version {previous} (recorded by champion {number}) is gone"
    else:
        problem = None
    refusal = Refusal("no previous champion", problem) if problem else None
    if refusal is not None:
        registry.set_version_tags(number, {history_key: f"{refusal.message} (run {run_id})"}, client)
        return Rollback(False, refusal.message, number)

    lease.check()
    registry.crown(previous, client)
    message = f"rolled back: champion is version {previous} again (was version {number})"
    registry.set_version_tags(
        number,
        {
            f"{ROLLBACK}rolled_back_at": at,
            f"{ROLLBACK}restored_version": previous,
            f"{ROLLBACK}run_id": run_id,
            history_key: f"{message} (run {run_id})",
        },
        client,
    )
    registry.set_version_tags(
        previous,
        {f"{ROLLBACK}restored_at": at, f"{ROLLBACK}replaced_version": number, f"{ROLLBACK}run_id": run_id},
        client,
    )
    return Rollback(True, message, number, previous)
