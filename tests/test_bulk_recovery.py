"""The scheduler's sweeps on the real PostgreSQL: automatic retries with per-row backoff,
rows out of retries, and chunks whose message was lost. Messages are recorded and applied
by the test, so each case is staged exactly (real processes: test_scheduler_end_to_end.py)."""
from __future__ import annotations

import dataclasses
import threading

import pytest
from sqlalchemy import text

from pipeline.bulk import chunks, recovery
from pipeline.bulk.ports import Actor
from pipeline.bulk.upload import upload
from pipeline.errors import NotRetryable
from tests.conftest import assert_ledger_invariants
from tests.test_bulk_pipeline import RecordingQueue, apply_all, balances, csv_of, funding_total, query, seed_users


OPERATOR = Actor("command_line")


@pytest.fixture
def users(services, clean_database):
    return seed_users(services, 4)


def upload_credits(services, settings, queue, users) -> str:
    lines = [f"{user_id},{index + 1}.00" for index, user_id in enumerate(users)]
    return upload(services.uow, queue, settings, csv_of(lines)).activity.id


def row_of(engine, activity_id, user_id):
    return query(engine, "SELECT status, attempts, error_code, next_attempt_at FROM bulk_rows"
                         " WHERE activity_id = :a AND user_id = :u", a=activity_id, u=user_id)[0]


def activity_of(engine, activity_id):
    return query(engine, "SELECT status, successful_records, failed_records, pending_records FROM bulk_activities"
                         " WHERE id = :a", a=activity_id)[0]


def test_a_row_that_fails_five_times_ends_retries_exhausted_and_its_activity_is_final(services, engine, queue, users):
    settings = dataclasses.replace(services.settings, bulk_credit_fail_user_ids=frozenset({users[0]}),
                                   retry_base_delay_s=0.0, retry_max_attempts=5)
    activity_id = upload_credits(services, settings, queue, users)
    apply_all(services, settings, queue.take())
    assert row_of(engine, activity_id, users[0])[:3] == ("FAILED", 1, "injected_fault")

    sweeps = []
    for _ in range(8):
        sweeps.append(recovery.retry_due_rows(services.uow, queue, settings))
        apply_all(services, settings, queue.take())

    assert [sweep.retried_rows for sweep in sweeps] == [1, 1, 1, 1, 0, 0, 0, 0]
    status, attempts, code, next_attempt_at = row_of(engine, activity_id, users[0])
    assert (status, attempts, code, next_attempt_at) == ("FAILED", 5, "retries_exhausted", None)
    assert activity_of(engine, activity_id) == ("PARTIALLY_COMPLETED", 3, 1, 0)
    assert balances(engine) == {users[1]: 200, users[2]: 300, users[3]: 400}
    assert funding_total(engine) == -900
    assert_ledger_invariants(engine)


def test_a_failed_row_is_not_retried_before_its_backoff_has_passed(services, engine, queue, users):
    settings = dataclasses.replace(services.settings, bulk_credit_fail_user_ids=frozenset({users[0]}),
                                   retry_base_delay_s=3600.0)
    activity_id = upload_credits(services, settings, queue, users)
    apply_all(services, settings, queue.take())

    sweep = recovery.retry_due_rows(services.uow, queue, settings)

    assert (sweep.retried_rows, queue.take()) == (0, [])
    delay_s = query(engine, "SELECT extract(epoch FROM next_attempt_at - updated_at) FROM bulk_rows"
                            " WHERE activity_id = :a AND status = 'FAILED'", a=activity_id)[0][0]
    assert 3590 <= delay_s <= 3610
    assert activity_of(engine, activity_id) == ("PARTIALLY_COMPLETED", 3, 1, 0)


def test_the_retry_endpoint_and_the_scheduler_racing_credit_each_row_once(services, engine, queue, users):
    faulty = dataclasses.replace(services.settings, bulk_credit_fail_user_ids=frozenset(users[:2]),
                                 retry_base_delay_s=0.0)
    activity_id = upload_credits(services, faulty, queue, users)
    apply_all(services, faulty, queue.take())
    cleared = dataclasses.replace(faulty, bulk_credit_fail_user_ids=frozenset())
    barrier, outcomes = threading.Barrier(2), {}

    def manual():
        barrier.wait()
        try:
            outcomes["manual"] = chunks.retry_failed_rows(services.uow, queue, cleared, activity_id, OPERATOR).retried_records
        except NotRetryable:
            outcomes["manual"] = 0

    def scheduled():
        barrier.wait()
        outcomes["scheduled"] = recovery.retry_due_rows(services.uow, queue, cleared).retried_rows

    threads = [threading.Thread(target=manual), threading.Thread(target=scheduled)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    sent = queue.take()
    apply_all(services, cleared, sent + sent)  # every message delivered twice, for good measure

    assert sorted(outcomes.values()) == [0, 2]
    assert activity_of(engine, activity_id) == ("COMPLETED", 4, 0, 0)
    assert balances(engine) == {users[0]: 100, users[1]: 200, users[2]: 300, users[3]: 400}
    assert funding_total(engine) == -1000
    assert_ledger_invariants(engine)


def test_chunks_whose_message_was_lost_are_sent_again_once_their_lease_expires(services, engine, queue, users):
    settings = dataclasses.replace(services.settings, bulk_credit_chunk_rows=1, chunk_lease_s=60)
    activity_id = upload_credits(services, settings, queue, users)
    lost = queue.take()  # the broker lost every message
    assert len(lost) == 4
    assert recovery.resend_lost_chunks(services.uow, queue, settings) == 0  # leases still running
    with engine.begin() as connection:
        connection.execute(text("UPDATE bulk_chunks SET leased_until = now() - interval '1 second'"))
    busy_chunk = lost[0]
    with engine.connect() as worker:  # a worker is applying this chunk right now: not lost
        worker.execute(text("SELECT 1 FROM bulk_chunks WHERE id = :id FOR UPDATE"), {"id": busy_chunk})

        assert recovery.resend_lost_chunks(services.uow, queue, settings) == 3
        worker.rollback()
    assert sorted(queue.take()) == sorted(lost[1:])
    with engine.begin() as connection:
        connection.execute(text("UPDATE bulk_chunks SET leased_until = now() - interval '1 second'"))
    assert recovery.resend_lost_chunks(services.uow, queue, settings) == 4  # none applied yet
    apply_all(services, settings, queue.take())

    assert recovery.resend_lost_chunks(services.uow, queue, settings) == 0
    assert activity_of(engine, activity_id) == ("COMPLETED", 4, 0, 0)
    assert sum(balances(engine).values()) == 1000
    assert_ledger_invariants(engine)
