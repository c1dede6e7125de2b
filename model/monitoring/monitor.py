"""One monitoring run: judge a window against the version that served it, log it, tag the version.

Everything that can be wrong with the input (no rows, unknown version, no reference, labels
that join nothing, missing columns) is found before anything is logged: the run then ends
with its one-line error and no metric, and the version keeps its tags. Only a complete
assessment is logged (metrics, Evidently's HTML report, a PNG summary, the per-column table,
the verdict as the run's description) and then the version is tagged with it
(``monitoring.verdict``, ``monitoring.run_id``, ``monitoring.checked_at``), so the version's
page in the MLflow UI shows its last verdict and links to the run. The metrics are also linked
to the version's logged model (MLflow's ``model_id``), so they show on the model's page.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from model import registry
from model.data import FEATURE_COLUMNS, RAW_COLUMNS, TARGET
from model.metrics import level_suffix
from model.monitoring.reference import PREDICTION, ReferenceError, load_reference
from model.monitoring.statistics import (
    DEGRADED,
    DRIFT,
    THRESHOLDS,
    TRUE_VALUE,
    Assessment,
    Thresholds,
    assess,
    drift_frame,
    paragraph,
    report,
)
from model.monitoring.window import MonitorError, Window, join_labels, parse_time, read_window
from model.plots import artifact_url, plt
from model.report import DESCRIPTION_TAG
from model.tracking import log_new_params

VERDICT_TAG = "monitoring.verdict"
RUN_TAG = "monitoring.run_id"
CHECKED_TAG = "monitoring.checked_at"
REPORT = "monitoring/report.html"
SUMMARY = "monitoring/summary.png"
COLUMNS = "monitoring/columns.json"
# fail_on value → verdicts that make the command exit non-zero.
FAIL_ON = {"": (), DRIFT: (DRIFT, DEGRADED), DEGRADED: (DEGRADED,)}


@dataclass(frozen=True)
class MonitorJob:
    """One monitoring run (the ``monitor`` entry point's parameters).

    Parameters
    ----------
    window : str
        A capture directory or file, or a ``batch_predict`` output.
    since : str
        Captured rows answered at or after this time (ISO 8601, or ``-1h``, ``-30m``, ``-7d``); '' = all.
    until : str
        Captured rows answered before this time (same forms); '' = all.
    labels : str or None
        CSV or Parquet with the id column(s) and ``median_house_value``.
    id_column : str
        Join key(s), comma-separated; '' = ``request_id,row`` for a capture (``request_id`` when the
        labels have no ``row`` column).
    inputs : str or None
        For a ``batch_predict`` output: the input file it scored.
    interval : float or None
        For a ``batch_predict`` output with bounds: the level it was scored at.
    model_version : str
        A version number or an alias; '' = the version the capture names.
    fail_on : str
        ``drift`` or ``degraded``: exit 1 on that verdict (or worse); '' = never.
    labelled_output : str or None
        Write the labelled rows here, in the raw data's layout (for ``make retrain``).
    """

    window: str
    since: str = ""
    until: str = ""
    labels: str | None = None
    id_column: str = ""
    inputs: str | None = None
    interval: float | None = None
    model_version: str = ""
    fail_on: str = ""
    labelled_output: str | None = None


@dataclass(frozen=True)
class Outcome:
    version: str
    run_id: str
    assessment: Assessment
    text: str


def run(
    job: MonitorJob, client: MlflowClient | None = None, thresholds: Thresholds = THRESHOLDS
) -> tuple[Outcome, bool]:
    """Judge, log and tag; returns the outcome and whether ``fail_on`` calls it a failure."""
    client = client or MlflowClient()
    if job.fail_on not in FAIL_ON:
        raise MonitorError(f"fail_on must be one of drift, degraded or '' (never), not {job.fail_on!r}")
    since, until = parse_time(job.since, "since"), parse_time(job.until, "until")
    window = read_window(
        Path(job.window), since, until, job.inputs and Path(job.inputs), job.id_column, job.interval
    )
    version = resolve_version(window, job.model_version, client)
    try:
        reference = load_reference(version.run_id)
    except ReferenceError as error:
        raise MonitorError(f"version {version.version}: {error}") from None
    figures = test_figures(version.run_id, client)
    if job.labels is not None:
        window = join_labels(window, Path(job.labels), job.id_column)
    assessment = assess(reference, window.frame, figures, thresholds)
    snapshot = report(reference, drift_frame(window.frame), thresholds)
    name = f"{registry.MODEL_NAME} version {version.version}"
    text = paragraph(assessment, name, window.source)

    with tempfile.TemporaryDirectory() as directory:
        files = Path(directory)
        snapshot.save_html(str(files / Path(REPORT).name))
        _summary_figure(assessment, name).savefig(files / Path(SUMMARY).name, dpi=100, bbox_inches="tight")
        (files / Path(COLUMNS).name).write_text(json.dumps([asdict(c) for c in assessment.columns], indent=1))
        run_id = _log(job, version, assessment, thresholds, text, files)
    registry.set_version_tags(
        version.version,
        {VERDICT_TAG: assessment.verdict, RUN_TAG: run_id, CHECKED_TAG: registry.utc_now()},
        client,
    )
    if job.labelled_output is not None and TRUE_VALUE in window.frame:
        write_labelled(window, Path(job.labelled_output))
    outcome = Outcome(version.version, run_id, assessment, text)
    return outcome, assessment.verdict in FAIL_ON[job.fail_on]


def resolve_version(window: Window, asked: str, client: MlflowClient) -> ModelVersion:
    """The registered version that served ``window`` (named by its capture, or ``asked``)."""
    served = []
    for run_id in window.model_run_ids:
        found = client.search_model_versions(f"name='{registry.MODEL_NAME}' and run_id='{run_id}'")
        if not found:
            raise MonitorError(
                f"the window was served by the model of run {run_id}, "
                f"which is no version of {registry.MODEL_NAME}"
            )
        served.append(max(found, key=lambda v: int(v.version)))
    if len(served) > 1:
        numbers = ", ".join(v.version for v in served)
        raise MonitorError(f"the window holds rows served by versions {numbers}: narrow it with since/until")
    if asked:
        version = _version(asked, client)
        if served and served[0].version != version.version:
            raise MonitorError(
                f"the window was served by version {served[0].version}, not {asked} ({version.version})"
            )
        return version
    if not served:
        raise MonitorError(
            f"{window.source} does not say which model scored it: name the version (model_version=…)"
        )
    return served[0]


def _version(asked: str, client: MlflowClient) -> ModelVersion:
    version = (
        registry.get_version(asked, client) if asked.isdigit() else registry.version_by_alias(asked, client)
    )
    if version is None:
        raise MonitorError(f"{registry.MODEL_NAME} has no version or alias {asked!r}")
    return version


def test_figures(run_id: str, client: MlflowClient) -> dict[str, float]:
    """The version's test RMSE and interval coverages (``coverage_<level>``), as its run logged them."""
    metrics = client.get_run(run_id).data.metrics
    if "test_rmse" not in metrics:
        raise MonitorError(f"run {run_id} logged no test_rmse: it is not a registering training run")
    figures = {"rmse": metrics["test_rmse"]}
    prefix = "test_interval_coverage_"
    for key, value in metrics.items():
        if key.startswith(prefix) and key[len(prefix) :].replace("_", "").isdigit():
            level = float(key[len(prefix) :].replace("_", ".")) / 100
            if level_suffix(level) == key[len(prefix) :]:
                figures[f"coverage_{level:g}"] = value
    return figures


def write_labelled(window: Window, path: Path) -> None:
    """The window's labelled rows in the raw dataset's layout (what ``make retrain`` adds), atomically."""
    rows = window.frame[window.frame[TRUE_VALUE].notna()]
    table = rows[list(FEATURE_COLUMNS)].assign(**{TARGET: rows[TRUE_VALUE].to_numpy()})[list(RAW_COLUMNS)]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    table.to_csv(partial, index=False)
    os.replace(partial, path)


def _log(
    job: MonitorJob, version: ModelVersion, a: Assessment, thresholds: Thresholds, text: str, files: Path
) -> str:
    with mlflow.start_run() as active:
        log_new_params(
            {
                "window": job.window,
                "since": job.since,
                "until": job.until,
                "labels": job.labels or "",
                "model_version": version.version,
                **{f"threshold_{k}": v for k, v in asdict(thresholds).items()},
            }
        )
        mlflow.set_tags(
            {
                "model_name": registry.MODEL_NAME,
                "model_version": version.version,
                "verdict": a.verdict,
                DESCRIPTION_TAG: _description(text, a, active.info.run_id),
            }
        )
        mlflow.log_metrics(a.metrics())
        if version.model_id:
            # The same figures on the version's logged model: the model's page lists them.
            mlflow.log_metrics(a.metrics(), model_id=version.model_id)
        mlflow.log_artifacts(str(files), artifact_path="monitoring")
        return active.info.run_id


def _description(text: str, a: Assessment, run_id: str) -> str:
    """The run's description: the verdict paragraph, the summary figure and the column table."""
    rows = [
        f"| {'prediction' if c.column == PREDICTION else c.column} | {c.method} | {c.score:.3f} | "
        f"{c.threshold:g} | {c.missing_share:.1%} | {'**yes**' if c.drifted else 'no'} |"
        for c in a.columns
    ]
    return "\n".join(
        [
            text,
            "",
            f"![summary]({artifact_url(run_id, SUMMARY)})",
            "",
            f"Evidently's full report: `{REPORT}` (open it under Artifacts).",
            "",
            "| column | test | score | threshold | missing | drifted |",
            "| --- | --- | ---: | ---: | ---: | --- |",
            *rows,
        ]
    )


def _summary_figure(a: Assessment, name: str):
    """Drift scores against their thresholds; live RMSE and coverage against the test figures."""
    figure, (drift_axes, quality_axes) = plt.subplots(
        1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 1.4]}
    )
    labels = ["prediction" if c.column == PREDICTION else c.column for c in a.columns]
    ratios = [np.nan_to_num(c.score / c.threshold, nan=0.0) for c in a.columns]
    colours = ["tab:red" if c.drifted else "tab:green" for c in a.columns]
    drift_axes.barh(labels, ratios, color=colours)
    drift_axes.axvline(1.0, color="black", linewidth=1)
    drift_axes.invert_yaxis()
    drift_axes.set(xlabel="drift score / threshold (red: drifted)", title=f"{name}: {a.verdict.upper()}")
    q = a.quality
    if q is None:
        quality_axes.text(0.5, 0.5, "no true values", ha="center", va="center")
        quality_axes.set_axis_off()
    else:
        bars = {"RMSE / test": q.rmse / q.test_rmse}
        if q.coverage is not None:
            bars[f"coverage {q.level:.0%} / test"] = q.coverage / q.test_coverage
        quality_axes.bar(list(bars), list(bars.values()), color="tab:blue")
        quality_axes.axhline(1.0, color="black", linewidth=1)
        quality_axes.set(title=f"live on {q.rows:,} labelled rows")
    figure.tight_layout()
    return figure
