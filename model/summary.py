"""What a registering run (``train``, ``tune``) prints when it ends: the new version and its
alias, the ``models:/`` URI that serves it, its test figures, where the store is, and the
command to run next."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from model import registry
from model.gates import COVERAGE_LEVEL, COVERAGE_TOLERANCE
from model.metrics import level_suffix

COVERAGE_METRIC = f"test_interval_coverage_{level_suffix(COVERAGE_LEVEL)}"
PROMOTE = "make promote (= mlflow run . -e promote)"


def registered_summary(version: ModelVersion, client: MlflowClient | None = None) -> str:
    """Lines about ``version``, as ``registry.register_candidate`` returned it (aliases filled in)."""
    client = client or MlflowClient()
    run = client.get_run(version.run_id)
    alias = registry.CHAMPION if registry.CHAMPION in version.aliases else registry.CHALLENGER
    champion = registry.champion_version(client) if alias == registry.CHALLENGER else None
    return summary_text(
        version.name,
        version.version,
        alias,
        run.data.metrics,
        store=redacted(mlflow.get_tracking_uri()),
        run_id=run.info.run_id,
        artifact_uri=run.info.artifact_uri,
        champion=(champion.version, client.get_run(champion.run_id).data.metrics.get("test_rmse"))
        if champion
        else None,
    )


def summary_text(
    name: str,
    version: str | int,
    alias: str,
    metrics: Mapping[str, float],
    *,
    store: str,
    run_id: str,
    artifact_uri: str,
    champion: tuple[str | int, float | None] | None = None,
) -> str:
    """The summary of version ``version`` of ``name`` registered as ``alias``, from its run's
    ``metrics`` (``test_rmse``, its bootstrap interval, the interval coverage) and, for a
    challenger, the champion's version and logged test RMSE."""
    rmse = metrics["test_rmse"]
    rmse_line = f"{_usd(rmse)} (95 % bootstrap interval {_usd(metrics['test_rmse_ci95_low'])}"
    rmse_line += f" to {_usd(metrics['test_rmse_ci95_high'])})"
    champion_rmse = champion[1] if champion else None
    if champion_rmse is not None:
        rmse_line += f"; the champion, version {champion[0]}: {_usd(champion_rmse)}"
    low, high = COVERAGE_LEVEL - COVERAGE_TOLERANCE, COVERAGE_LEVEL + COVERAGE_TOLERANCE
    return "\n".join(
        [
            f"registered {name} version {version} as {alias}",
            f"  model URI   models:/{name}@{alias} (this version: {registry.version_uri(str(version))})",
            f"  test RMSE   {rmse_line}",
            f"  intervals   the {_percent(COVERAGE_LEVEL)} interval covers"
            f" {_percent(metrics[COVERAGE_METRIC], 1)} of test values"
            f" (promotion needs {_percent(low)} to {_percent(high)})",
            f"  store       {store}; run {run_id}, artifacts {artifact_uri}",
            f"next: {next_step(alias, rmse, champion_rmse)}",
        ]
    )


def next_step(alias: str, rmse: float, champion_rmse: float | None) -> str:
    """The command to run after registering a version as ``alias`` (the champion's logged test
    RMSE beside this one's; ``promote`` recomputes both on the same split)."""
    if alias == registry.CHAMPION:
        return "make serve (MLflow's scoring server), make serve-v2 (KServe V2), make ui (the run in the UI)"
    if champion_rmse is None or rmse < champion_rmse:
        return f"{PROMOTE} makes it champion if every gate passes"
    if rmse == champion_rmse:
        return (
            f"none: {PROMOTE} will refuse it, as its test RMSE equals the champion's (promotion needs"
            " a strictly lower one); the same data, parameters and seed reproduce the same model"
        )
    return f"none: {PROMOTE} will refuse it, as its test RMSE is above the champion's"


def redacted(uri: str) -> str:
    """``uri`` without the password of its user information, if it has one."""
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _usd(value: float) -> str:
    return f"{value:,.0f} USD"


def _percent(fraction: float, decimals: int = 0) -> str:
    return f"{fraction * 100:.{decimals}f} %"
