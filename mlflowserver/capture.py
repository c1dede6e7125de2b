"""Opt-in capture of what the runtime serves, for monitoring (docs/workflows/monitoring.md).

With ``MLFLOWSERVER_CAPTURE_DIR`` set, every answered request becomes rows of Parquet files in
that directory: one row per input row, with the request id, the row's position in the request,
the time, the loaded model's ``run_id`` (which names its registered version), the decoded input
columns as the pyfunc got them, every output the model returned (interval bounds included,
null for rows that did not ask) and the inference parameters (``param_<name>``, null when not
given).

The request path only appends a reference to what it already holds to a bounded buffer (no
copy, no lock, no wake-up); every ``FLUSH_SECONDS`` a background thread drains it, turns the
records into one Arrow table and appends it as a row group to the open file. When the buffer
is full the record is dropped and counted (``mlflowserver_capture_dropped_rows_total`` on
``/metrics``, and in the log at each rotation): recording never slows or fails a request.

Files are written under a hidden name and renamed into place when closed: after
``MAX_FILE_MB`` or ``MAX_FILE_SECONDS``, when a new column appears (the first request asking
for an interval adds its bounds' columns; rows without them get nulls) and at exit. A reader
sees only complete files; a killed process loses at most the open file (``MAX_FILE_SECONDS``
of traffic).

Settings (environment): ``MLFLOWSERVER_CAPTURE_DIR`` (on when set), ``..._MAX_FILE_MB``
(default 64), ``..._MAX_FILE_SECONDS`` (300), ``..._BUFFER`` (queued requests, 10,000),
``..._FLUSH_SECONDS`` (how long records wait to be batched, 1).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import Counter

logger = logging.getLogger("mlflowserver.capture")

ENV_PREFIX = "MLFLOWSERVER_CAPTURE_"
DIR_ENV = f"{ENV_PREFIX}DIR"

# The columns every capture file has besides the model's inputs, outputs and parameters.
REQUEST_ID = "request_id"
ROW = "row"
TIMESTAMP = "timestamp"
MODEL_RUN_ID = "model_run_id"
PARAM_PREFIX = "param_"
FILE_PREFIX = "capture-"
FILE_SUFFIX = ".parquet"

CAPTURED_ROWS = Counter("mlflowserver_capture_rows", "Rows written to capture files")
DROPPED_ROWS = Counter(
    "mlflowserver_capture_dropped_rows", "Rows not captured: the buffer was full or a write failed"
)


class CaptureConfigError(ValueError):
    """A capture setting is unusable (the server then refuses to start)."""


@dataclass(frozen=True)
class CaptureSettings:
    directory: Path
    max_bytes: int = 64 << 20
    max_seconds: float = 300.0
    buffer: int = 10_000
    flush_seconds: float = 1.0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> CaptureSettings | None:
        """The settings ``environ`` gives, or None when capture is off."""
        directory = environ.get(DIR_ENV, "")
        if not directory:
            return None

        def number(name: str, default: float, scale: float = 1) -> float:
            text = environ.get(f"{ENV_PREFIX}{name}", "")
            try:
                value = float(text) if text else default
            except ValueError:
                raise CaptureConfigError(f"{ENV_PREFIX}{name} must be a number, not {text!r}") from None
            if value <= 0:
                raise CaptureConfigError(f"{ENV_PREFIX}{name} must be positive, not {text!r}")
            return value * scale

        return cls(
            directory=Path(directory),
            max_bytes=int(number("MAX_FILE_MB", cls.max_bytes / (1 << 20), 1 << 20)),
            max_seconds=number("MAX_FILE_SECONDS", cls.max_seconds),
            buffer=int(number("BUFFER", cls.buffer)),
            flush_seconds=number("FLUSH_SECONDS", cls.flush_seconds),
        )


class _Record(NamedTuple):
    """One answered request (a tuple: built on the request path, it must cost next to nothing)."""

    nanoseconds: int
    request_id: str
    rows: int
    inputs: Mapping[str, np.ndarray]
    outputs: Sequence[tuple[str, np.ndarray]]
    params: Mapping[str, object]


class Capture:
    """Records requests to Parquet files in ``settings.directory`` from a background thread.

    ``model_run_id`` goes into every row; ``input_names`` are the model's input columns, in the
    order of its signature (a column a request leaves out is null); ``param_names`` are its
    declared inference parameters (each a ``param_<name>`` column). Close it (``close``, or at
    interpreter exit) to write the last file.
    """

    def __init__(
        self,
        settings: CaptureSettings,
        model_run_id: str,
        input_names: Sequence[str],
        param_names: Sequence[str] = (),
    ):
        self.settings = settings
        self.model_run_id = model_run_id
        self.input_names = tuple(input_names)
        self.param_names = tuple(param_names)
        self.dropped_rows = 0
        # A deque, not a queue.Queue: append and popleft are atomic and take no lock, and nothing
        # wakes the writer per request (it drains the deque every flush_seconds).
        self._pending: deque[_Record] = deque()
        self._stop = threading.Event()
        self._writer: _RotatingWriter | None = None
        try:
            settings.directory.mkdir(parents=True, exist_ok=True)
            probe = settings.directory / f".probe-{uuid.uuid4().hex}"
            probe.touch()
            probe.unlink()
        except OSError as error:
            raise CaptureConfigError(
                f"capture directory {settings.directory} is not writable: {error}"
            ) from None
        self._thread = threading.Thread(target=self._run, name="mlflowserver-capture", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def record(
        self,
        request_id: str,
        rows: int,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[tuple[str, np.ndarray]],
        params: Mapping,
    ) -> None:
        """Queue one answered request of ``rows`` rows (on the request path: never blocks, never
        raises). ``inputs`` are its decoded input columns by name, as the pyfunc's DataFrame was
        built from them: arrays, not the DataFrame, because joining many small DataFrames costs
        the writer many times what joining their arrays does, and that time is taken from the
        requests the writer runs beside."""
        if len(self._pending) >= self.settings.buffer:
            self.dropped_rows += rows
            DROPPED_ROWS.inc(rows)
            return
        self._pending.append(_Record(time.time_ns(), str(request_id), rows, inputs, outputs, params))

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, close the open file into place and stop the thread."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout)

    # -- background thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.settings.flush_seconds)
            records = []
            while self._pending:
                records.append(self._pending.popleft())
            self._flush(records)
            if self._writer is not None and (stopping or self._writer.expired()):
                self._close_file()
            if stopping:
                return

    def _flush(self, records: list[_Record]) -> None:
        if not records:
            return
        rows = sum(r.rows for r in records)
        try:
            table = self._table(records)
            if self._writer is not None:
                aligned = _aligned(table, self._writer.schema)
                if aligned is None:
                    # A new column (the first interval's bounds) or type: a new file with both schemas.
                    schema = pa.unify_schemas(
                        [self._writer.schema, table.schema], promote_options="permissive"
                    )
                    self._close_file()
                    table = _aligned(table, schema)
                    self._writer = _RotatingWriter(self.settings, schema)
                else:
                    table = aligned
            if self._writer is None:
                self._writer = _RotatingWriter(self.settings, table.schema)
            self._writer.write(table)
            CAPTURED_ROWS.inc(rows)
            if self._writer.full():
                self._close_file()
        except Exception:  # noqa: BLE001 - a capture failure must never reach the request path
            logger.exception("capture: %d rows could not be written to %s", rows, self.settings.directory)
            self.dropped_rows += rows
            DROPPED_ROWS.inc(rows)
            if self._writer is not None:
                self._writer.abandon()
                self._writer = None

    def _close_file(self) -> None:
        self._writer.close()
        logger.info(
            "capture: wrote %d rows to %s (%d rows dropped since start)",
            self._writer.rows,
            self._writer.path,
            self.dropped_rows,
        )
        self._writer = None

    def _table(self, records: list[_Record]) -> pa.Table:
        """One Arrow table for ``records``: metadata columns, inputs, outputs, parameters."""
        counts = [r.rows for r in records]
        total = sum(counts)
        columns: dict[str, pa.Array] = {
            REQUEST_ID: pa.array(np.repeat(np.array([r.request_id for r in records], dtype=object), counts)),
            ROW: pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in counts])),
            TIMESTAMP: pa.array(
                np.repeat(np.array([r.nanoseconds // 1000 for r in records], dtype="datetime64[us]"), counts),
                type=pa.timestamp("us", tz="UTC"),
            ),
            MODEL_RUN_ID: pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(total, dtype=np.int32)), pa.array([self.model_run_id])
            ),
        }
        for name in self.input_names:
            columns[name] = _concatenate([r.inputs.get(name) for r in records], counts)
        outputs = list(dict.fromkeys(name for r in records for name, _ in r.outputs))
        for name in outputs:
            if name in columns:
                raise ValueError(f"output '{name}' has the name of a capture column")
            columns[name] = _concatenate([dict(r.outputs).get(name) for r in records], counts)
        for name in self.param_names:
            values = [r.params.get(name) for r in records]
            columns[f"{PARAM_PREFIX}{name}"] = pa.array(np.repeat(np.array(values, dtype=object), counts))
        return pa.table(columns)


def _concatenate(parts: list, counts: list[int]) -> pa.Array:
    """One column from per-record values (a Series, an array, or None for a record without it)."""
    if all(part is not None for part in parts):
        # One conversion for the whole batch: per-record Arrow arrays cost more than the rest.
        return pa.array(np.concatenate([np.asarray(part) for part in parts]), from_pandas=True)
    arrays = [
        pa.nulls(n) if part is None else pa.array(np.asarray(part), from_pandas=True)
        for part, n in zip(parts, counts, strict=True)
    ]
    typed = [a.type for a in arrays if not pa.types.is_null(a.type)]
    if not typed:
        return pa.concat_arrays(arrays)
    return pa.concat_arrays([a.cast(typed[0]) if pa.types.is_null(a.type) else a for a in arrays])


def _aligned(table: pa.Table, schema: pa.Schema) -> pa.Table | None:
    """``table`` in ``schema`` (its missing columns null), or None when it has other columns or
    a value that does not cast."""
    if not set(table.column_names) <= set(schema.names):
        return None
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        try:
            columns.append(column if column.type == field.type else column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    return pa.Table.from_arrays(columns, schema=schema)


class _RotatingWriter:
    """One capture file: written under a hidden name, renamed into place by ``close``."""

    def __init__(self, settings: CaptureSettings, schema: pa.Schema):
        self.settings = settings
        self.schema = schema
        # Names sort by opening time (to the microsecond), then host and process.
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = (
            f"{FILE_PREFIX}{stamp}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{FILE_SUFFIX}"
        )
        self.path = settings.directory / name
        self.partial = settings.directory / f".{name}.partial"
        self.opened = time.monotonic()
        self.rows = 0
        self._writer = pq.ParquetWriter(self.partial, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)
        self.rows += table.num_rows

    def full(self) -> bool:
        return self.partial.stat().st_size >= self.settings.max_bytes

    def expired(self) -> bool:
        return time.monotonic() - self.opened >= self.settings.max_seconds

    def close(self) -> None:
        self._writer.close()
        os.replace(self.partial, self.path)

    def abandon(self) -> None:
        try:
            self._writer.close()
        finally:
            self.partial.unlink(missing_ok=True)


def capture_files(directory: Path) -> list[Path]:
    """The complete capture files in ``directory`` (open files are hidden), oldest name first."""
    return sorted(p for p in directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}") if p.is_file())


def request_id(headers: Mapping[str, str] | None) -> str:
    """The id a V1 request is captured under: its ``x-request-id`` header, else a new one."""
    return (headers or {}).get("x-request-id") or uuid.uuid4().hex


def from_environment(
    model_run_id: str, input_names: Sequence[str], param_names: Sequence[str]
) -> Capture | None:
    """The capture the environment asks for (None when ``MLFLOWSERVER_CAPTURE_DIR`` is unset).

    Only a model whose inputs are columns is captured: monitoring compares columns.
    """
    settings = CaptureSettings.from_environment()
    if settings is None:
        return None
    if not input_names:
        logger.warning("capture: %s is set, but the model's inputs are tensors, not columns: off", DIR_ENV)
        return None
    return Capture(settings, model_run_id, input_names, param_names)
