"""The alias lease: which one process may move ``champion`` now, on a registry without compare-and-set.

MLflow can set an alias but not "set it if it still is X", so ``promote`` and ``rollback``
move ``champion`` only while they hold this lease. The argument for why two live holders
never both move it is in docs/mlflow/model-registry.md ("The alias lease"); in short:

* **Claims.** The lease, and each *guard* below, is a registered model created with a fresh
  nonce in its tags. Creating a registered model is atomic in every SQL store, directly or
  through a tracking server (unique name), so of any number of creators exactly one wins.
* **Renewal.** The holder's background thread writes a heartbeat tag (keyed by its nonce)
  every ``renew_every`` seconds. A heartbeat counts, once written, only if nobody is ending
  the lease (its guard is absent) and the lease still carries the holder's nonce.
* **Tenure.** The holder moves an alias only before ``duration - margin`` has passed since
  it sent its last counted heartbeat (or the creation): the ``margin`` is how long one
  request may be in flight, so its last move lands before anyone may take the lease over.
* **Takeover.** A contender presumes the holder dead once it has seen the same record
  (nonce and heartbeat) for ``duration`` seconds of its own clock. To delete that lease it
  first creates the lease's guard (``<lease>.ending.<nonce>``, atomic, so one contender at
  a time), re-reads the lease and deletes it only if the record is still the one it
  watched, all within the guard's own tenure. Only a guard's owner deletes a lease, so a
  takeover never deletes a newer holder's lease; the releasing holder goes through the
  same guard. A guard left by a dead process is ended the same way (its own guard).

Decisions are on plain values (:class:`Watch`, :class:`Tenure`) and an injectable clock, so
tests/code/test_lease.py can step through interleavings without waiting.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from model.registry import MODEL_NAME, utc_now

LEASE_NAME = f"{MODEL_NAME}.alias-lease"
NONCE_TAG = "lease.nonce"
HOLDER_TAG = "lease.holder"
DURATION_VARIABLE = "ALIAS_LEASE_SECONDS"
DEFAULT_DURATION = 30.0

Clock = Callable[[], float]


class LeaseError(RuntimeError):
    """The lease could not be had, or was lost; ``str()`` is one line."""


@dataclass(frozen=True)
class LeaseTimes:
    """How long a silent holder keeps the lease, and every timing derived from it.

    Parameters
    ----------
    duration : float
        Seconds a contender watches an unchanged lease before presuming its holder dead:
        a killed holder is replaced this long after a contender first sees its lease.
    """

    duration: float = DEFAULT_DURATION

    @property
    def margin(self) -> float:
        """A holder stops moving aliases this long before its lease could be taken over: the
        longest one request (an alias move, a delete) may be in flight."""
        return self.duration / 3

    @property
    def renew_every(self) -> float:
        return self.duration / 6

    @property
    def poll(self) -> float:
        return min(0.5, self.duration / 10)

    @property
    def patience(self) -> float:
        """How long a contender waits before giving up: a live holder's turn, or up to two
        takeovers (a dead holder's lease, then a guard a dead contender left)."""
        return 4 * self.duration

    @classmethod
    def from_environment(cls) -> LeaseTimes:
        """``ALIAS_LEASE_SECONDS`` when set (tests shorten it), else the default."""
        text = os.environ.get(DURATION_VARIABLE, "")
        if not text:
            return cls()
        try:
            duration = float(text)
        except ValueError:
            duration = float("nan")
        if not duration > 0:  # NaN fails too
            raise LeaseError(f"{DURATION_VARIABLE} must be a positive number of seconds, not {text!r}")
        return cls(duration)


@dataclass(frozen=True)
class Record:
    """What anyone reads of a claim: its nonce, its holder's latest heartbeat, and who holds it."""

    nonce: str
    heartbeat: str
    holder: str


class Watch:
    """A contender's view of one claim: expired once the same record was seen for ``duration``.

    Only the watcher's own clock is used, from the moment it first saw the record, so clocks
    of different hosts need not agree (only run at the same rate).
    """

    def __init__(self, duration: float):
        self.duration = duration
        self.record: Record | None = None
        self.since = 0.0

    def expired(self, record: Record, now: float) -> bool:
        if record != self.record:
            self.record, self.since = record, now
            return False
        return now - self.since >= self.duration


class Tenure:
    """A holder's view of its own claim: valid until ``duration - margin`` after it sent the
    latest write it has counted, unless it found the claim lost."""

    def __init__(self, times: LeaseTimes, sent_at: float):
        self.times = times
        self.valid_until = sent_at + times.duration - times.margin
        self.lost = ""

    def confirm(self, sent_at: float) -> None:
        self.valid_until = max(self.valid_until, sent_at + self.times.duration - self.times.margin)

    def lose(self, why: str) -> None:
        self.lost = why

    def problem(self, now: float) -> str:
        """Why the holder may not act at ``now``; "" while it may."""
        if self.lost:
            return self.lost
        if now >= self.valid_until:
            since_counted = now - (self.valid_until - self.times.duration + self.times.margin)
            replaced = f"a silent holder is replaced after {self.times.duration:g}s"
            return f"no heartbeat counted for {since_counted:.1f}s ({replaced})"
        return ""


def guard_name(name: str, nonce: str) -> str:
    """The claim whose owner alone may delete the claim ``name`` carrying ``nonce``."""
    return f"{name}.ending.{nonce or 'unowned'}"


def heartbeat_tag(nonce: str) -> str:
    # Keyed by nonce: a late heartbeat of an old holder never changes a newer holder's record.
    return f"lease.heartbeat.{nonce}"


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()} since {utc_now()}"


