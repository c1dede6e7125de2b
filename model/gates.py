"""The promotion gates, in the order :func:`run` runs them (cheapest first), each a small
function that raises :class:`GateRefusal` with its one line or returns what it found.

``model.promotion`` downloads both versions, calls :func:`run` and moves the alias only
when it returns; the first refusal stops it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc import PyFuncModel
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from model import evaluate, packaging, registry
from model.signatures import SIGNATURE_CHANGES, SignatureChange

# The coverage gate: the challenger's intervals at this level must cover the test split's
# true values this often, within the tolerance (both as fractions).
COVERAGE_LEVEL = 0.8
COVERAGE_TOLERANCE = 0.02


class Refusal(Exception):
    """The registry's state, or a gate, forbids moving the alias; ``gate`` names which."""

    suffix = ""

    def __init__(self, gate: str, detail: str):
        super().__init__(f"{gate}{self.suffix}: {detail}")
        self.gate = gate
        self.detail = detail

    @property
    def message(self) -> str:
        return f"refused: {self}"


class GateRefusal(Refusal):
    """A gate's refusal: ``refused: <gate> gate: <detail>``."""

    suffix = " gate"


@dataclass
class Findings:
    """What the gates measured on the way (None or empty where a gate was not reached)."""

    challenger_rmse: float | None = None
    champion_rmse: float | None = None
    coverage: float | None = None  # of the challenger's interval=COVERAGE_LEVEL on the test split
    signature_change: str = ""  # the declared change (model.signatures) the signature gate let through


@dataclass(frozen=True)
class Candidate:
    """A model version's artifact as the gates read it, downloaded into ``directory``."""

    directory: Path
    mlmodel: Model

    @classmethod
    def at(cls, directory: Path) -> Candidate:
        return cls(directory, Model.load(str(directory)))

    def requirements(self) -> list[str]:
        path = self.directory / "requirements.txt"
        return path.read_text().splitlines() if path.exists() else []

    def input_example(self) -> pd.DataFrame | None:
        return self.mlmodel.load_input_example(str(self.directory))

    def load(self) -> PyFuncModel:
        return mlflow.pyfunc.load_model(str(self.directory))


def run(
    challenger: Candidate,
    champion: Candidate | None,
    test_frame: pd.DataFrame,
    min_improvement: float,
    found: Findings,
) -> None:
    """Every gate, in order; raise the first refusal. What each measured goes into ``found``
    (and the scores into the active run). Without a champion, ``signature`` and ``rmse``
    have nothing to compare with and are skipped."""
    if champion is not None:
        change = check_signature(challenger.mlmodel.signature, champion.mlmodel.signature)
        found.signature_change = change.name if change else ""
    check_requirements(challenger.requirements(), packaging.locked_versions())
    model = smoke_tested(challenger)
    found.coverage = evaluate.logged_coverage(model, test_frame, COVERAGE_LEVEL, prefix="challenger_")
    check_coverage(found.coverage)
    found.challenger_rmse = evaluate.score_model(model, test_frame, "challenger_")["challenger_rmse"]
    if champion is None:
        return
    found.champion_rmse = evaluate.score_model(champion.load(), test_frame, "champion_")["champion_rmse"]
    check_rmse(found.challenger_rmse, found.champion_rmse, min_improvement)


# ----------------------------------------------------------------------------------------------
# 1. signature
# ----------------------------------------------------------------------------------------------


def _specs(schema) -> list[str]:
    """``name:type`` per column (``?`` when optional) or parameter (``=default``)."""
    if schema is None:
        return []
    specs = []
    for spec in schema.to_dict():
        optional = "" if spec.get("required", True) else "?"
        default = f"={spec['default']}" if "default" in spec else ""
        specs.append(f"{spec.get('name', '?')}:{spec.get('type', '?')}{optional}{default}")
    return specs


