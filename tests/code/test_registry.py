"""Model URIs resolved without a registry (an alias through a real one: tests/integration/test_lifecycle.py's
`evaluate` of `@challenger`, tests/integration/test_batch_predict.py's jobs on `@champion`)."""

from __future__ import annotations

import pytest

from model.registry import ResolvedModel, resolve

NAME = "CaliforniaHousingRegressor"


@pytest.mark.parametrize(
    "uri, expected",
    [
        (f"models:/{NAME}/7", ResolvedModel(f"models:/{NAME}/7", NAME, "7")),
        ("runs:/abc/model", ResolvedModel("runs:/abc/model")),
        ("/tmp/some/model", ResolvedModel("/tmp/some/model")),
    ],
)
def test_uris_without_an_alias_resolve_without_a_registry(uri, expected):
    assert resolve(uri) == expected
    assert resolve(uri).pinned_uri == (
        f"models:/{expected.name}/{expected.version}" if expected.version else uri
    )