class Claims:
    """The registered models a lease is made of, on one registry."""

    def __init__(self, client: MlflowClient):
        self.client = client

    def create(self, name: str, nonce: str, holder: str) -> bool:
        """Create ``name`` carrying ``nonce``; False when it exists (exactly one creator wins)."""
        tags = {NONCE_TAG: nonce, HOLDER_TAG: holder, heartbeat_tag(nonce): "0"}
        try:
            self.client.create_registered_model(name, tags=tags)
        except MlflowException as error:
            # DOES_NOT_EXIST: the store's read-back of the conflicting row found it deleted
            # in between; either way another process had it.
            if error.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                return False
            raise
        return True

    def read(self, name: str) -> Record | None:
        try:
            tags = self.client.get_registered_model(name).tags
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        nonce = tags.get(NONCE_TAG, "")
        return Record(nonce, tags.get(heartbeat_tag(nonce), ""), tags.get(HOLDER_TAG, "unknown"))

    def beat(self, name: str, nonce: str, value: str) -> None:
        self.client.set_registered_model_tag(name, heartbeat_tag(nonce), value)

    def delete(self, name: str) -> None:
        try:
            self.client.delete_registered_model(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise


class Contender:
    """Frees claims whose holders are gone: the watches a waiting process keeps between polls."""

    def __init__(self, claims: Claims, times: LeaseTimes, clock: Clock):
        self.claims, self.times, self.clock = claims, times, clock
        self.watches: dict[str, Watch] = {}

    def free(self, name: str) -> Record | None:
        """One look at ``name``: end it if its record has not changed for ``duration``.
        Returns the record seen (None when ``name`` does not exist)."""
        record = self.claims.read(name)
        if record is not None:
            watch = self.watches.setdefault(name, Watch(self.times.duration))
            if watch.expired(record, self.clock()):
                self.end(name, record.nonce, lambda current: current == record)
        return record

    def end(self, name: str, nonce: str, still: Callable[[Record | None], bool]) -> bool:
        """Delete ``name`` if, re-read under its guard, ``still(record)`` holds.

        False when another process holds the guard (a guard left by a dead process is
        watched and ended like any claim).
        """
        guard = guard_name(name, nonce)
        sent = self.clock()
        if not self.claims.create(guard, uuid.uuid4().hex, this_process()):
            self.free(guard)
            return False
        tenure = Tenure(self.times, sent)
        try:
            if still(self.claims.read(name)) and not tenure.problem(self.clock()):
                self.claims.delete(name)
        finally:
            # Past its tenure the guard may already be another's: leave it to expire.
            if not tenure.problem(self.clock()):
                self.claims.delete(guard)
        return True


class AliasLease:
    """The lease, held: :meth:`check` before each alias move; renewed by :func:`alias_lease`'s thread."""

    def __init__(self, claims: Claims, times: LeaseTimes, clock: Clock, nonce: str, holder: str, sent: float):
        self.claims, self.times, self.clock = claims, times, clock
        self.nonce, self.holder = nonce, holder
        self.tenure = Tenure(times, sent)
        self.beats = 0

    def check(self) -> None:
        """Raise :class:`LeaseError` unless this process may still move an alias."""
        problem = self.tenure.problem(self.clock())
        if problem:
            raise LeaseError(f"lost the alias lease {LEASE_NAME} before moving an alias: {problem}")

    def renew(self) -> None:
        """One heartbeat; it counts only if, written, the lease is still ours and nobody is ending it."""
        if self.tenure.lost:
            return
        sent = self.clock()
        self.beats += 1
        try:
            self.claims.beat(LEASE_NAME, self.nonce, f"{self.beats} at {utc_now()}")
            if self.claims.read(guard_name(LEASE_NAME, self.nonce)) is not None:
                return  # a contender is ending it (it may yet back off): not counted
            record = self.claims.read(LEASE_NAME)
        except Exception:  # any failure (registry down, timeout) = a heartbeat that does not count
            return
        if record is None or record.nonce != self.nonce:
            self.tenure.lose(f"taken over by {record.holder if record else 'nobody yet'}")
        else:
            self.tenure.confirm(sent)

    def release(self) -> None:
        """Delete the lease if it is still ours, through its guard like any contender would."""
        Contender(self.claims, self.times, self.clock).end(
            LEASE_NAME, self.nonce, lambda record: record is not None and record.nonce == self.nonce
        )


def acquire(
    claims: Claims,
    times: LeaseTimes,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_wait: Callable[[str], None] | None = None,
) -> AliasLease:
    """Create the lease, waiting (and taking over a dead holder's) for at most ``times.patience``.

    ``on_wait`` gets one line, once, when the lease is held by another process.
    """
    nonce, holder = uuid.uuid4().hex, this_process()
    contender = Contender(claims, times, clock)
    deadline = clock() + times.patience
    held_by = ""
    while True:
        sent = clock()
        if claims.create(LEASE_NAME, nonce, holder):
            return AliasLease(claims, times, clock, nonce, holder, sent)
        record = contender.free(LEASE_NAME)
        if record is not None and on_wait and not held_by:
            on_wait(
                f"waiting for the alias lease held by {record.holder} "
                f"(a holder silent for {times.duration:g}s is replaced)"
            )
        held_by = record.holder if record else held_by
        if clock() >= deadline:
            holders = held_by or "other processes"
            raise LeaseError(f"alias lease {LEASE_NAME} still held by {holders} after {times.patience:g}s")
        sleep(times.poll)


@contextlib.contextmanager
def alias_lease(
    client: MlflowClient | None = None,
    times: LeaseTimes | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[AliasLease]:
    """Hold the lease for the block, renewed in the background; released on the way out."""
    claims = Claims(client or MlflowClient())
    times = times or LeaseTimes.from_environment()
    lease = acquire(claims, times, on_wait=on_wait)
    stopped = threading.Event()

    def renew() -> None:
        while not stopped.wait(times.renew_every):
            lease.renew()

    renewer = threading.Thread(target=renew, name="alias-lease-renewer", daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        stopped.set()
        renewer.join(times.margin)
        # A lease that cannot be released (registry unreachable) expires after `duration`.
        with contextlib.suppress(MlflowException):
            lease.release()
