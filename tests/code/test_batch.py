"""model.batch: streaming, type conversion, row numbers, rejects and the atomic writer (local engine)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from model import contract
from model.batch import source as batch_source
from model.batch.job import BatchError, BatchJob, check_columns, first_violation, parse_interval
from model.batch.local import score_local, to_frame
from model.batch.output import AtomicTableWriter, partial_path
from model.batch.source import Source
from model.data import FEATURE_COLUMNS, PROJECT_ROOT, TARGET
from model.intervals import LOWER_COLUMN, UPPER_COLUMN
from model.packaging import SIGNATURE, pip_requirements
from model.signatures import PREDICTION_INTERVALS

SECRET = "987654.321"  # a value no message may quote


def save_model(model, path: Path, signature=SIGNATURE) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no input example"
        mlflow.pyfunc.save_model(
            str(path),
            python_model=model,
            signature=signature,
            code_paths=[str(PROJECT_ROOT / "model")],
            pip_requirements=pip_requirements(),
        )
    return str(path)


@pytest.fixture(scope="module")
def model_path(trained_model, tmp_path_factory) -> str:
    """The unit layer's model saved as the real pyfunc artifact (signature, code, requirements)."""
    return save_model(trained_model, tmp_path_factory.mktemp("batch-model") / "model")


@pytest.fixture(scope="module")
def rows(split) -> pd.DataFrame:
    """130 test rows with an id column and one missing total_bedrooms."""
    frame = split[1].head(130)[list(FEATURE_COLUMNS)].reset_index(drop=True)
    frame.loc[5, "total_bedrooms"] = np.nan
    frame.insert(0, "block_id", [f"b{i:04d}" for i in range(len(frame))])
    return frame


@pytest.fixture(scope="module")
def expected(trained_model, rows) -> np.ndarray:
    return trained_model.predict(None, rows[list(FEATURE_COLUMNS)])[TARGET].to_numpy()


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"block_id": str}) if path.suffix == ".csv" else pd.read_parquet(path)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".partial", ".old")))


