"""The promotion gates on plain values (no registry): each returns or raises :class:`Refusal`.

``model.promotion`` runs them in the order of ``GATES``, cheapest first, and stops at the
first refusal; each refusal is one line naming the gate and what failed.
"""

from __future__ import annotations

from mlflow.models import ModelSignature

from model import registry
from model.signatures import SIGNATURE_CHANGES, SignatureChange

GATES = ("signature", "requirements", "smoke", "coverage", "rmse")
# The coverage gate: the challenger's intervals at this level must cover the test split's
# true values this often, within the tolerance (both as fractions).
COVERAGE_LEVEL = 0.8
COVERAGE_TOLERANCE = 0.02


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
        raise Refusal("signature", "challenger has no signature")
    if champion is None:
        raise Refusal("signature", "champion has no signature to compare with")
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
    raise Refusal("signature", f"challenger differs from champion: {detail} (? = optional)")


def check_smoke(predictions, n_rows: int) -> None:
    problem = registry.prediction_problem(predictions, n_rows)
    if problem:
        raise Refusal("smoke", f"on its input example: {problem}")


def check_coverage(
    coverage: float | None, level: float = COVERAGE_LEVEL, tolerance: float = COVERAGE_TOLERANCE
) -> None:
    """The share of test values inside the challenger's ``level`` intervals is ``level ± tolerance``.

    ``coverage`` is None when the challenger offers no intervals.
    """
    low, high = level - tolerance, level + tolerance
    needs = f"needs {low:.1%}–{high:.1%}".replace("%", " %")
    if coverage is None:
        raise Refusal("coverage", f"challenger has no 'interval' parameter ({needs} at interval={level})")
    if not low - 1e-12 <= coverage <= high + 1e-12:  # NaN fails too
        covered = f"{coverage:.1%}".replace("%", " %")
        raise Refusal("coverage", f"challenger's interval={level} covers {covered} of test values ({needs})")


def check_rmse(challenger_rmse: float, champion_rmse: float, min_improvement: float = 0.0) -> None:
    """Strictly better by more than ``min_improvement``: ``challenger < champion - min_improvement``."""
    bar = champion_rmse - min_improvement
    if not challenger_rmse < bar:  # NaN fails too
        raise Refusal(
            "rmse", f"challenger {challenger_rmse:,.0f} vs champion {champion_rmse:,.0f} (needs < {bar:,.0f})"
        )
