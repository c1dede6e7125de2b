"""Gated champion/challenger promotion and rollback, each decision recorded on the model versions.

``promote`` moves ``champion`` to the current ``challenger`` only when every gate
passes, cheapest first:

1. ``signature``: the challenger's signature is identical to the champion's, or differs
   by exactly a change ``model.signatures`` declares (the decision names it);
2. ``requirements``: the challenger's logged ``requirements.txt`` pins exactly the
   versions of ``requirements.lock``;
3. ``smoke``: it predicts one finite value per row of its own logged input example;
4. ``coverage``: on the frozen test split, its ``interval=0.8`` bounds contain
   80 % ± 2 points of the true values;
5. ``rmse``: on the frozen test split, scored now by ``model.evaluate.score_model``
   for both models, ``challenger_rmse < champion_rmse - min_improvement``.

The gates themselves are ``model.gates`` (all but ``requirements``, which is here).

MLflow has no compare-and-set on aliases, so the champion is re-read under
``registry.alias_lock`` right before the alias moves; if it is no longer the version
the gates compared against, the promotion is refused ("champion moved during
promotion"). ``rollback`` takes the same lock.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.models import Model
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from model import evaluate, packaging, registry
from model.gates import COVERAGE_LEVEL, Refusal, check_coverage, check_rmse, check_signature, check_smoke

PROMOTION = "promotion."
ROLLBACK = "rollback."
PREVIOUS_CHAMPION_TAG = f"{PROMOTION}previous_champion"


@dataclass
class Findings:
    """What the gates measured on the way (None or empty where a gate was not reached)."""

    challenger_rmse: float | None = None
    champion_rmse: float | None = None
    coverage: float | None = None  # of the challenger's interval=COVERAGE_LEVEL on the test split
    signature_change: str = ""  # the declared change (model.signatures) the signature gate let through


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


# ----------------------------------------------------------------------------------------------
# The requirements gate (the others are in model.gates): raises Refusal or returns None.
# ----------------------------------------------------------------------------------------------


def _pinned(line: str) -> tuple[str, str] | None:
    """(canonical name, version) of a ``package==version`` requirement, else None."""
    try:
        requirement = Requirement(line)
    except InvalidRequirement:
        return None
    specifiers = list(requirement.specifier)
    if len(specifiers) != 1 or specifiers[0].operator != "==":
        return None
    return canonicalize_name(requirement.name), specifiers[0].version


def check_requirements(lines: Iterable[str], pins: Mapping[str, str]) -> None:
    """Every logged requirement is ``package==version`` with the lock's version."""
    locked = {canonicalize_name(package): version for package, version in pins.items()}
    requirements = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not requirements:
        raise Refusal("requirements", "challenger logged no requirements")
    wrong = []
    for line in requirements:
        pinned = _pinned(line)
        if pinned is None:
            wrong.append(f"{line} (not pinned with ==)")
        elif pinned[0] not in locked:
            wrong.append(f"{line} (not in requirements.lock)")
        elif pinned[1] != locked[pinned[0]]:
            wrong.append(f"{line} (lock: {locked[pinned[0]]})")
    if wrong:
        differ = f"{len(wrong)} of {len(requirements)} requirements differ from requirements.lock"
        raise Refusal("requirements", f"{differ}: " + ", ".join(wrong))


# ----------------------------------------------------------------------------------------------
# Registry-facing flow
# ----------------------------------------------------------------------------------------------


@dataclass
class _Artifact:
    directory: Path
    mlmodel: Model

    @classmethod
    def download(cls, version: str, into: Path) -> _Artifact:
        uri, destination = registry.version_uri(version), str(into / f"v{version}")
        directory = Path(mlflow.artifacts.download_artifacts(uri, dst_path=destination))
        return cls(directory, Model.load(str(directory)))

    def requirements(self) -> list[str]:
        path = self.directory / "requirements.txt"
        return path.read_text().splitlines() if path.exists() else []

    def load(self):
        return mlflow.pyfunc.load_model(str(self.directory))


