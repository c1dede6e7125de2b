"""The rows a monitoring run judges: a window of what was served, optionally with true values.

Two sources, one shape (the nine inputs, the served ``median_house_value``, and the interval's
bounds and level where one was asked for):

* the V2 runtime's capture (``mlflowserver.capture``): a directory of capture files, or one
  file, cut to ``[since, until)`` by the time each request was answered. Every row names the
  run of the model that served it, so the monitor knows the version.
* a ``batch_predict`` output with ids (``-P id_column=…``) and the input file it scored, joined
  on that id column (outputs hold no inputs; rejected rows are absent from them).

True values come from a labels file (CSV or Parquet) with the id column(s) and
``median_house_value``, joined on the id: ``request_id`` and ``row`` (the row's position in
its request) for a capture, ``request_id`` alone when the labels have no ``row`` column, or
the batch's id column. Every problem is a :class:`MonitorError` with a one-line message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlflowserver.capture import MODEL_RUN_ID, PARAM_PREFIX, REQUEST_ID, ROW, TIMESTAMP, capture_files
from model.data import FEATURE_COLUMNS, TARGET
from model.intervals import INTERVAL_PARAM, LOWER_COLUMN, UPPER_COLUMN
from model.monitoring.statistics import LEVEL, TRUE_VALUE


class MonitorError(Exception):
    """The monitor cannot judge this input; ``str()`` is one line."""


@dataclass(frozen=True)
class Window:
    frame: pd.DataFrame
    source: str
    keys: tuple[str, ...]  # the columns that identify a row (for the labels join)
    model_run_ids: tuple[str, ...]  # the runs of the models that served it (captures only)


RELATIVE_TIME = re.compile(r"^-(\d+(?:\.\d+)?)([mhd])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, what: str, now: datetime | None = None) -> datetime | None:
    """An ISO 8601 time (UTC without a zone), or ``-30m``/``-1h``/``-7d`` before ``now``; '' for none."""
    if not text:
        return None
    relative = RELATIVE_TIME.match(text)
    if relative:
        return (now or datetime.now(UTC)) - timedelta(**{UNITS[relative[2]]: float(relative[1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MonitorError(
            f"{what} must be an ISO 8601 time such as 2026-01-31T12:00:00Z, or -1h, -30m, -7d; not {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (ids read as they are written)."""
    if not path.is_file():
        raise MonitorError(f"{what} {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(path).to_pandas()
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype={"ocean_proximity": "string"}, keep_default_na=True)
    except (pa.ArrowInvalid, OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise MonitorError(f"{what} {path} is not readable: {' '.join(str(error).split())[:200]}") from None
    raise MonitorError(
        f"{what} {path}: unknown format {path.suffix or '(no extension)'!r}; use .csv or .parquet"
    )


def read_window(
    path: Path,
    since: datetime | None = None,
    until: datetime | None = None,
    inputs: Path | None = None,
    id_column: str = "",
    interval: float | None = None,
) -> Window:
    """The window at ``path`` (a capture directory or file, or a batch output with ``inputs``)."""
    if path.is_dir():
        files = capture_files(path)
        if not files:
            raise MonitorError(f"no capture files (capture-*.parquet) in {path}")
        try:
            frame = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default").to_pandas()
        except (pa.ArrowInvalid, OSError) as error:
            raise MonitorError(f"capture files in {path} are not readable: {str(error)[:200]}") from None
    else:
        frame = read_table(path, "window")
    if REQUEST_ID in frame and TIMESTAMP in frame:
        return _capture_window(frame, str(path), since, until)
    if since or until:
        raise MonitorError(f"{path} is not a capture (no {TIMESTAMP} column): since/until need one")
    return _batch_window(frame, path, inputs, id_column, interval)


def _capture_window(frame: pd.DataFrame, source: str, since, until) -> Window:
    if since is not None:
        frame = frame[frame[TIMESTAMP] >= since]
    if until is not None:
        frame = frame[frame[TIMESTAMP] < until]
    span = f" between {since or 'the start'} and {until or 'the end'}" if since or until else ""
    if frame.empty:
        raise MonitorError(f"no rows in the window: {source} holds no captured row{span}")
    _require(frame, (*FEATURE_COLUMNS, TARGET), source)
    level = f"{PARAM_PREFIX}{INTERVAL_PARAM}"
    frame = frame.assign(**{LEVEL: frame[level] if level in frame else float("nan")})
    runs = (
        tuple(sorted(str(r) for r in frame[MODEL_RUN_ID].dropna().unique())) if MODEL_RUN_ID in frame else ()
    )
    return Window(frame.reset_index(drop=True), f"{source}{span}", (REQUEST_ID, ROW), runs)


def _batch_window(frame: pd.DataFrame, path: Path, inputs: Path | None, id_column: str, interval) -> Window:
    if frame.empty:
        raise MonitorError(f"no rows in the window: {path} is empty")
    if not inputs or not id_column:
        raise MonitorError(
            f"{path} is not a capture: for a batch_predict output give its input file (inputs=…) "
            "and the id column it was scored with (id_column=…)"
        )
    _require(frame, (id_column, TARGET), str(path))
    scored = read_table(inputs, "inputs")
    _require(scored, (id_column, *(c for c in FEATURE_COLUMNS if c != "total_bedrooms")), str(inputs))
    for what, table in (("window", frame), ("inputs", scored)):
        if table[id_column].duplicated().any():
            raise MonitorError(f"{what} has repeated values in id column {id_column!r}: ids must be unique")
    scored = scored.reindex(columns=[id_column, *FEATURE_COLUMNS])
    joined = frame.merge(scored, on=id_column, how="inner", suffixes=("", "_input"))
    if len(joined) < len(frame):
        raise MonitorError(
            f"{len(frame) - len(joined)} of {len(frame)} rows of {path} have no input row in {inputs}"
        )
    bounds = LOWER_COLUMN in joined and UPPER_COLUMN in joined
    if bounds and interval is None:
        raise MonitorError(f"{path} has interval bounds: give the level it was scored at (interval=…)")
    joined[LEVEL] = interval if bounds else float("nan")
    return Window(joined, str(path), (id_column,), ())


def _require(frame: pd.DataFrame, columns, source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MonitorError(f"{source} lacks column '{missing[0]}'")


def join_labels(window: Window, labels_path: Path, id_column: str = "") -> Window:
    """``window`` with each row's true value (``TRUE_VALUE``) from the labels file, on the ids."""
    labels = read_table(labels_path, "labels")
    keys = tuple(id_column.split(",")) if id_column else window.keys
    if keys == (REQUEST_ID, ROW) and ROW not in labels:
        keys = (REQUEST_ID,)
    _require(labels, (*keys, TARGET), f"labels {labels_path}")
    _require(window.frame, keys, f"window {window.source}")
    for what, table in (("window", window.frame), ("labels", labels)):
        if table.duplicated(list(keys)).any():
            raise MonitorError(
                f"{what} has repeated ids on ({', '.join(keys)}): each row needs its own"
                + (
                    " (batch requests share a request_id: give the labels a row column)"
                    if keys == (REQUEST_ID,)
                    else ""
                )
            )
    right = labels[[*keys, TARGET]].rename(columns={TARGET: TRUE_VALUE})
    left = window.frame.drop(columns=[TRUE_VALUE], errors="ignore")
    # Ids compare as text: a CSV's "7" and a Parquet's 7 are the same block.
    left_keys = left[list(keys)].astype(str)
    right_keys = right[list(keys)].astype(str)
    joined = left.assign(**{f"_key_{k}": left_keys[k] for k in keys}).merge(
        right.drop(columns=list(keys)).assign(**{f"_key_{k}": right_keys[k] for k in keys}),
        on=[f"_key_{k}" for k in keys],
        how="left",
    )
    joined = joined.drop(columns=[f"_key_{k}" for k in keys])
    if joined[TRUE_VALUE].notna().sum() == 0:
        raise MonitorError(
            f"labels {labels_path} join none of the window's {len(joined):,} rows on ({', '.join(keys)})"
        )
    return Window(joined, window.source, keys, window.model_run_ids)
