"""An activity's money per currency (valid, credited, failed, cancelled) follows its rows
through every statement that moves them: the upload, chunks, a retry and a cancel.
Real PostgreSQL; chunks applied in this process."""
from __future__ import annotations

import dataclasses

from pipeline.bulk import chunks, release
from pipeline.bulk.ports import Actor
from pipeline.bulk.upload import upload
from tests.test_bulk_pipeline import apply_all, csv_of, fund, post_file, query, seed_users

OPERATOR = Actor("command_line")


def totals_in_rows(engine, activity_id: str) -> list[tuple]:
    """The same totals computed the slow way, from the rows themselves."""
    return [tuple(int(x) if not isinstance(x, str) else x for x in row) for row in query(engine, """
        SELECT currency, sum(amount_minor), coalesce(sum(amount_minor) FILTER (WHERE status = 'SUCCESS'), 0),
               coalesce(sum(amount_minor) FILTER (WHERE status = 'FAILED'), 0),
               coalesce(sum(amount_minor) FILTER (WHERE status = 'CANCELLED'), 0)
          FROM bulk_rows WHERE activity_id = :a AND status <> 'INVALID' GROUP BY currency ORDER BY currency""",
        a=activity_id)]


def totals_of(services, activity_id: str) -> list[tuple]:
    with services.uow() as uow:
        found = uow.bulk.activity(activity_id)
    return [(t.currency, t.valid, t.credited, t.failed, t.cancelled) for t in found.totals]


def test_totals_follow_the_rows_through_chunks_a_retry_and_a_cancel(services, engine, queue, clean_database):
    users = seed_users(services, 4, funding_minor=0)
    fund(services, "SGD", 100_000)
    fund(services, "JPY", 100_000)
    faulty = dataclasses.replace(services.settings, bulk_credit_fail_user_ids=frozenset({users[0], users[1]}),
                                 retry_max_attempts=3, bulk_credit_chunk_rows=2)
    lines = [f"{users[0]},10.00,SGD", f"{users[1]},500,JPY", f"{users[2]},2.50,SGD", f"{users[3]},700,JPY",
             "not-a-user,1.00,SGD", f"{users[2]},-4,SGD"]
    activity_id = upload(services.uow, queue, faulty, csv_of(lines, "uuid,amount,currency")).activity.id
    assert totals_of(services, activity_id) == [("JPY", 1200, 0, 0, 0), ("SGD", 1250, 0, 0, 0)]

    apply_all(services, faulty, queue.take())
    assert totals_of(services, activity_id) == [("JPY", 1200, 700, 500, 0), ("SGD", 1250, 250, 1000, 0)]
    assert totals_of(services, activity_id) == totals_in_rows(engine, activity_id)

    healed = dataclasses.replace(faulty, bulk_credit_fail_user_ids=frozenset({users[0]}))
    retried = chunks.retry_failed_rows(services.uow, queue, healed, activity_id, OPERATOR)
    assert retried.retried_records == 2
    assert totals_of(services, activity_id) == [("JPY", 1200, 700, 0, 0), ("SGD", 1250, 250, 0, 0)]
    apply_all(services, healed, queue.take())
    assert totals_of(services, activity_id) == [("JPY", 1200, 1200, 0, 0), ("SGD", 1250, 250, 1000, 0)]

    release.cancel(services.uow, services.settings, activity_id, OPERATOR, "paid by hand")
    assert totals_of(services, activity_id) == [("JPY", 1200, 1200, 0, 0), ("SGD", 1250, 250, 0, 1000)]
    assert totals_of(services, activity_id) == totals_in_rows(engine, activity_id)


def test_the_activity_answer_shows_totals_in_major_units(services, queued_http, queue, clean_database):
    users = seed_users(services, 2)
    created = post_file(queued_http, f"uuid,amount\n{users[0]},123456.78\n{users[1]},0.11\n".encode())
    activity_id = created.json["activity_id"]
    apply_all(services, services.settings, queue.take())

    body = queued_http.get(f"/api/v1/wallet/bulk-credit/{activity_id}").json
    assert body["totals"] == [{"currency": "SGD", "valid_amount": "123456.89", "credited_amount": "123456.89",
                               "failed_amount": "0.00", "cancelled_amount": "0.00"}]
