"""Unit tests of model.monitoring on small hand-made data: the reference, windows from real capture
files and batch outputs, the labels join, the statistics against Evidently's report, the verdict,
the test figures a version's run logged, and the retraining data. The real model and the
thresholds' behaviour are tests/model/test_monitoring.py's."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlflowserver.capture import Capture, CaptureSettings
from model.data import FEATURE_COLUMNS, RAW_COLUMNS, TARGET, load_raw
from model.intervals import LOWER_COLUMN, UPPER_COLUMN
from model.monitoring import retrain
from model.monitoring.monitor import test_figures as version_test_figures
from model.monitoring.monitor import write_labelled
from model.monitoring.reference import PREDICTION, Reference
from model.monitoring.statistics import (
    DEGRADED,
    DRIFT,
    LEVEL,
    OK,
    TRUE_VALUE,
    ColumnDrift,
    LiveQuality,
    column_drift,
    drift_frame,
    judge,
    live_quality,
    paragraph,
    report,
    report_scores,
)
from model.monitoring.window import MonitorError, join_labels, parse_time, read_window
from model.packaging import locked_versions

RNG = np.random.default_rng(0)


def blocks(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` plausible blocks: the nine inputs and a true value."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "longitude": rng.uniform(-124, -114, n),
            "latitude": rng.uniform(32, 42, n),
            "housing_median_age": rng.integers(1, 52, n).astype(float),
            "total_rooms": rng.lognormal(7.7, 0.7, n),
            "total_bedrooms": rng.lognormal(6.1, 0.7, n),
            "population": rng.lognormal(7.0, 0.7, n),
            "households": rng.lognormal(6.0, 0.7, n),
            "median_income": rng.lognormal(1.3, 0.45, n),
            "ocean_proximity": rng.choice(["<1H OCEAN", "INLAND", "NEAR OCEAN", "NEAR BAY"], n),
        }
    )
    frame.loc[rng.random(n) < 0.01, "total_bedrooms"] = np.nan
    return frame.assign(**{TARGET: frame["median_income"] * 40_000 + rng.normal(0, 30_000, n)})


@pytest.fixture(scope="module")
def reference() -> Reference:
    train = blocks(5000)
    return Reference.of(train[list(FEATURE_COLUMNS)], train[TARGET].to_numpy())


def served(frame: pd.DataFrame, level: float | None = 0.8) -> pd.DataFrame:
    """``frame`` as a window: its true value served as the prediction, ±60k bounds at ``level``."""
    out = frame[list(FEATURE_COLUMNS)].copy()
    out[TARGET] = frame[TARGET].to_numpy() + RNG.normal(0, 20_000, len(frame))
    out[LOWER_COLUMN], out[UPPER_COLUMN] = out[TARGET] - 60_000, out[TARGET] + 60_000
    out[LEVEL] = level
    return out


# ------------------------------------------------------------------ the reference


def test_the_reference_travels_as_json_and_rebuilds_each_columns_distribution(reference):
    again = Reference.from_dict(json.loads(json.dumps(reference.to_dict())))
    assert again == reference
    sample = again.frame(2000)
    assert len(sample) == 2000 and set(sample) == {*FEATURE_COLUMNS, PREDICTION}
    train = blocks(5000)
    assert sample["total_bedrooms"].isna().mean() == pytest.approx(
        train["total_bedrooms"].isna().mean(), abs=1e-3
    )
    assert sample["median_income"].median() == pytest.approx(train["median_income"].median(), rel=0.01)
    shares = sample["ocean_proximity"].value_counts(normalize=True)
    assert shares.to_dict() == pytest.approx(
        train["ocean_proximity"].value_counts(normalize=True).to_dict(), abs=1e-3
    )


def test_a_reference_of_another_format_or_without_a_column_is_refused(reference):
    document = reference.to_dict()
    with pytest.raises(LookupError, match="format 2 is not 1"):
        Reference.from_dict(document | {"format": 2})
    del document["columns"]["median_income"]
    with pytest.raises(LookupError, match="lacks columns"):
        Reference.from_dict(document)


# ------------------------------------------------------------------ statistics and verdict


def test_the_drift_scores_are_those_of_evidentlys_report(reference):
    window = drift_frame(
        served(blocks(1000, seed=1).assign(median_income=lambda f: f["median_income"] * 1.3))
    )
    drifts = {d.column: d for d in column_drift(reference, window)}
    assert report_scores(report(reference, window)) == pytest.approx({c: d.score for c, d in drifts.items()})
    assert drifts["median_income"].drifted and not drifts["longitude"].drifted


def test_a_column_with_no_value_left_drifts_by_its_missing_share(reference):
    window = drift_frame(served(blocks(1000, seed=2).assign(total_bedrooms=np.nan)))
    drifts = {d.column: d for d in column_drift(reference, window)}
    bedrooms = drifts["total_bedrooms"]
    assert np.isnan(bedrooms.score) and bedrooms.missing_share == 1.0 and bedrooms.drifted
    assert not report(reference, window).dict()["metrics"] == []  # the report leaves that column's test out


def column(name: str, drifted: bool) -> ColumnDrift:
    return ColumnDrift(name, "wasserstein", 0.5 if drifted else 0.01, 0.15, 0.0, 0.0, drifted)


@pytest.mark.parametrize(
    ("drifted", "rmse", "coverage", "verdict"),
    [
        (False, None, None, OK),
        (True, None, None, DRIFT),
        (False, 40_000, 0.79, OK),
        (False, 50_000, 0.79, DEGRADED),
        (False, 40_000, 0.70, DEGRADED),
        (True, 50_000, 0.79, DEGRADED),
    ],
)
def test_degraded_outranks_drift_which_outranks_ok(drifted, rmse, coverage, verdict):
    columns = [column("median_income", drifted), column(PREDICTION, False)]
    quality = None if rmse is None else LiveQuality(1000, rmse, 37_000, 1000, 0.8, coverage, 0.81)
    assessment = judge(1000, columns, quality)
    assert assessment.verdict == verdict
    text = paragraph(assessment, "version 3", "captures")
    assert text.startswith(f"Verdict: {verdict.upper()} for version 3 on 1,000 rows of captures.")
    assert ("Why:" in text) == (verdict != OK) and "\n" not in text
    assert ("No true values were given" in text) == (quality is None)


def test_live_coverage_is_measured_at_the_level_most_rows_were_served(reference):
    window = served(blocks(300, seed=3)).assign(**{TRUE_VALUE: lambda f: f[TARGET]})
    window.loc[:99, LEVEL] = np.nan  # 100 rows asked for no interval
    window.loc[:99, [LOWER_COLUMN, UPPER_COLUMN]] = np.nan
    window.loc[100:149, LEVEL] = 0.9
    window.loc[100:149, TRUE_VALUE] = 1e9  # outside every 0.9 interval: must not count at 0.8
    quality = live_quality(window, {"rmse": 37_000, "coverage_0.8": 0.81})
    assert (quality.level, quality.interval_rows, quality.coverage, quality.test_coverage) == (
        0.8,
        150,
        1.0,
        0.81,
    )
    assert quality.rows == 300


# ------------------------------------------------------------------ windows and labels


@pytest.fixture
def capture_dir(tmp_path):
    """Real capture files: 3 requests (a batch of 4 with interval 0.8, two single rows without)."""
    rows = blocks(6, seed=4)
    recorder = Capture(
        CaptureSettings(tmp_path / "captures", flush_seconds=0.01), "run-abc", FEATURE_COLUMNS, ["interval"]
    )
    for request_id, part, params in [
        ("batch", rows.iloc[:4], {"interval": 0.8}),
        ("one", rows.iloc[[4]], {}),
        ("two", rows.iloc[[5]], {}),
    ]:
        inputs = {name: part[name].to_numpy() for name in FEATURE_COLUMNS}
        outputs = [(TARGET, part[TARGET].to_numpy())]
        if params:
            outputs += [
                (LOWER_COLUMN, part[TARGET].to_numpy() - 1),
                (UPPER_COLUMN, part[TARGET].to_numpy() + 1),
            ]
        recorder.record(request_id, len(part), inputs, outputs, params)
    recorder.close()
    return tmp_path / "captures", rows


def test_a_capture_directory_is_a_window_of_served_rows_with_their_version(capture_dir):
    directory, rows = capture_dir
    window = read_window(directory)
    assert len(window.frame) == 6 and window.model_run_ids == ("run-abc",)
    assert window.frame[LEVEL].tolist()[:4] == [0.8] * 4 and window.frame[LEVEL].isna().sum() == 2
    assert sorted(window.frame["median_income"]) == sorted(rows["median_income"])
    now = datetime.now(UTC)
    assert (
        len(read_window(directory, since=now - timedelta(hours=1), until=now + timedelta(hours=1)).frame) == 6
    )
    with pytest.raises(MonitorError, match="no rows in the window: .* holds no captured row between"):
        read_window(directory, since=now + timedelta(hours=1))


def test_labels_join_on_request_and_row_or_on_the_request_alone(capture_dir, tmp_path):
    directory, rows = capture_dir
    window = read_window(directory)
    by_row = pd.DataFrame(
        {"request_id": ["batch"] * 4 + ["one"], "row": [0, 1, 2, 3, 0], TARGET: rows[TARGET][:5]}
    )
    by_row.to_csv(tmp_path / "by_row.csv", index=False)
    joined = join_labels(window, tmp_path / "by_row.csv").frame
    assert joined[TRUE_VALUE].notna().sum() == 5
    assert joined.set_index("request_id").loc["one", TRUE_VALUE] == rows[TARGET].iloc[4]

    pd.DataFrame({"request_id": ["one", "two"], TARGET: [1.0, 2.0]}).to_parquet(tmp_path / "singles.parquet")
    with pytest.raises(MonitorError, match="repeated ids on \\(request_id\\).*give the labels a row column"):
        join_labels(window, tmp_path / "singles.parquet")
    pd.DataFrame({"request_id": ["nope"], TARGET: [1.0]}).to_csv(tmp_path / "none.csv", index=False)
    with pytest.raises(
        MonitorError, match="join none of the window's 6 rows on \\(request_id, row\\)|repeated ids"
    ):
        join_labels(window, tmp_path / "none.csv")
    pd.DataFrame({"request_id": ["one"], "price": [1.0]}).to_csv(tmp_path / "no_target.csv", index=False)
    with pytest.raises(MonitorError, match="lacks column 'median_house_value'"):
        join_labels(window, tmp_path / "no_target.csv", id_column="request_id,row")


def test_a_batch_output_with_its_input_is_a_window(tmp_path):
    rows = blocks(20, seed=5).assign(block_id=range(20))
    rows.to_csv(tmp_path / "in.csv", index=False)
    scored = rows[["block_id", TARGET]].iloc[2:]  # two rows rejected by the job
    scored.assign(**{LOWER_COLUMN: 0.0, UPPER_COLUMN: 1e7}).to_parquet(tmp_path / "out.parquet")
    window = read_window(
        tmp_path / "out.parquet", inputs=tmp_path / "in.csv", id_column="block_id", interval=0.8
    )
    assert len(window.frame) == 18 and (window.frame[LEVEL] == 0.8).all() and window.model_run_ids == ()
    labels = rows[["block_id", TARGET]].astype({"block_id": str})  # ids as text: still the same blocks
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert join_labels(window, tmp_path / "labels.csv", "block_id").frame[TRUE_VALUE].notna().all()

    with pytest.raises(MonitorError, match="give its input file \\(inputs=…\\) and the id column"):
        read_window(tmp_path / "out.parquet")
    with pytest.raises(MonitorError, match="give the level it was scored at"):
        read_window(tmp_path / "out.parquet", inputs=tmp_path / "in.csv", id_column="block_id")
    with pytest.raises(MonitorError, match="since/until need one"):
        read_window(tmp_path / "out.parquet", since=datetime.now(UTC))
    rows.iloc[:5].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(MonitorError, match="15 of 18 rows of .* have no input row"):
        read_window(
            tmp_path / "out.parquet", inputs=tmp_path / "short.csv", id_column="block_id", interval=0.8
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31T12:00:00", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("-90m", datetime(2026, 2, 1, 10, 30, tzinfo=UTC)),
        ("-1d", datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ],
)
def test_times_are_iso_or_before_now(text, expected):
    assert parse_time(text, "since", now=datetime(2026, 2, 1, 12, tzinfo=UTC)) == expected


def test_a_bad_time_is_one_line_naming_the_parameter():
    with pytest.raises(MonitorError, match="^until must be an ISO 8601 time .* not 'yesterday'$"):
        parse_time("yesterday", "until")


# ------------------------------------------------------------------ the version's figures, retraining


def test_the_versions_test_figures_are_read_from_its_run(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        client = MlflowClient()
        experiment = client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())
        run = client.create_run(experiment).info.run_id
        for key, value in {
            "test_rmse": 37_000.0,
            "test_interval_coverage_80": 0.81,
            "test_interval_coverage_97_5": 0.97,
            "test_interval_coverage_capped_80": 0.4,
        }.items():
            client.log_metric(run, key, value)
        assert version_test_figures(run, client) == {
            "rmse": 37_000.0,
            "coverage_0.8": 0.81,
            "coverage_0.975": 0.97,
        }
        bare = client.create_run(experiment).info.run_id
        with pytest.raises(MonitorError, match="logged no test_rmse"):
            version_test_figures(bare, client)
    finally:
        mlflow.set_tracking_uri("")


def test_labelled_rows_join_the_raw_data_for_retraining(capture_dir, tmp_path, raw_data_path):
    directory, rows = capture_dir
    pd.DataFrame({"request_id": ["batch"] * 4, "row": range(4), TARGET: rows[TARGET][:4]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    window = join_labels(read_window(directory), tmp_path / "labels.csv")
    write_labelled(window, tmp_path / "new" / "labelled.csv")
    labelled = pd.read_csv(tmp_path / "new" / "labelled.csv")
    assert list(labelled) == list(RAW_COLUMNS) and len(labelled) == 4
    added = retrain.combine(tmp_path / "new" / "labelled.csv", tmp_path / "combined.csv", raw=raw_data_path)
    assert added == 4 and len(load_raw(tmp_path / "combined.csv")) == len(load_raw(raw_data_path)) + 4
    labelled.drop(columns=["median_income"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="missing columns \\['median_income'\\]"):
        retrain.combine(tmp_path / "bad.csv", tmp_path / "never.csv", raw=raw_data_path)
    assert not (tmp_path / "never.csv").exists()


def test_evidently_is_in_the_monitor_lock_and_never_in_the_serving_lock():
    from model.data import PROJECT_ROOT

    dev = locked_versions(PROJECT_ROOT / "requirements.lock")
    monitor = locked_versions(PROJECT_ROOT / "requirements" / "monitor.lock")
    assert "evidently" in monitor and "evidently" not in locked_versions(
        PROJECT_ROOT / "requirements" / "serve.lock"
    )
    assert {name: pin for name, pin in monitor.items() if dev.get(name) != pin} == {}


def test_the_saved_study_is_of_the_current_thresholds():
    """(docsgen's test holds the doc's tables to the saved study.)"""
    from dataclasses import asdict

    from model.monitoring import study
    from model.monitoring.statistics import THRESHOLDS

    saved = json.loads(study.STUDY_PATH.read_text())
    assert saved["thresholds"] == asdict(THRESHOLDS), "re-run python -m model.monitoring.study --write-docs"
