"""Atomic output: a hidden partial beside the final path, renamed into place when complete.

A job that fails or is killed leaves at most a hidden ``.<name>.<host>.<pid>.partial``
beside the output, which the next job writing the same output removes once that process
is gone. The Spark engine applies the same naming through Hadoop's FileSystem
(``model.batch.spark``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from model.batch.job import BatchError, file_format


def _partial_prefix(final: str) -> str:
    """``.<name>.<host>.``: the name of ``final``'s partials up to the writing process's pid."""
    return f".{final.rstrip('/').rpartition('/')[2]}.{socket.gethostname()}."


def partial_path(final: str) -> str:
    """``<dir>/.<name>.<host>.<pid>.partial``: same directory (the rename is atomic), hidden from readers."""
    parent = final.rstrip("/").rpartition("/")[0]
    return f"{parent + '/' if parent else ''}{_partial_prefix(final)}{os.getpid()}.partial"


def left_by_dead_process(name: str, final: str, suffix: str = ".partial") -> bool:
    """Whether the file or directory ``name`` is a partial of ``final`` (or, with ``suffix``
    ``.old``, a previous result it moved aside) whose process, on this host, is gone.

    Only this host's pids can be checked; partials of other hosts (on shared storage) are left alone.
    """
    prefix = _partial_prefix(final)
    pid = name[len(prefix) : -len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
    return pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace(partial: Path, final: Path) -> None:
    """Rename the file ``partial`` to ``final``; a directory at ``final`` (a Spark result) is replaced too."""
    if final.is_dir() and not final.is_symlink():
        # os.replace cannot put a file over a directory: move it aside, rename, then delete it.
        aside = partial.with_name(partial.name[: -len(".partial")] + ".old")
        os.replace(final, aside)
        os.replace(partial, final)
        _remove(aside)
    else:
        os.replace(partial, final)
    with contextlib.suppress(OSError):  # not every filesystem can sync a directory
        _fsync(final.parent)


class AtomicTableWriter:
    """Write Arrow tables as CSV or Parquet (by ``final``'s extension) into a partial file.

    ``commit()`` closes, fsyncs and renames it to ``final``; leaving the ``with`` block
    without a commit (an error, Ctrl-C) removes the partial. A SIGKILL leaves it behind,
    hidden, for the next writer of ``final`` to remove.
    """

    def __init__(self, final: Path, schema: pa.Schema):
        self.final = Path(final)
        self.schema = schema
        self.format = file_format(str(final), "output")
        self.partial = Path(partial_path(str(self.final.absolute())))
        self._writer = None
        self._committed = False

    def __enter__(self) -> AtomicTableWriter:
        if not self.final.parent.is_dir():
            raise BatchError(f"output directory {self.final.parent} does not exist")
        for candidate in self.final.parent.iterdir():
            if left_by_dead_process(candidate.name, self.final.name):
                _remove(candidate)
        if self.format == "parquet":
            self._writer = pq.ParquetWriter(self.partial, self.schema, compression="snappy")
        else:
            self._writer = pcsv.CSVWriter(self.partial, self.schema)
        return self

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def commit(self) -> None:
        self._writer.close()
        _fsync(self.partial)
        replace(self.partial, self.final)
        self._committed = True

    def __exit__(self, *exc_info) -> None:
        if not self._committed:
            with contextlib.suppress(Exception):
                self._writer.close()
            _remove(self.partial)
