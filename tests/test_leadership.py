"""The scheduler's lease: the leader's own deadline (with a fake clock), and taking over,
renewing and fencing on the real PostgreSQL (with short timings)."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest
from sqlalchemy import text

from jobs import leadership
from jobs.fencing import FencedUnitOfWork
from jobs.leadership import Deadline, Lease, LeaseLost, Timings

#: Short timings so the tests wait seconds, not a quarter of a minute; same relations as production.
SHORT = Timings(ttl_s=3.0, renew_interval_s=0.5, give_up_s=2.0, standby_poll_s=0.2)


class FakeClock:
    def __init__(self):
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


# The leader's deadline, on a fake clock ------------------------------------------------------

def test_a_leader_holds_its_lease_until_give_up_s_after_the_start_of_its_last_successful_renewal():
    clock = FakeClock()
    deadline = Deadline(give_up_s=10.0, clock=clock)
    assert not deadline.held()  # nothing renewed yet

    deadline.renewed(sent_at=clock())
    clock.now_s += 9.9
    assert deadline.held()
    clock.now_s += 0.1
    assert not deadline.held()


def test_a_renewal_that_answers_late_counts_from_when_it_was_sent_not_from_when_it_answered():
    clock = FakeClock()
    deadline = Deadline(give_up_s=10.0, clock=clock)
    sent_at = clock()
    clock.now_s += 8.0  # the answer took 8 s (a slow network)
    deadline.renewed(sent_at)

    clock.now_s += 2.0
    assert not deadline.held()


def test_an_older_renewal_answering_after_a_newer_one_does_not_shorten_the_deadline():
    clock = FakeClock()
    deadline = Deadline(give_up_s=10.0, clock=clock)
    deadline.renewed(sent_at=clock() + 5.0)
    deadline.renewed(sent_at=clock())
    clock.now_s += 14.0
    assert deadline.held()


def test_a_revoked_deadline_is_not_held_whatever_renewal_comes_before():
    clock = FakeClock()
    deadline = Deadline(give_up_s=10.0, clock=clock)
    deadline.renewed(sent_at=clock())
    deadline.revoke()
    assert not deadline.held()


def test_the_leader_gives_up_before_its_lease_expires_and_a_takeover_takes_at_most_30_s():
    assert leadership.LEADER_GIVE_UP_S < leadership.LEASE_TTL_S
    assert leadership.RENEW_INTERVAL_S * 3 <= leadership.LEADER_GIVE_UP_S
    assert leadership.TAKEOVER_S_MAX <= 30
    assert (leadership.LEADER_GIVE_UP_S + leadership.LEASE_TTL_S + leadership.STANDBY_POLL_S
            + leadership.LEASE_STATEMENT_S) <= leadership.TAKEOVER_S_MAX


# The lease on the real PostgreSQL --------------------------------------------------------------

@pytest.fixture
def lease_table(clean_database):
    return clean_database


def lease_row(engine) -> tuple[str, int]:
    with engine.connect() as connection:
        return tuple(connection.execute(text("SELECT holder, epoch FROM scheduler_lease")).one())


def new_lease(settings, holder: str) -> Lease:
    return Lease(settings.database_url, holder, SHORT)


def test_a_second_instance_cannot_take_a_live_lease_and_takes_an_expired_one_with_a_higher_epoch(
        settings, lease_table):
    first, second = new_lease(settings, "first"), new_lease(settings, "second")
    assert first.try_acquire() and first.held()
    assert not second.try_acquire()
    assert lease_row(lease_table) == ("first", 1)

    time.sleep(SHORT.ttl_s + 0.2)
    assert second.try_acquire()
    assert lease_row(lease_table) == ("second", 2)
    assert first.renew_once() is False


def test_a_renewing_leader_keeps_its_lease_past_its_ttl_and_a_standby_keeps_waiting(settings, lease_table):
    leader, standby = new_lease(settings, "leader"), new_lease(settings, "standby")
    assert leader.try_acquire()
    leader.start_renewing()
    try:
        deadline = time.monotonic() + SHORT.ttl_s * 2
        while time.monotonic() < deadline:
            assert not standby.try_acquire()
            time.sleep(SHORT.standby_poll_s)
        assert leader.held()
        assert lease_row(lease_table) == ("leader", 1)
    finally:
        leader.abandon()


def test_a_late_renewal_cannot_stretch_the_lease_of_a_leader_past_its_give_up_time(settings, lease_table):
    leader = new_lease(settings, "leader")
    assert leader.try_acquire()
    time.sleep(SHORT.give_up_s + 0.2)  # the leader has given up; its lease has not expired yet

    assert not leader.held()
    assert leader.renew_once() is False


def test_a_job_transaction_of_a_leader_that_lost_its_lease_is_refused(services, settings, lease_table):
    old, new = new_lease(settings, "old"), new_lease(settings, "new")
    assert old.try_acquire()
    time.sleep(SHORT.ttl_s + 0.2)
    assert new.try_acquire()
    old.deadline.renewed(time.monotonic())  # as if the old leader's clock had not noticed yet

    with pytest.raises(LeaseLost):
        with FencedUnitOfWork(services.engine, settings.lock_timeout_ms, old):
            pass
    with FencedUnitOfWork(services.engine, settings.lock_timeout_ms, new) as uow:
        uow.commit()


def test_a_takeover_waits_until_the_old_leaders_last_job_transaction_has_ended(services, settings, lease_table):
    old, new = new_lease(settings, "old"), new_lease(settings, "new")
    assert old.try_acquire()
    uow = FencedUnitOfWork(services.engine, settings.lock_timeout_ms, old).__enter__()
    try:
        time.sleep(SHORT.ttl_s + 0.2)  # expired, but the old leader's transaction is still open
        with pytest.raises(psycopg.errors.LockNotAvailable):
            new.try_acquire()
        assert lease_row(lease_table) == ("old", 1)
    finally:
        uow.__exit__(None, None, None)
    new._close()
    assert new.try_acquire()
    assert lease_row(lease_table) == ("new", 2)


def test_only_one_of_several_racing_standbys_takes_an_expired_lease(settings, lease_table):
    standbys = [new_lease(settings, f"standby-{n}") for n in range(4)]
    won: list[str] = []
    barrier = threading.Barrier(len(standbys))

    def race(lease: Lease):
        barrier.wait()
        if lease.try_acquire():
            won.append(lease.holder)

    threads = [threading.Thread(target=race, args=(lease,)) for lease in standbys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(won) == 1
    assert lease_row(lease_table) == (won[0], 1)


def test_a_process_that_gave_up_its_term_takes_its_own_lease_back_at_once_and_fences_the_old_term(
        services, settings, lease_table):
    old_term = new_lease(settings, "this-process")
    assert old_term.try_acquire()
    old_term.abandon()  # e.g. PostgreSQL restarted and renewals failed past the deadline
    standby = new_lease(settings, "standby")

    new_term = new_lease(settings, "this-process")
    assert not standby.try_acquire()
    assert new_term.try_acquire()
    assert lease_row(lease_table) == ("this-process", 2)
    old_term.deadline.renewed(time.monotonic())  # a job of the old term that has not noticed
    with pytest.raises(LeaseLost):
        with FencedUnitOfWork(services.engine, settings.lock_timeout_ms, old_term):
            pass
