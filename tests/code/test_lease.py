"""The alias lease: its decisions on plain values and a fake clock, then the protocol's dangerous
interleavings stepped through one call at a time on a real (SQLite) registry.

The same protocol between real processes through a tracking server on PostgreSQL, with a
holder SIGKILLed mid-promotion, is tests/integration/test_alias_lease.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import mlflow
import pytest
from mlflow import MlflowClient

from model import lease
from model.lease import (
    LEASE_NAME,
    AliasLease,
    Claims,
    Contender,
    LeaseError,
    LeaseTimes,
    Record,
    Tenure,
    Watch,
    acquire,
    alias_lease,
    guard_name,
)

TIMES = LeaseTimes(3.0)  # margin 1 s, renewals every 0.5 s, polls every 0.3 s, patience 12 s


def test_a_watch_expires_after_the_same_record_for_the_whole_duration_only():
    watch = Watch(10.0)
    first, renewed = Record("a", "1", "h"), Record("a", "2", "h")
    assert not watch.expired(first, 0.0)
    assert not watch.expired(first, 9.9)
    assert watch.expired(first, 10.0)
    assert not watch.expired(renewed, 11.0)  # a heartbeat restarts the watch from this sighting
    assert not watch.expired(renewed, 20.9)
    assert watch.expired(renewed, 21.0)


def test_a_tenure_ends_a_margin_before_a_takeover_could_begin():
    tenure = Tenure(LeaseTimes(30.0), sent_at=100.0)
    assert tenure.problem(119.9) == ""
    assert tenure.problem(120.0).startswith("no heartbeat counted for 20.0s")
    tenure.confirm(110.0)
    assert tenure.problem(129.9) == ""
    tenure.confirm(105.0)  # an older heartbeat confirmed late does not shorten it
    assert tenure.problem(129.9) == "" and tenure.problem(130.0)
    tenure.lose("taken over by someone")
    assert tenure.problem(111.0) == "taken over by someone"


def test_every_timing_derives_from_the_duration():
    times = LeaseTimes(30.0)
    assert (times.margin, times.renew_every, times.poll, times.patience) == (10.0, 5.0, 0.5, 120.0)
    assert LeaseTimes(2.0).poll == 0.2


@pytest.mark.parametrize("value, duration", [(None, lease.DEFAULT_DURATION), ("", 30.0), ("2.5", 2.5)])
def test_the_duration_comes_from_the_environment(monkeypatch, value, duration):
    if value is None:
        monkeypatch.delenv(lease.DURATION_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(lease.DURATION_VARIABLE, value)
    assert LeaseTimes.from_environment() == LeaseTimes(duration)


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan"])
def test_a_bad_duration_is_refused_in_one_line(monkeypatch, value):
    monkeypatch.setenv(lease.DURATION_VARIABLE, value)
    with pytest.raises(LeaseError) as refused:
        LeaseTimes.from_environment()
    assert str(refused.value) == f"ALIAS_LEASE_SECONDS must be a positive number of seconds, not {value!r}"


# ----------------------------------------------------------------------------------------------
# The protocol on a real registry, one call at a time
# ----------------------------------------------------------------------------------------------


class FakeClock:
    """Every process's clock (they only need to run at the same rate); sleeping advances it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Interleaved(Claims):
    """A process's real claims, with steps of other processes run just before chosen calls."""

    def __init__(self, client: MlflowClient):
        super().__init__(client)
        self.before: dict[tuple[str, str], list[Callable[[], None]]] = {}

    def at(self, method: str, name: str, step: Callable[[], None]) -> None:
        """Run ``step`` just before this process's next ``method`` call on ``name``."""
        self.before.setdefault((method, name), []).append(step)

    def _steps(self, method: str, name: str) -> None:
        for step in self.before.pop((method, name), []):
            step()

    def create(self, name, nonce, holder):
        self._steps("create", name)
        return super().create(name, nonce, holder)

    def read(self, name):
        self._steps("read", name)
        return super().read(name)

    def delete(self, name):
        self._steps("delete", name)
        return super().delete(name)


