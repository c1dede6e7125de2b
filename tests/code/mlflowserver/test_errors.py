"""Unit tests of mlflowserver.errors: error messages as one bounded line, and model versions refused."""

from __future__ import annotations

import pytest

from mlflowserver.errors import MESSAGE_LIMIT, ModelVersionNotFound, one_line, refuse_version


def test_one_line_folds_white_space_and_cuts_at_the_message_limit():
    assert one_line("a\n  b\tc ") == "a b c"
    long = one_line("x\n" * 10_000)
    assert len(long) == MESSAGE_LIMIT + 1 and long.endswith("…") and "\n" not in long


def test_a_model_version_is_refused_naming_model_and_version_cut_short():
    refuse_version("m", None)
    refuse_version("m", "")  # an empty version is none
    with pytest.raises(ModelVersionNotFound) as info:
        refuse_version("m", "2")
    assert info.value.reason == (
        "model 'm' has no version '2': this server serves unversioned models; leave the version out"
    )
    assert ModelVersionNotFound("m" * 10_000, "v" * 10_000).reason.startswith(
        f"model '{'m' * 64}…' has no version '{'v' * 64}…'"
    )
