"""Each promotion gate on hand-made signatures, requirements, predictions and numbers, and its one line."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from model.gates import (
    GateRefusal,
    Refusal,
    check_coverage,
    check_requirements,
    check_rmse,
    check_signature,
    check_smoke,
)
from model.packaging import SIGNATURE, locked_versions, pip_requirements
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


def signature_with(bedrooms_required: bool) -> ModelSignature:
    inputs = [
        ColSpec(
            spec.type,
            spec.name,
            required=bedrooms_required if spec.name == "total_bedrooms" else spec.required,
        )
        for spec in SIGNATURE.inputs.inputs
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=SIGNATURE.outputs, params=SIGNATURE.params)


def test_signature_mismatch_is_refused_with_the_difference():
    with pytest.raises(
        GateRefusal,
        match=r"signature gate: .*inputs: lacks \['total_bedrooms:double\?'\], adds \['total_bedrooms:double'\]",
    ) as refused:
        check_signature(signature_with(True), SIGNATURE)
    assert refused.value.gate == "signature"
    assert refused.value.message.startswith("refused: signature gate:")


def test_a_missing_signature_is_refused():
    with pytest.raises(GateRefusal, match="challenger has no signature"):
        check_signature(None, SIGNATURE)


def test_requirements_equal_to_the_lock_pass():
    check_requirements(["# pinned", *pip_requirements(), ""], locked_versions())


@pytest.mark.parametrize(
    "line, reason",
    [
        ("numpy==1.0.0", r"numpy==1.0.0 \(lock: "),
        ("numpy>=1.0", r"numpy>=1.0 \(not pinned with ==\)"),
        ("numpy==2.4.6,<3", r"numpy==2.4.6,<3 \(not pinned with ==\)"),
        (
            "numpy @ https://example.com/numpy.whl",
            r"numpy @ https://example.com/numpy.whl \(not pinned with ==\)",
        ),
        ("left-pad==1.3.0", r"left-pad==1.3.0 \(not in requirements.lock\)"),
    ],
)
def test_requirements_differing_from_the_lock_are_refused(line, reason):
    requirements = [r for r in pip_requirements() if not r.startswith("numpy==")] + [line]
    with pytest.raises(
        Refusal, match=rf"requirements gate: 1 of {len(requirements)} requirements differ .*{reason}"
    ):
        check_requirements(requirements, locked_versions())


def test_package_names_compare_normalised():
    check_requirements(["Scikit_Learn==1.2.3"], {"scikit-learn": "1.2.3"})


def test_no_requirements_is_refused():
    with pytest.raises(Refusal, match="logged no requirements"):
        check_requirements(["# nothing", ""], locked_versions())


def test_smoke_gate():
    check_smoke(np.array([1.0, 2.0]), 2)
    with pytest.raises(Refusal, match="smoke gate: .*1 of 2 predictions are not finite"):
        check_smoke(np.array([1.0, np.nan]), 2)
    with pytest.raises(Refusal, match="smoke gate: .*expected 3 predictions, got 2"):
        check_smoke(np.array([1.0, 2.0]), 3)


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


def test_rmse_gate_needs_strictly_better_by_the_margin():
    check_rmse(37_799.0, 37_800.0)
    with pytest.raises(Refusal) as refused:
        check_rmse(41_200.0, 37_800.0)
    assert (
        refused.value.message == "refused: rmse gate: challenger 41,200 vs champion 37,800 (needs < 37,800)"
    )
    with pytest.raises(Refusal, match="needs < 37,800"):
        check_rmse(37_800.0, 37_800.0)  # equal is not better
    check_rmse(37_299.0, 37_800.0, min_improvement=500.0)
    with pytest.raises(Refusal, match=r"challenger 37,400 vs champion 37,800 \(needs < 37,300\)"):
        check_rmse(37_400.0, 37_800.0, min_improvement=500.0)
    with pytest.raises(Refusal):
        check_rmse(float("nan"), 37_800.0)


def test_only_a_gates_refusal_says_gate():
    assert GateRefusal("rmse", "worse").message == "refused: rmse gate: worse"
    assert Refusal("race", "champion moved").message == "refused: race: champion moved"
    assert isinstance(GateRefusal("rmse", "worse"), Refusal)