@pytest.fixture(scope="module")
def registry_client(tmp_path_factory):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('lease') / 'mlflow.db'}")
    yield MlflowClient()
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def client(registry_client):
    yield registry_client
    for model in registry_client.search_registered_models():
        registry_client.delete_registered_model(model.name)


@pytest.fixture
def clock():
    return FakeClock()


def holder(client, clock, times=TIMES) -> AliasLease:
    """A process that took the free lease now (raises if it was not free)."""
    return acquire(Claims(client), times, clock, sleep=lambda _: pytest.fail("the lease was not free"))


def names(client) -> list[str]:
    return sorted(model.name for model in client.search_registered_models())


def test_a_live_holder_keeps_the_lease_however_long_it_holds_it(client, clock):
    live = holder(client, clock)

    def renewing_sleep(seconds: float) -> None:  # the holder's heartbeats go on while the contender polls
        clock.sleep(seconds)
        live.renew()

    with pytest.raises(LeaseError, match=rf"^alias lease {LEASE_NAME} still held by .+ after 12s$"):
        acquire(Claims(client), TIMES, clock, renewing_sleep)
    assert clock.now >= TIMES.patience
    live.check()  # four lease durations later, still its own
    assert Claims(client).read(LEASE_NAME).nonce == live.nonce
    live.release()
    assert names(client) == []


def test_a_dead_holders_lease_is_taken_over_after_the_duration_and_not_before(client, clock):
    dead = holder(client, clock)  # never renews: killed right after taking the lease
    claims, waiting, deleted_at = Interleaved(client), [], []
    claims.at("delete", LEASE_NAME, lambda: deleted_at.append(clock.now))
    taker = acquire(claims, TIMES, clock, clock.sleep, on_wait=waiting.append)
    assert TIMES.duration <= clock.now <= TIMES.duration + 3 * TIMES.poll
    assert len(waiting) == 1 and waiting[0].startswith(f"waiting for the alias lease held by {dead.holder}")
    # Its last alias move could start no later than a margin before its lease was deleted.
    assert dead.tenure.problem(deleted_at[0] - TIMES.margin)
    with pytest.raises(LeaseError, match=r"no heartbeat counted for 3\.\ds"):
        dead.check()
    dead.renew()  # were it only paused, its next heartbeat finds the lease gone
    with pytest.raises(LeaseError, match=r"before moving an alias: taken over by .+:\d+ since"):
        dead.check()
    assert Claims(client).read(LEASE_NAME) == Record(taker.nonce, "0", taker.holder)  # its beat went nowhere
    taker.check()
    taker.release()
    assert names(client) == []


def test_a_heartbeat_landing_after_the_expiry_makes_the_contender_back_off(client, clock):
    """The holder renews between the contender's decision and its guard, or just after the guard."""
    live = holder(client, clock)
    for renewal_at in ("before the guard", "after the guard"):
        claims = Interleaved(client)
        contender = Contender(claims, TIMES, clock)
        contender.free(LEASE_NAME)
        clock.sleep(TIMES.duration)  # the contender saw no heartbeat for the whole duration
        guard = guard_name(LEASE_NAME, live.nonce)
        if renewal_at == "before the guard":
            claims.at("create", guard, live.renew)
        else:  # between the guard's creation and the contender's re-read of the lease
            claims.at("create", guard, lambda: claims.at("read", LEASE_NAME, live.renew))
        contender.free(LEASE_NAME)
        assert names(client) == [LEASE_NAME], renewal_at  # not deleted, and the guard is gone
        assert Claims(client).read(LEASE_NAME).nonce == live.nonce
        live.renew()
        live.check()  # the next heartbeat counts again
    live.release()


