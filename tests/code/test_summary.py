"""model.summary: the next command after a registration, and store URIs printed without their
password. The whole summary is checked on real `make train` runs (tests/integration/test_make_targets.py)."""

from __future__ import annotations

import pytest

from model.registry import CHALLENGER, CHAMPION
from model.summary import next_step, redacted

# The project's well-known fake password (see .secrets.history.json).
SERVER_WITH_PASSWORD = "https://admin:hunter2@mlflow.example.com:8443/x"  # pragma: allowlist secret
DATABASE_WITH_PASSWORD = "postgresql://mlflow:hunter2@db/mlflow"  # pragma: allowlist secret


def test_a_champion_is_served_next():
    assert next_step(CHAMPION, 37_000.0, None).startswith("make serve ")


@pytest.mark.parametrize(
    "rmse, champion_rmse, expected",
    [
        (
            36_000.0,
            37_000.0,
            "make promote (= mlflow run . -e promote) makes it champion if every gate passes",
        ),
        (36_000.0, None, "make promote (= mlflow run . -e promote) makes it champion if every gate passes"),
        (
            37_000.0,
            37_000.0,
            "none: make promote (= mlflow run . -e promote) will refuse it, as its test RMSE equals the"
            " champion's (promotion needs a strictly lower one); the same data, parameters and seed"
            " reproduce the same model",
        ),
        (
            38_000.0,
            37_000.0,
            "none: make promote (= mlflow run . -e promote) will refuse it, as its test RMSE is above the champion's",
        ),
    ],
)
def test_a_challenger_is_promoted_next_only_when_promote_can_accept_it(rmse, champion_rmse, expected):
    assert next_step(CHALLENGER, rmse, champion_rmse) == expected


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("sqlite:////work/mlflow.db", "sqlite:////work/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        (SERVER_WITH_PASSWORD, "https://admin:***@mlflow.example.com:8443/x"),
        (DATABASE_WITH_PASSWORD, "postgresql://mlflow:***@db/mlflow"),
    ],
)
def test_a_store_uri_is_printed_without_its_password(uri, shown):
    assert redacted(uri) == shown
