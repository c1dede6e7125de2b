"""What a target must do with a bad-input case (``Outcome``: accept it, or refuse it with a status
and a message naming the problem), and how an answer can fall short (``Deviation``, one kind per
broken requirement), which a case's ``Known`` deviation names. The cases themselves: ``cases``."""

from __future__ import annotations

from dataclasses import dataclass

# What a Python stack trace in an error looks like.
TRACE_SIGNS = ("Traceback (most recent call last)", 'File "', "stack_trace")


class Deviation(Exception):
    """A requirement of every case broken, of a kind a known deviation names (``xfail(raises=)``)."""


class ServerError(Deviation):
    """The server answered 5xx."""


class Accepted(Deviation):
    """A request that should be refused was answered with predictions."""


class Echo(Deviation):
    """The error echoes values from the payload."""


class StackTrace(Deviation):
    """The error body carries a Python stack trace."""


class Vague(Deviation):
    """The error message does not name the column and the problem."""


@dataclass(frozen=True)
class Known:
    """A known deviation of MLflow's: the case must fail with exactly ``kind`` (a strict xfail)."""

    kind: type[Deviation]
    reason: str


@dataclass(frozen=True)
class Outcome:
    """What a target must do with a case.

    ``status``: 200 = accepted (predictions compared with the in-process model), else the exact
    error status (the CLI: any non-zero exit). ``mentions``: case-insensitive substrings the
    error message must contain (the column and the problem).
    """

    status: int = 400
    mentions: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.status == 200


ACCEPT = Outcome(200)


def reject(*mentions: str, status: int = 400) -> Outcome:
    return Outcome(status, tuple(mentions))
