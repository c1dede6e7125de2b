"""A real pseudo-terminal, for what a program shows on a terminal rather than in a log (progress
bars redrawn in place): it writes to :attr:`PseudoTerminal.stream` in process, or gets
:attr:`PseudoTerminal.fd` as its standard streams; :attr:`PseudoTerminal.output` is what the
terminal received."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import termios
import threading


class PseudoTerminal:
    """A pseudo-terminal ``columns`` wide, read as it is written: a full terminal buffer would
    block the writer."""

    def __init__(self, columns: int = 120, rows: int = 40):
        self._master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.stream = os.fdopen(slave, "w", buffering=1)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, name="pseudo-terminal", daemon=True)
        self._reader.start()

    @property
    def fd(self) -> int:
        return self.stream.fileno()

    @property
    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every writing end is closed
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def close(self) -> str:
        """Close this process's writing end; once every other writer (a child) has exited too,
        return everything the terminal received."""
        self.stream.close()
        self._reader.join(timeout=60)
        os.close(self._master)
        return self.output