def test_a_heartbeat_after_the_contenders_re_read_does_not_count(client, clock):
    """The contender re-read an unchanged lease; the holder's heartbeat lands before the delete: the
    holder sees the guard, does not count it, and gives up before the new holder can act."""
    stalled = holder(client, clock)
    claims = Interleaved(client)
    contender = Contender(claims, TIMES, clock)
    contender.free(LEASE_NAME)
    clock.sleep(TIMES.duration)
    claims.at("delete", LEASE_NAME, stalled.renew)
    contender.free(LEASE_NAME)
    assert names(client) == []  # deleted anyway: the record it watched was the one it re-read
    successor = holder(client, clock)
    with pytest.raises(LeaseError):
        stalled.check()
    stalled.renew()  # lands on the successor's lease, under its own nonce's key
    with pytest.raises(LeaseError, match="taken over by"):
        stalled.check()
    assert Claims(client).read(LEASE_NAME) == Record(successor.nonce, "0", successor.holder)
    successor.check()
    successor.release()


def test_two_contenders_of_one_expired_lease_never_delete_the_next_holders(client, clock):
    dead = holder(client, clock)
    first, second_claims = Contender(Claims(client), TIMES, clock), Interleaved(client)
    second = Contender(second_claims, TIMES, clock)
    first.free(LEASE_NAME)
    second.free(LEASE_NAME)
    clock.sleep(TIMES.duration)
    successor: list[AliasLease] = []

    def first_takes_over_and_a_third_process_takes_the_lease():
        first.free(LEASE_NAME)
        successor.append(holder(client, clock))

    # Both decided the same lease expired; the second is slower: by its turn for the guard, the
    # first has deleted the lease and a third process holds a new one under the same name.
    second_claims.at(
        "create", guard_name(LEASE_NAME, dead.nonce), first_takes_over_and_a_third_process_takes_the_lease
    )
    assert second.end(LEASE_NAME, dead.nonce, lambda record: record == Record(dead.nonce, "0", dead.holder))
    [new] = successor
    assert Claims(client).read(LEASE_NAME).nonce == new.nonce and names(client) == [LEASE_NAME]
    new.check()
    new.release()


def test_contenders_take_turns_at_one_guard(client, clock):
    dead = holder(client, clock)
    first_claims = Interleaved(client)
    first, second = Contender(first_claims, TIMES, clock), Contender(Claims(client), TIMES, clock)
    first.free(LEASE_NAME)
    second.free(LEASE_NAME)
    clock.sleep(TIMES.duration)
    refused = []
    # While the first holds the guard, the second finds it taken and leaves the lease alone.
    first_claims.at("read", LEASE_NAME, lambda: refused.append(second.end(LEASE_NAME, dead.nonce, bool)))
    assert first.end(LEASE_NAME, dead.nonce, lambda record: record is not None)
    assert refused == [False] and names(client) == []


def test_a_guard_left_by_a_dead_contender_is_ended_in_turn(client, clock):
    dead = holder(client, clock)
    assert Claims(client).create(
        guard_name(LEASE_NAME, dead.nonce), "gone", "a contender killed mid-takeover"
    )
    taker = acquire(Claims(client), TIMES, clock, clock.sleep)
    # The lease expires after one duration; its guard, first seen then, after a second one.
    assert 2 * TIMES.duration <= clock.now <= 2 * TIMES.duration + 4 * TIMES.poll
    taker.release()
    assert names(client) == []


def test_a_holder_releasing_after_a_takeover_leaves_the_new_lease_alone(client, clock):
    paused = holder(client, clock)
    taker = acquire(Claims(client), TIMES, clock, clock.sleep)
    paused.release()  # it wakes up and leaves its `with` block
    assert Claims(client).read(LEASE_NAME).nonce == taker.nonce and names(client) == [LEASE_NAME]
    taker.release()
    assert names(client) == []


def test_the_alias_lease_serialises_concurrent_holders(client):
    """The context manager for real: threads, the real clock, the renewer thread."""
    inside, overlaps = [], []

    def hold():
        with alias_lease(client, LeaseTimes(5.0)) as held:
            inside.append(1)
            overlaps.append(len(inside))
            threading.Event().wait(0.2)
            held.check()
            inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1, 1, 1]
    assert names(client) == []
