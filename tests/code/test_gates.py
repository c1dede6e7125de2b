"""The signature gate's declared changes and the coverage gate, on hand-made signatures and numbers."""

from __future__ import annotations

import pytest
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from model.gates import Refusal, check_coverage, check_signature
from model.packaging import SIGNATURE
from model.signatures import PREDICTION_INTERVALS, SIGNATURE_CHANGES, SignatureChange

BEFORE_INTERVALS = PREDICTION_INTERVALS.before


def test_the_served_signature_is_the_last_declared_one():
    """Changing SIGNATURE without declaring the change in model/signatures.py fails here first."""
    assert SIGNATURE_CHANGES[-1].after.to_dict() == SIGNATURE.to_dict()


def test_the_declared_change_is_additive_for_callers():
    before, after = PREDICTION_INTERVALS.before, PREDICTION_INTERVALS.after
    assert before.inputs.to_dict() == after.inputs.to_dict()
    added = after.outputs.to_dict()[len(before.outputs.to_dict()) :]
    assert after.outputs.to_dict()[: len(before.outputs.to_dict())] == before.outputs.to_dict()
    assert added and all(not column["required"] for column in added)
    assert before.params is None and [(p.name, p.default) for p in after.params.params] == [
        ("interval", None)
    ]


def test_identical_signatures_pass_without_a_change():
    assert check_signature(SIGNATURE, SIGNATURE) is None


def test_the_planned_change_from_the_champion_to_the_challenger_passes_and_is_named():
    assert check_signature(SIGNATURE, BEFORE_INTERVALS) is PREDICTION_INTERVALS


def test_the_planned_change_does_not_pass_backwards():
    with pytest.raises(
        Refusal,
        match=r"signature gate: challenger differs from champion: outputs: lacks .*median_house_value_lower:double\?.*params: lacks \['interval:double=None'\], adds \[\] \(\? = optional\)$",
    ):
        check_signature(BEFORE_INTERVALS, SIGNATURE)


def with_outputs(signature: ModelSignature, outputs: list[ColSpec]) -> ModelSignature:
    return ModelSignature(inputs=signature.inputs, outputs=Schema(outputs), params=signature.params)


@pytest.mark.parametrize(
    "challenger, difference",
    [
        # One output column too many, required: not what was declared.
        (
            with_outputs(SIGNATURE, [*SIGNATURE.outputs.inputs, ColSpec("double", "price_per_room")]),
            r"outputs: lacks \[\], adds \[.*'price_per_room:double'\]",
        ),
        # The new outputs required instead of optional.
        (
            with_outputs(SIGNATURE, [ColSpec("double", spec.name) for spec in SIGNATURE.outputs.inputs]),
            r"adds \['median_house_value_lower:double', 'median_house_value_upper:double'\]",
        ),
        # A parameter with another default.
        (
            ModelSignature(
                SIGNATURE.inputs, SIGNATURE.outputs, ParamSchema([ParamSpec("interval", "double", 0.8)])
            ),
            r"params: lacks \[\], adds \['interval:double=0.8'\]",
        ),
    ],
)
def test_an_accidental_change_is_refused_even_next_to_a_declared_one(challenger, difference):
    with pytest.raises(Refusal, match=difference):
        check_signature(challenger, BEFORE_INTERVALS)
    with pytest.raises(Refusal, match="signature gate: challenger differs from champion"):
        check_signature(challenger, SIGNATURE)


def test_a_change_is_allowed_only_between_its_two_exact_ends():
    change = SignatureChange("test", "why", before=SIGNATURE, after=BEFORE_INTERVALS)
    assert check_signature(BEFORE_INTERVALS, SIGNATURE, declared=(change,)) is change
    with pytest.raises(Refusal):
        check_signature(BEFORE_INTERVALS, SIGNATURE, declared=())


@pytest.mark.parametrize("coverage", [0.78, 0.8, 0.8134, 0.82])
def test_coverage_within_two_points_of_80_percent_passes(coverage):
    check_coverage(coverage)


@pytest.mark.parametrize(
    "coverage, line",
    [
        (
            0.7412,
            "refused: coverage gate: challenger's interval=0.8 covers 74.1 % of test values (needs 78.0 %–82.0 %)",
        ),
        (
            0.8211,
            "refused: coverage gate: challenger's interval=0.8 covers 82.1 % of test values (needs 78.0 %–82.0 %)",
        ),
        (
            float("nan"),
            "refused: coverage gate: challenger's interval=0.8 covers nan % of test values (needs 78.0 %–82.0 %)",
        ),
        (
            None,
            "refused: coverage gate: challenger has no 'interval' parameter (needs 78.0 %–82.0 % at interval=0.8)",
        ),
    ],
)
def test_coverage_outside_two_points_is_refused_in_one_line(coverage, line):
    with pytest.raises(Refusal) as refused:
        check_coverage(coverage)
    assert refused.value.message == line and refused.value.gate == "coverage"