def _gate(
    challenger: str, champion: str | None, test_frame, min_improvement: float, workdir: Path, found: Findings
) -> None:
    """Run every gate, recording what each measured in ``found``; raise Refusal at the first that fails."""
    candidate = _Artifact.download(challenger, workdir)
    incumbent = _Artifact.download(champion, workdir) if champion else None
    if incumbent:
        change = check_signature(candidate.mlmodel.signature, incumbent.mlmodel.signature)
        found.signature_change = change.name if change else ""
    check_requirements(candidate.requirements(), packaging.locked_versions())
    model = _smoke_tested(candidate)
    found.coverage = evaluate.logged_coverage(model, test_frame, COVERAGE_LEVEL, prefix="challenger_")
    check_coverage(found.coverage)
    found.challenger_rmse = evaluate.score_model(model, test_frame, prefix="challenger_")["challenger_rmse"]
    if incumbent is None:
        return
    champion_scores = evaluate.score_model(incumbent.load(), test_frame, prefix="champion_")
    found.champion_rmse = champion_scores["champion_rmse"]
    check_rmse(found.challenger_rmse, found.champion_rmse, min_improvement)


def _smoke_tested(candidate: _Artifact):
    """The loaded challenger, once it predicted one finite value per row of its input example."""
    try:
        model = candidate.load()
        example = candidate.mlmodel.load_input_example(str(candidate.directory))
        if example is None:
            raise Refusal("smoke", "challenger logged no input example")
        predictions = model.predict(example)
    except Refusal:
        raise
    except Exception as error:  # whatever the artifact raises is the gate's finding
        raise Refusal("smoke", f"{type(error).__name__}: {error}".splitlines()[0]) from error
    check_smoke(predictions, len(example))
    return model


def promote(data_path: Path, min_improvement: float = 0.0, client: MlflowClient | None = None) -> Decision:
    """One tracked run: gate the ``challenger`` against the ``champion`` and move the alias if it wins."""
    client = client or MlflowClient()
    with mlflow.start_run() as run:
        decision = _promote(Path(data_path), min_improvement, client, run.info.run_id)
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


def _promote(data_path: Path, min_improvement: float, client: MlflowClient, run_id: str) -> Decision:
    challenger = registry.challenger_version(client)
    if challenger is None:
        refusal = Refusal("no challenger", "no version has the alias 'challenger'")
        return Decision(False, refusal.message, "challenger")
    champion = registry.champion_version(client)
    challenger_number = str(challenger.version)
    champion_number = str(champion.version) if champion else None

    found = Findings()

    def decide(refusal: Refusal | None) -> Decision:
        if refusal is None:
            message = _promoted_message(challenger_number, champion_number, found)
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
            _gate(challenger_number, champion_number, test_frame, min_improvement, Path(workdir), found)
    except Refusal as refusal:
        return decide(refusal)

    try:
        with registry.alias_lock(client):
            # No compare-and-set in MLflow: re-read under the lock every alias mover takes.
            current = registry.champion_version(client)
            current_number = str(current.version) if current else None
            if current_number != champion_number:
                was, now = champion_number or "none", current_number or "none"
                moved = f"champion moved during promotion (version {was} when the gates ran, now {now})"
                return decide(Refusal("race", moved))
            registry.crown(challenger_number, client)
            still_challenger = registry.challenger_version(client)
            if still_challenger and str(still_challenger.version) == challenger_number:
                registry.remove_alias(registry.CHALLENGER, client)
            return decide(None)
    except registry.LockTimeout as error:
        return decide(Refusal("lock", str(error)))


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


def rollback(client: MlflowClient | None = None) -> Rollback:
    """One tracked run: point ``champion`` back at the version ``promote`` recorded it replaced."""
    client = client or MlflowClient()
    with mlflow.start_run() as run:
        try:
            with registry.alias_lock(client):
                result = _rollback(client, run.info.run_id)
        except registry.LockTimeout as error:
            result = Rollback(False, Refusal("lock", str(error)).message)
        mlflow.set_tags(
            {
                f"{ROLLBACK}decision": "rolled_back" if result.moved else "refused",
                f"{ROLLBACK}message": result.message,
                f"{ROLLBACK}from_version": result.from_version or "",
                f"{ROLLBACK}to_version": result.to_version or "",
            }
        )
    return result


def _rollback(client: MlflowClient, run_id: str) -> Rollback:
    """Under the alias lock."""
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