# ---------------------------------------------------------------------------------------------
# The job's parameters and the input's columns
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"engine": "dask"}, "engine must be one of local, spark"),
        ({"on_error": "skip"}, "on_error must be one of fail, reject"),
        ({"chunk_size": 0}, "chunk_size must be at least 1"),
        ({"id_column": TARGET}, "id_column cannot be 'median_house_value'"),
        ({"id_column": "row", "on_error": "reject"}, "id_column cannot be 'row'"),  # a rejects column
        ({"engine": "spark", "on_error": "reject"}, "on_error=reject needs engine=local"),
        ({"rejects": "bad.csv"}, "rejects='bad.csv' needs on_error=reject"),
        ({"output": "out.json"}, "output out.json: unknown format '.json'"),
        ({"input": "in"}, "input in: unknown format '(no extension)'"),
        ({"output": "in.csv"}, "three different paths"),
        ({"on_error": "reject", "rejects": "out.parquet"}, "three different paths"),
        (
            {"interval": 1.5},
            "interval must be a coverage level from 0.5 to 0.99 (e.g. 0.8), or '' for none, not 1.5",
        ),
        ({"interval": 0.3}, "interval must be a coverage level from 0.5 to 0.99"),
        ({"interval": float("nan")}, "interval must be a coverage level from 0.5 to 0.99"),
        ({"interval": 0.8, "id_column": LOWER_COLUMN}, "id_column cannot be 'median_house_value_lower'"),
        ({"interval": 0.8, "id_column": UPPER_COLUMN}, "id_column cannot be 'median_house_value_upper'"),
    ],
)
def test_a_bad_job_is_refused_before_anything_runs(changes, message):
    with pytest.raises(BatchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BatchJob(**{"input": "in.csv", "output": "out.parquet", **changes}).check()


def test_the_interval_option_is_a_number_or_empty():
    assert parse_interval("") is None
    assert parse_interval("0.8") == 0.8
    with pytest.raises(BatchError, match=r"^interval must be a coverage level .*, not 'wide'$"):
        parse_interval("wide")
    # The bound columns are the job's only with an interval: without one, the name is free.
    BatchJob("in.csv", "out.parquet", id_column=LOWER_COLUMN).check()


def test_rejects_go_beside_the_output_in_its_format_unless_named():
    assert BatchJob("in.csv", "/data/scored.parquet").rejects_path() is None
    assert (
        BatchJob("in.csv", "/data/scored.parquet", on_error="reject").rejects_path()
        == "/data/scored.rejects.parquet"
    )
    assert BatchJob("in.csv", "out.csv", on_error="reject", rejects="bad.csv").rejects_path() == "bad.csv"


def test_columns_needed_are_checked_up_front():
    names = ["block_id", *FEATURE_COLUMNS, "extra"]
    assert check_columns(names, "block_id", "f.csv") == ["block_id", *FEATURE_COLUMNS]
    without_bedrooms = [name for name in names if name != "total_bedrooms"]
    assert "total_bedrooms" not in check_columns(without_bedrooms, None, "f.csv")
    with pytest.raises(BatchError, match="input f.csv: column 'households': required column is missing"):
        check_columns([name for name in names if name != "households"], None, "f.csv")
    with pytest.raises(BatchError, match="id column 'id' is not in the file"):
        check_columns(names, "id", "f.csv")
    with pytest.raises(BatchError, match="column 'latitude' given more than once"):
        check_columns([*names, "latitude"], None, "f.csv")


# ---------------------------------------------------------------------------------------------
# Reading: exact chunks, in order, from CSV and Parquet
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunks_have_chunk_size_rows_in_file_order(rows, tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(batch_source, "CSV_BLOCK_BYTES", 1024)  # many small CSV blocks to re-cut
    path = write(rows, tmp_path / f"in{suffix}")
    source = Source.open(str(path), "block_id", chunk_size=7)
    chunks = list(source.chunks())
    assert [chunk.num_rows for chunk in chunks] == [7] * 18 + [4]
    assert pa.concat_tables(chunks).column("block_id").to_pylist() == rows["block_id"].tolist()
    assert source.total_rows == (130 if suffix == ".parquet" else None)


def test_numbers_stored_as_text_are_parsed_and_bad_ones_flagged_by_row():
    table = pa.table(
        {
            "longitude": ["-122.2", "abc", " -121.5", SECRET],
            "latitude": pa.array([37, 38, 39, 36], pa.int64()),
            "housing_median_age": [1.0, 2.0, 3.0, 4.0],
            "total_rooms": ["10", "20", "", "NaN"],
            "population": [1.0] * 4,
            "households": [1.0] * 4,
            "median_income": [1.0] * 4,
            "ocean_proximity": pa.array(["INLAND", None, "NEAR BAY", ""]).dictionary_encode(),
        }
    )
    frame = to_frame(table, "in.parquet")
    assert frame["longitude"].tolist()[0::2] == [-122.2, -121.5]
    assert frame["latitude"].dtype == float and frame["total_rooms"].dtype == float
    assert frame["total_rooms"].tolist()[:2] == [10.0, 20.0] and np.isnan(frame["total_rooms"][2:]).all()
    assert frame["ocean_proximity"].tolist() == ["INLAND", None, "NEAR BAY", ""]
    # The text that is not a number goes on as text, for the contract to refuse on its row, once.
    found = [(v.rule, v.rows.tolist()) for v in contract.find_violations(frame) if v.column == "longitude"]
    assert found[0] == ("must be a number", [False, True, False, False])
    assert "must not be missing" not in [rule for rule, _ in found]


def test_an_integer_beyond_float_precision_becomes_the_nearest_float():
    table = pa.table({"population": pa.array([2**53 + 1], pa.int64()), "ocean_proximity": ["INLAND"]})
    frame = to_frame(table, "in.parquet")
    assert frame["population"].tolist() == [float(2**53)] and frame["population"].dtype == float


def test_a_column_of_the_wrong_type_fails_the_whole_job():
    table = pa.table({column: [1.0] for column in FEATURE_COLUMNS if column != "ocean_proximity"})
    table = table.append_column("ocean_proximity", pa.array(["INLAND"])).set_column(
        0, "longitude", pa.array([True])
    )
    with pytest.raises(
        BatchError,
        match="input in.parquet: column 'longitude': must be a number \\(the file stores it as bool\\)",
    ):
        to_frame(table, "in.parquet")


def test_an_unparsable_cell_is_reported_once_and_the_first_row_wins():
    frame = pd.DataFrame(
        [
            {c: 1.0 for c in FEATURE_COLUMNS}
            | {"longitude": -120.0, "latitude": 36.0, "ocean_proximity": "INLAND"}
        ]
        * 4
    )
    frame["households"] = frame["households"].astype(object)
    frame.loc[1, "households"] = f"x{SECRET}"  # text to_frame could not parse as a number
    frame.loc[3, "latitude"] = 50.0
    frame.loc[2, "ocean_proximity"] = ""
    found = contract.find_violations(frame)
    assert [(v.column, v.rule) for v in found] == [
        ("households", "must be a number"),
        ("latitude", "must lie in California, between 32.0 and 42.5"),
        ("ocean_proximity", "must be a non-empty string"),
    ]
    violation, row = first_violation(found)
    assert (violation.column, row) == ("households", 1)


# ---------------------------------------------------------------------------------------------
# Writing: complete or nothing
# ---------------------------------------------------------------------------------------------

SCHEMA = pa.schema([pa.field(TARGET, pa.float64())])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_output_appears_only_at_commit(tmp_path, suffix):
    final = tmp_path / f"out{suffix}"
    with AtomicTableWriter(final, SCHEMA) as writer:
        writer.write(pa.table({TARGET: [1.0, 2.0]}))
        assert not final.exists() and writer.partial.exists() and writer.partial.parent == tmp_path
        assert writer.partial.name.startswith(f".out{suffix}.") and writer.partial.name.endswith(".partial")
        writer.commit()
    assert read(final)[TARGET].tolist() == [1.0, 2.0] and leftovers(tmp_path) == []


def test_a_failure_while_writing_keeps_the_previous_output_and_no_partial(tmp_path):
    final = tmp_path / "out.parquet"
    final.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with AtomicTableWriter(final, SCHEMA) as writer:
            writer.write(pa.table({TARGET: [1.0]}))
            raise RuntimeError("disk on fire")
    assert final.read_bytes() == b"previous result" and leftovers(tmp_path) == []


def test_partials_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    final = tmp_path / "out.csv"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_partial = Path(partial_path(str(final)).replace(f".{os.getpid()}.", f".{dead.stdout.strip()}."))
    live_partial = Path(partial_path(str(final)).replace(f".{os.getpid()}.", f".{os.getppid()}."))
    other_output = tmp_path / f".other.csv.{dead_partial.name.split('.', 3)[3]}"
    for path in (dead_partial, live_partial, other_output):
        path.write_text("half")
    with AtomicTableWriter(final, SCHEMA) as writer:
        writer.commit()
    assert not dead_partial.exists() and live_partial.exists() and other_output.exists()


def test_a_file_result_replaces_a_directory_result(tmp_path):
    final = tmp_path / "out.parquet"
    (final / "part-0000.parquet").parent.mkdir()
    (final / "part-0000.parquet").write_bytes(b"spark")
    with AtomicTableWriter(final, SCHEMA) as writer:
        writer.write(pa.table({TARGET: [3.0]}))
        writer.commit()
    assert final.is_file() and read(final)[TARGET].tolist() == [3.0] and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Scoring with the real pyfunc artifact
# ---------------------------------------------------------------------------------------------


def id_job(model_path, rows, tmp_path, source: str, target: str, **options) -> BatchJob:
    """A job over ``rows`` written as ``in<source>``, copying ``block_id``, in chunks of 40 rows."""
    input_path = write(rows, tmp_path / f"in{source}")
    return BatchJob(
        str(input_path),
        str(tmp_path / f"out{target}"),
        model_uri=model_path,
        id_column="block_id",
        chunk_size=40,
        **options,
    )


@pytest.mark.parametrize("source, target", [(".csv", ".parquet"), (".parquet", ".csv")])
def test_chunked_scoring_equals_one_predict_and_keeps_the_ids(
    model_path, rows, expected, tmp_path, source, target
):
    job = id_job(model_path, rows, tmp_path, source, target)
    result = score_local(job, model_path, progress=False)
    scored = read(Path(job.output))
    assert list(scored.columns) == ["block_id", TARGET]
    assert scored["block_id"].tolist() == rows["block_id"].tolist()
    np.testing.assert_allclose(scored[TARGET], expected, rtol=0, atol=1e-9)
    assert (result.rows_read, result.rows_scored, result.rows_rejected) == (130, 130, 0)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("source, target", [(".csv", ".parquet"), (".parquet", ".csv")])
def test_an_interval_adds_its_bounds_equal_to_the_pyfunc_with_params(
    model_path, rows, tmp_path, source, target
):
    job = id_job(model_path, rows, tmp_path, source, target, interval=0.8)
    job.check()
    score_local(job, model_path, progress=False)
    scored = read(Path(job.output))
    assert list(scored.columns) == ["block_id", TARGET, LOWER_COLUMN, UPPER_COLUMN]
    assert scored["block_id"].tolist() == rows["block_id"].tolist()
    in_process = mlflow.pyfunc.load_model(model_path).predict(
        rows[list(FEATURE_COLUMNS)], params={"interval": 0.8}
    )
    for column in (TARGET, LOWER_COLUMN, UPPER_COLUMN):
        np.testing.assert_allclose(scored[column], in_process[column], rtol=0, atol=1e-9)
    assert (scored[LOWER_COLUMN] <= scored[TARGET]).all() and (scored[TARGET] < scored[UPPER_COLUMN]).all()


def test_an_interval_from_a_model_without_the_parameter_is_refused(trained_model, rows, tmp_path):
    """MLflow would ignore the parameter with a warning: the job refuses before writing."""
    old = save_model(trained_model, tmp_path / "old-model", PREDICTION_INTERVALS.before)
    input_path = write(rows, tmp_path / "in.parquet")
    job = BatchJob(str(input_path), str(tmp_path / "out.parquet"), model_uri=old, interval=0.8)
    with pytest.raises(BatchError, match=f"^model_uri {old}: the model takes no 'interval' parameter$"):
        score_local(job, old, progress=False)
    assert not Path(job.output).exists() and leftovers(tmp_path) == []


def test_without_an_id_column_the_output_is_the_predictions_only(model_path, rows, expected, tmp_path):
    input_path = write(rows.drop(columns=["block_id", "total_bedrooms"]), tmp_path / "in.parquet")
    job = BatchJob(str(input_path), str(tmp_path / "out.parquet"), model_uri=model_path)
    score_local(job, model_path, progress=False)
    scored = read(Path(job.output))
    assert list(scored.columns) == [TARGET] and len(scored) == len(rows)


def test_an_empty_input_gives_an_empty_output_with_the_columns(model_path, rows, tmp_path):
    input_path = write(rows.head(0), tmp_path / "in.csv")
    job = BatchJob(str(input_path), str(tmp_path / "out.parquet"), model_uri=model_path, id_column="block_id")
    assert score_local(job, model_path, progress=False).rows_read == 0
    assert list(read(Path(job.output)).columns) == ["block_id", TARGET]


def broken_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows 57 and 101 (1-based) break the contract; row 90 holds text in a numeric column."""
    broken = rows.astype({"households": str})  # a text column, in Parquet too
    broken.loc[56, "households"] = "0.0"
    broken.loc[89, "households"] = f"x{SECRET}"
    broken.loc[100, "latitude"] = float(SECRET)
    broken.loc[100, "ocean_proximity"] = ""
    return broken


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_bad_row_fails_the_job_with_its_row_number_and_no_output(model_path, rows, tmp_path, suffix):
    input_path = write(broken_rows(rows), tmp_path / f"in{suffix}")
    output = tmp_path / "out.parquet"
    job = BatchJob(str(input_path), str(output), model_uri=model_path, chunk_size=50)
    with pytest.raises(BatchError) as failure:
        score_local(job, model_path, progress=False)
    assert str(failure.value) == (
        f"input {input_path}, row 57: column 'households': must be greater than 0 "
        "(use -P on_error=reject to set bad rows aside)"
    )
    assert not output.exists() and leftovers(tmp_path) == []


def test_text_in_a_numeric_column_fails_with_its_row_and_never_its_value(model_path, rows, tmp_path):
    broken = rows.astype({"total_bedrooms": str})
    broken.loc[77, "total_bedrooms"] = f"x{SECRET}"  # the nullable column: must not be imputed silently
    input_path = write(broken, tmp_path / "in.csv")
    job = BatchJob(str(input_path), str(tmp_path / "out.csv"), model_uri=model_path, chunk_size=50)
    with pytest.raises(BatchError, match=r"row 78: column 'total_bedrooms': must be a number") as failure:
        score_local(job, model_path, progress=False)
    assert SECRET not in str(failure.value)


def test_reject_sets_bad_rows_aside_with_row_column_and_rule(model_path, rows, expected, tmp_path):
    input_path = write(broken_rows(rows), tmp_path / "in.csv")
    job = BatchJob(
        str(input_path),
        str(tmp_path / "out.parquet"),
        model_uri=model_path,
        id_column="block_id",
        chunk_size=50,
        on_error="reject",
    )
    result = score_local(job, model_path, progress=False)
    assert (result.rows_read, result.rows_scored, result.rows_rejected) == (130, 127, 3)
    rejected = read(Path(job.rejects_path()))
    assert rejected.to_dict("records") == [
        {"block_id": "b0056", "row": 57, "column": "households", "rule": "must be greater than 0"},
        {"block_id": "b0089", "row": 90, "column": "households", "rule": "must be a number"},
        {
            "block_id": "b0100",
            "row": 101,
            "column": "latitude",
            "rule": "must lie in California, between 32.0 and 42.5",
        },
        {"block_id": "b0100", "row": 101, "column": "ocean_proximity", "rule": "must be a non-empty string"},
    ]
    scored = read(Path(job.output))
    kept = ~rows["block_id"].isin(["b0056", "b0089", "b0100"]).to_numpy()
    assert scored["block_id"].tolist() == rows["block_id"][kept].tolist()
    np.testing.assert_allclose(scored[TARGET], expected[kept], rtol=0, atol=1e-9)
    assert SECRET not in Path(job.rejects_path()).read_text(errors="replace")


def test_reject_with_a_clean_input_still_writes_an_empty_rejects_file(model_path, rows, tmp_path):
    input_path = write(rows, tmp_path / "in.parquet")
    job = BatchJob(str(input_path), str(tmp_path / "out.csv"), model_uri=model_path, on_error="reject")
    assert score_local(job, model_path, progress=False).rows_rejected == 0
    rejected = read(Path(job.rejects_path()))
    assert list(rejected.columns) == ["row", "column", "rule"] and len(rejected) == 0


def test_a_missing_column_fails_even_when_rejecting(model_path, rows, tmp_path):
    input_path = write(rows.drop(columns="median_income"), tmp_path / "in.csv")
    job = BatchJob(str(input_path), str(tmp_path / "out.csv"), model_uri=model_path, on_error="reject")
    with pytest.raises(BatchError, match="column 'median_income': required column is missing"):
        score_local(job, model_path, progress=False)
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.csv").exists()


def test_a_malformed_csv_fails_without_quoting_the_row(model_path, rows, tmp_path):
    path = write(rows, tmp_path / "in.csv")
    lines = path.read_text().splitlines()
    lines[60] += f",{SECRET}"
    path.write_text("\n".join(lines) + "\n")
    job = BatchJob(str(path), str(tmp_path / "out.csv"), model_uri=model_path, chunk_size=50)
    with pytest.raises(
        BatchError, match="row 60: malformed CSV: 11 fields where the header has 10"
    ) as failure:
        score_local(job, model_path, progress=False)
    assert SECRET not in str(failure.value) and leftovers(tmp_path) == []


def test_a_chunk_of_only_bad_rows_is_rejected_whole(model_path, rows, expected, tmp_path):
    broken = rows.copy()
    broken.loc[:9, "households"] = 0.0
    input_path = write(broken, tmp_path / "in.parquet")
    job = BatchJob(
        str(input_path), str(tmp_path / "out.parquet"), model_uri=model_path, chunk_size=10, on_error="reject"
    )
    result = score_local(job, model_path, progress=False)
    assert (result.rows_scored, result.rows_rejected) == (120, 10)
    assert read(Path(job.rejects_path()))["row"].tolist() == list(range(1, 11))
    np.testing.assert_allclose(read(Path(job.output))[TARGET], expected[10:], rtol=0, atol=1e-9)
