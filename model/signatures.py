"""The planned changes of the served signature, declared so that promotion lets them through.

The signature is what every server advertises and enforces: a challenger whose signature
differs from the champion's would change the API under every caller. The promotion's
signature gate (``model.gates.check_signature``) therefore refuses any difference, except
one declared here: a change from exactly ``before`` (the champion's signature) to exactly
``after`` (the challenger's). A promotion through a declared change says so in its one
line and in the version's ``promotion.signature_change`` tag; nothing passes silently.

To change ``model.packaging.SIGNATURE``: append a :class:`SignatureChange` whose ``after``
is the new signature, with why it is safe for callers (``tests/code/test_gates.py`` holds
the last ``after`` equal to ``SIGNATURE``). The outputs and parameters of both ends are
written out here, not derived from ``SIGNATURE``, so a later edit of ``SIGNATURE`` cannot
widen an old declaration. The inputs are the input contract's (``model.contract``): no
declared change has touched them. A change of the inputs is declared like any other; its
``before``, and the inputs of every earlier change, then spell out the inputs as they were
(``tests/code/test_packaging.py`` spells out today's, so such a change cannot go unnoticed).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from model.contract import INPUT_SCHEMA


@dataclass(frozen=True)
class SignatureChange:
    """One declared change: its name, why callers are safe, and its two exact ends."""

    name: str
    why: str
    before: ModelSignature
    after: ModelSignature

    def allows(self, champion: ModelSignature, challenger: ModelSignature) -> bool:
        return champion.to_dict() == self.before.to_dict() and challenger.to_dict() == self.after.to_dict()


# No declared change touched the inputs yet: both ends take the input contract's.
_RAW_INPUTS = INPUT_SCHEMA

PREDICTION_INTERVALS = SignatureChange(
    name="prediction intervals",
    why=(
        "adds the inference parameter `interval` (default null) and two optional output columns "
        "filled only when it is set: a request without it gets exactly the previous answer"
    ),
    before=ModelSignature(inputs=_RAW_INPUTS, outputs=Schema([ColSpec("double", "median_house_value")])),
    after=ModelSignature(
        inputs=_RAW_INPUTS,
        outputs=Schema(
            [
                ColSpec("double", "median_house_value"),
                ColSpec("double", "median_house_value_lower", required=False),
                ColSpec("double", "median_house_value_upper", required=False),
            ]
        ),
        params=ParamSchema([ParamSpec("interval", "double", None)]),
    ),
)

SIGNATURE_CHANGES: tuple[SignatureChange, ...] = (PREDICTION_INTERVALS,)