def check_signature(
    challenger: ModelSignature | None,
    champion: ModelSignature | None,
    declared: tuple[SignatureChange, ...] = SIGNATURE_CHANGES,
) -> SignatureChange | None:
    """The challenger must accept and return exactly what the champion does, or differ by
    exactly a change ``model.signatures`` declares (returned, for the record)."""
    if challenger is None:
        raise GateRefusal("signature", "challenger has no signature")
    if champion is None:
        raise GateRefusal("signature", "champion has no signature to compare with")
    if challenger.to_dict() == champion.to_dict():
        return None
    for change in declared:
        if change.allows(champion, challenger):
            return change
    differences = []
    for part in ("inputs", "outputs", "params"):
        ours, theirs = _specs(getattr(challenger, part)), _specs(getattr(champion, part))
        if ours == theirs:
            continue
        lacks = [spec for spec in theirs if spec not in ours]
        adds = [spec for spec in ours if spec not in theirs]
        if lacks or adds:
            differences.append(f"{part}: lacks {lacks}, adds {adds}")
        else:
            differences.append(f"{part}: same columns in another order")
    detail = "; ".join(differences)
    raise GateRefusal("signature", f"challenger differs from champion: {detail} (? = optional)")


# ----------------------------------------------------------------------------------------------
# 2. requirements
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
        raise GateRefusal("requirements", "challenger logged no requirements")
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
        raise GateRefusal("requirements", f"{differ}: " + ", ".join(wrong))


# ----------------------------------------------------------------------------------------------
# 3. smoke
# ----------------------------------------------------------------------------------------------


def smoke_tested(candidate: Candidate) -> PyFuncModel:
    """The loaded challenger, once it predicted its own logged input example (:func:`check_smoke`)."""
    try:
        model = candidate.load()
        example = candidate.input_example()
        if example is None:
            raise GateRefusal("smoke", "challenger logged no input example")
        predictions = model.predict(example)
    except Refusal:
        raise
    except Exception as error:  # whatever the artifact raises is the gate's finding
        raise GateRefusal("smoke", f"{type(error).__name__}: {error}".splitlines()[0]) from error
    check_smoke(predictions, len(example))
    return model


def check_smoke(predictions, n_rows: int) -> None:
    """One finite value per row."""
    problem = registry.prediction_problem(predictions, n_rows)
    if problem:
        raise GateRefusal("smoke", f"on its input example: {problem}")


# ----------------------------------------------------------------------------------------------
# 4. coverage
# ----------------------------------------------------------------------------------------------


def check_coverage(
    coverage: float | None, level: float = COVERAGE_LEVEL, tolerance: float = COVERAGE_TOLERANCE
) -> None:
    """The share of test values inside the challenger's ``level`` intervals is ``level ± tolerance``.

    ``coverage`` is None when the challenger offers no intervals.
    """
    low, high = level - tolerance, level + tolerance
    needs = f"needs {low:.1%}–{high:.1%}".replace("%", " %")
    if coverage is None:
        raise GateRefusal("coverage", f"challenger has no 'interval' parameter ({needs} at interval={level})")
    if not low - 1e-12 <= coverage <= high + 1e-12:  # NaN fails too
        covered = f"{coverage:.1%}".replace("%", " %")
        raise GateRefusal(
            "coverage", f"challenger's interval={level} covers {covered} of test values ({needs})"
        )


# ----------------------------------------------------------------------------------------------
# 5. rmse
# ----------------------------------------------------------------------------------------------


def check_rmse(challenger_rmse: float, champion_rmse: float, min_improvement: float = 0.0) -> None:
    """Strictly better by more than ``min_improvement``: ``challenger < champion - min_improvement``."""
    bar = champion_rmse - min_improvement
    if not challenger_rmse < bar:  # NaN fails too
        raise GateRefusal(
            "rmse", f"challenger {challenger_rmse:,.0f} vs champion {champion_rmse:,.0f} (needs < {bar:,.0f})"
        )
