"""Gated champion/challenger promotion and rollback, each decision recorded on the model versions.

``promote`` moves ``champion`` to the current ``challenger`` only when every gate
passes, cheapest first:

1. ``signature``: the challenger's signature is identical to the champion's;
2. ``requirements``: the challenger's logged ``requirements.txt`` pins exactly the
   versions of ``requirements.lock``;
3. ``smoke``: it predicts one finite value per row of its own logged input example;
4. ``rmse``: on the frozen test split, scored now by ``model.evaluate.score_model``
   for both models, ``challenger_rmse < champion_rmse - min_improvement``.

MLflow has no compare-and-set on aliases, so the champion is re-read under
``registry.alias_lock`` right before the alias moves; if it is no longer the version
the gates compared against, the promotion is refused ("champion moved during
promotion"). ``rollback`` takes the same lock.
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import mlflow
from mlflow import MlflowClient
from mlflow.models import Model, ModelSignature
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from model import evaluate, packaging, registry

PROMOTION = "promotion."
ROLLBACK = "rollback."
PREVIOUS_CHAMPION_TAG = f"{PROMOTION}previous_champion"
GATES = ("signature", "requirements", "smoke", "rmse")


class Refusal(Exception):
    """A gate (or the registry state) forbids moving the alias."""

    def __init__(self, gate: str, detail: str):
        super().__init__(f"{gate} gate: {detail}" if gate in GATES else f"{gate}: {detail}")
        self.gate = gate
        self.detail = detail
        # (challenger, champion) test RMSEs when the refusal came after scoring.
        self.rmses: tuple[float | None, float | None] = (None, None)

    @property
    def message(self) -> str:
        return f"refused: {self}"


@dataclass(frozen=True)
class Decision:
    """What ``promote`` did, with the one line that says so (versions are registry version numbers)."""

    moved: bool
    message: str
    gate: str = ""
    challenger: str | None = None
    champion: str | None = None
    challenger_rmse: float | None = None
    champion_rmse: float | None = None


# ----------------------------------------------------------------------------------------------
# Gates on plain values (no registry): each raises Refusal or returns None.
# ----------------------------------------------------------------------------------------------


def _specs(schema) -> list[str]:
    if schema is None:
        return []
    return [
        f"{spec.get('name', '?')}:{spec.get('type', '?')}{'' if spec.get('required', True) else '?'}"
        for spec in schema.to_dict()
    ]


def check_signature(challenger: ModelSignature | None, champion: ModelSignature | None) -> None:
    """The challenger must accept and return exactly what the champion does."""
    if challenger is None:
        raise Refusal("signature", "challenger has no signature")
    if champion is None:
        raise Refusal("signature", "champion has no signature to compare with")
    if challenger.to_dict() == champion.to_dict():
        return
    differences = []
    for part in ("inputs", "outputs", "params"):
        ours, theirs = _specs(getattr(challenger, part)), _specs(getattr(champion, part))
        if ours == theirs:
            continue
        lacks = [spec for spec in theirs if spec not in ours]
        adds = [spec for spec in ours if spec not in theirs]
        if lacks or adds:
            differences.append(f"{part}: lacks {lacks}, adds {adds} (? = optional)")
        else:
            differences.append(f"{part}: same columns in another order")
    raise Refusal("signature", "challenger differs from champion: " + "; ".join(differences))


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


def check_smoke(predictions, n_rows: int) -> None:
    problem = registry.prediction_problem(predictions, n_rows)
    if problem:
        raise Refusal("smoke", f"on its input example: {problem}")


def check_rmse(challenger_rmse: float, champion_rmse: float, min_improvement: float = 0.0) -> None:
    """Strictly better by more than ``min_improvement``: ``challenger < champion - min_improvement``."""
    bar = champion_rmse - min_improvement
    if not challenger_rmse < bar:  # NaN fails too
        raise Refusal(
            "rmse", f"challenger {challenger_rmse:,.0f} vs champion {champion_rmse:,.0f} (needs < {bar:,.0f})"
        )


# ----------------------------------------------------------------------------------------------
# Registry-facing flow
# ----------------------------------------------------------------------------------------------


@dataclass
class _Artifact:
    directory: Path
    mlmodel: Model

    @classmethod
    def download(cls, version: str, into: Path) -> "_Artifact":
        uri, destination = registry.version_uri(version), str(into / f"v{version}")
        directory = Path(mlflow.artifacts.download_artifacts(uri, dst_path=destination))
        return cls(directory, Model.load(str(directory)))

    def requirements(self) -> list[str]:
        path = self.directory / "requirements.txt"
        return path.read_text().splitlines() if path.exists() else []

    def load(self):
        return mlflow.pyfunc.load_model(str(self.directory))


def _gate(challenger: str, champion: str | None, test_frame, min_improvement: float, workdir: Path):
    """Run every gate; return (challenger_rmse, champion_rmse) or raise Refusal (rmses on the exception)."""
    candidate = _Artifact.download(challenger, workdir)
    incumbent = _Artifact.download(champion, workdir) if champion else None
    if incumbent:
        check_signature(candidate.mlmodel.signature, incumbent.mlmodel.signature)
    check_requirements(candidate.requirements(), packaging.locked_versions())
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
    challenger_rmse = evaluate.score_model(model, test_frame, prefix="challenger_")["challenger_rmse"]
    if incumbent is None:
        return challenger_rmse, None
    champion_rmse = evaluate.score_model(incumbent.load(), test_frame, prefix="champion_")["champion_rmse"]
    try:
        check_rmse(challenger_rmse, champion_rmse, min_improvement)
    except Refusal as refusal:
        refusal.rmses = (challenger_rmse, champion_rmse)
        raise
    return challenger_rmse, champion_rmse


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

    def decide(refusal: Refusal | None, rmses=(None, None)) -> Decision:
        if refusal is None:
            message = _promoted_message(challenger_number, champion_number, *rmses)
            decision = Decision(True, message, "", challenger_number, champion_number, *rmses)
        else:
            decision = Decision(
                False, refusal.message, refusal.gate, challenger_number, champion_number, *rmses
            )
        _record_promotion(decision, min_improvement, run_id, client)
        return decision

    if champion_number == challenger_number:
        return decide(Refusal("challenger", f"version {challenger_number} already is champion"))
    try:
        with tempfile.TemporaryDirectory() as workdir:
            test_frame = evaluate.load_test_split(data_path)
            rmses = _gate(challenger_number, champion_number, test_frame, min_improvement, Path(workdir))
    except Refusal as refusal:
        return decide(refusal, refusal.rmses)

    try:
        with registry.alias_lock(client):
            # No compare-and-set in MLflow: re-read under the lock every alias mover takes.
            current = registry.champion_version(client)
            current_number = str(current.version) if current else None
            if current_number != champion_number:
                was, now = champion_number or "none", current_number or "none"
                moved = f"champion moved during promotion (version {was} when the gates ran, now {now})"
                return decide(Refusal("race", moved), rmses)
            registry.crown(challenger_number, client)
            still_challenger = registry.challenger_version(client)
            if still_challenger and str(still_challenger.version) == challenger_number:
                registry.remove_alias(registry.CHALLENGER, client)
            return decide(None, rmses)
    except registry.LockTimeout as error:
        return decide(Refusal("lock", str(error)), rmses)


def _promoted_message(
    challenger: str, champion: str | None, challenger_rmse: float, champion_rmse: float | None
) -> str:
    if champion is None:
        return f"promoted: version {challenger} (rmse {challenger_rmse:,.0f}) is the first champion"
    return (
        f"promoted: version {challenger} (rmse {challenger_rmse:,.0f}) replaces champion version {champion} "
        f"(rmse {champion_rmse:,.0f})"
    )


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
