"""Funding accounts hold real money: a file is paid out of a reservation of its whole total,
waits in AWAITING_FUNDS while its account holds less, and a cancel gives back exactly what
its cancelled rows had reserved. Real PostgreSQL; chunks applied in this process, except
the cancel against real workers at the end."""
from __future__ import annotations

import copy
import dataclasses
import time

import pytest
import redis
from sqlalchemy import text

from actors.bulk_credit import QUEUE_NAME
from pipeline.bulk import chunks, release
from pipeline.bulk.ports import Actor
from pipeline.bulk.upload import upload
from pipeline.reconciliation import run, start
from tests.conftest import assert_ledger_invariants
from tests.test_bulk_pipeline import (RecordingQueue, apply_all, balances, csv_of, fund, post_file, query,
                                      seed_users)

OPERATOR = Actor("command_line")
URL = "/api/v1/funding-accounts"


def account_balance(engine, name: str = "default", code: str = "SGD") -> int:
    found = query(engine, "SELECT balance FROM wallets WHERE system_name = 'funding' AND funding_account = :n"
                          " AND currency = :c", n=name, c=code)
    return found[0][0] if found else 0


def reserved(engine, activity_id: str) -> int:
    return query(engine, "SELECT coalesce(sum(balance), 0) FROM wallets WHERE system_name = 'reservation'"
                         " AND activity_id = :a", a=activity_id)[0][0]


def status_of(engine, activity_id: str) -> str:
    return query(engine, "SELECT status FROM bulk_activities WHERE id = :a", a=activity_id)[0][0]


def reconcile_full(services) -> dict:
    return run(services.uow(), start(services.uow(), full=True))


def test_a_top_up_moves_money_from_bank_into_the_account_once_per_key(services, http, clean_database):
    body = {"amount": "1500.00", "currency": "SGD", "reference": "wire 7"}
    first = http.post(f"{URL}/payroll/top-up", json=body, headers={"Idempotency-Key": "top-up-1"})
    again = http.post(f"{URL}/payroll/top-up", json=body, headers={"Idempotency-Key": "top-up-1"})

    assert first.status_code == 201 and again.headers.get("Idempotency-Replayed") == "true"
    assert {k: first.json[k] for k in ("kind", "funding_account", "amount", "balance_after")} == {
        "kind": "funding_top_up", "funding_account": "payroll", "amount": "1500.00", "balance_after": "1500.00"}
    assert account_balance(clean_database, "payroll") == 150_000
    assert http.get(f"{URL}/payroll").json == {
        "name": "payroll", "balances": [{"currency": "SGD", "balance": "1500.00", "reserved": "0.00"}]}
    assert [item["name"] for item in http.get(URL).json["data"]] == ["default", "payroll"]
    assert_ledger_invariants(clean_database)


@pytest.mark.parametrize("name, body, field", [
    ("Payroll!", {"amount": "1.00", "currency": "SGD"}, "name"),
    ("payroll", {"amount": "-1.00", "currency": "SGD"}, "amount"),
    ("payroll", {"amount": "1.00", "currency": "XXX"}, "currency"),
])
def test_a_bad_top_up_is_a_422_naming_the_field(http, clean_database, name, body, field):
    response = http.post(f"{URL}/{name}/top-up", json=body, headers={"Idempotency-Key": "k"})
    assert response.status_code == 422 and field in {error["field"] for error in response.json["errors"]}
    assert account_balance(clean_database, "payroll") == 0


def test_an_unknown_account_is_a_404(http, clean_database):
    assert http.get(f"{URL}/nobody").status_code == 404


def test_a_file_waits_for_funds_and_the_scheduler_releases_it_once_the_account_is_topped_up(
        services, engine, queue, clean_database):
    users = seed_users(services, 3, funding_minor=0)
    fund(services, "SGD", 500)
    activity_id = upload(services.uow, queue, services.settings,
                         csv_of([f"{user},{n + 1}.00" for n, user in enumerate(users)])).activity.id

    assert (status_of(engine, activity_id), queue.take()) == ("AWAITING_FUNDS", [])
    assert account_balance(engine) == 500 and reserved(engine, activity_id) == 0  # nothing moved
    assert release.release_funded(services.uow, queue, services.settings) == 0  # still short
    fund(services, "SGD", 100)
    assert release.release_funded(services.uow, queue, services.settings) == 1
    assert account_balance(engine) == 0 and reserved(engine, activity_id) == 600
    apply_all(services, services.settings, queue.take())

    assert status_of(engine, activity_id) == "COMPLETED"
    assert balances(engine) == {users[0]: 100, users[1]: 200, users[2]: 300}
    assert account_balance(engine) == 0 and reserved(engine, activity_id) == 0
    history = query(engine, "SELECT from_status, to_status, actor_type FROM bulk_activity_history ORDER BY id")
    assert history[:3] == [(None, "UPLOADED", "command_line"), ("UPLOADED", "AWAITING_FUNDS", "command_line"),
                           ("AWAITING_FUNDS", "UPLOADED", "scheduler")]
    assert reconcile_full(services)["status"] == "clean"
    assert_ledger_invariants(engine)


def test_the_funding_balance_is_top_up_minus_credited_and_a_failed_row_keeps_its_money_reserved(
        services, engine, queue, clean_database):
    users = seed_users(services, 4, funding_minor=0)
    fund(services, "SGD", 10_000)
    faulty = dataclasses.replace(services.settings, bulk_credit_fail_user_ids=frozenset({users[0]}),
                                 retry_max_attempts=1)
    activity_id = upload(services.uow, queue, faulty, csv_of([f"{user},10.00" for user in users])).activity.id
    apply_all(services, faulty, queue.take())

    assert account_balance(engine) == 10_000 - 4_000 and reserved(engine, activity_id) == 1_000
    assert reconcile_full(services)["status"] == "clean"

    ended = release.cancel(services.uow, services.settings, activity_id, OPERATOR, "paid by hand")

    assert (ended.status, ended.counters.successful, ended.counters.cancelled) == ("CANCELLED", 3, 1)
    assert ended.final and account_balance(engine) == 10_000 - 3_000 and reserved(engine, activity_id) == 0
    assert query(engine, "SELECT status, error_code FROM bulk_rows WHERE user_id = :u", u=users[0]) == [
        ("CANCELLED", "cancelled")]
    with pytest.raises(release.InvalidState):
        release.cancel(services.uow, services.settings, activity_id, OPERATOR, "again")
    assert reconcile_full(services)["status"] == "clean"
    assert_ledger_invariants(engine)


def test_a_cancel_in_the_middle_of_a_run_ends_every_row_success_or_cancelled_and_returns_the_rest(
        services, engine, queue, clean_database):
    users = seed_users(services, 50, funding_minor=0)
    fund(services, "SGD", 1_000_000)
    settings = dataclasses.replace(services.settings, bulk_credit_chunk_rows=10)
    activity_id = upload(services.uow, queue, settings, csv_of([f"{user},1.00" for user in users])).activity.id
    sent = queue.take()
    apply_all(services, settings, sent[:2])  # two of five chunks ran

    release.cancel(services.uow, settings, activity_id, OPERATOR, "wrong file")
    later = apply_all(services, settings, sent[2:])  # their messages arrive after the cancel

    assert all(outcome.skipped for outcome in later)
    assert dict(query(engine, "SELECT status, count(*) FROM bulk_rows GROUP BY status")) == {
        "SUCCESS": 20, "CANCELLED": 30}
    assert account_balance(engine) == 1_000_000 - 2_000
    assert sum(balances(engine).values()) == 2_000 and reserved(engine, activity_id) == 0
    with pytest.raises(Exception, match="cancelled"):
        chunks.retry_failed_rows(services.uow, queue, settings, activity_id, OPERATOR)
    assert reconcile_full(services)["status"] == "clean"
    assert_ledger_invariants(engine)


def test_a_waiting_file_cancelled_moves_nothing(services, engine, queue, clean_database):
    users = seed_users(services, 2, funding_minor=0)
    activity_id = upload(services.uow, queue, services.settings, csv_of([f"{u},1.00" for u in users])).activity.id
    assert status_of(engine, activity_id) == "AWAITING_FUNDS"

    release.cancel(services.uow, services.settings, activity_id, OPERATOR, "not needed")
    fund(services, "SGD", 1_000)

    assert release.release_funded(services.uow, queue, services.settings) == 0
    assert status_of(engine, activity_id) == "CANCELLED" and queue.take() == []
    assert account_balance(engine) == 1_000


def test_the_cancel_endpoint_needs_a_reason_and_refuses_a_completed_activity(services, http, queue, engine):
    http.application.extensions["wallet.chunk_queue"] = queue
    [user] = seed_users(services, 1)
    activity_id = post_file(http, f"uuid,amount\n{user},1.00\n".encode()).json["activity_id"]
    cancel_url = f"/api/v1/wallet/bulk-credit/{activity_id}/cancel"

    assert http.post(cancel_url, json={}).status_code == 422
    apply_all(services, services.settings, queue.take())
    refused = http.post(cancel_url, json={"reason": "too late"})

    assert (refused.status_code, refused.json["code"]) == (409, "invalid_state")
    assert status_of(engine, activity_id) == "COMPLETED"


def test_cancelling_in_the_middle_of_a_run_with_real_workers_leaves_the_ledger_exact(
        services, engine, http, workers):
    cancel_in_the_middle_of_a_run(services, engine, http, workers, rows=20_000, chunk_rows=500)


def cancel_in_the_middle_of_a_run(services, engine, http, workers, *, rows: int, chunk_rows: int) -> None:
    """Given 2 real worker processes paying a file of `rows` rows of 1.00 in chunks of
    `chunk_rows`, when it is cancelled over the API once some chunks are paid, then every row
    ends SUCCESS or CANCELLED, a whole chunk either way, only SUCCESS rows have postings, the
    funding account holds the top-up less what was paid, nothing stays reserved, and a full
    reconciliation is clean. The 100,000-row form runs in make chaos (tests/test_chaos.py)."""
    users = seed_users(services, rows, funding_minor=0)
    top_up = rows * 100
    fund(services, "SGD", top_up)
    workers(2)
    small_chunks = copy.copy(services)  # the same engine, chunks of `chunk_rows` for this upload
    small_chunks.settings = dataclasses.replace(services.settings, bulk_credit_chunk_rows=chunk_rows)
    http.application.extensions["wallet"] = small_chunks
    content = ("uuid,amount\n" + "".join(f"{user},1.00\n" for user in users)).encode()
    activity_id = post_file(http, content).json["activity_id"]
    deadline = time.monotonic() + 60 + rows / 1_000
    while http.get(f"/api/v1/wallet/bulk-credit/{activity_id}").json["successful_records"] < 2 * chunk_rows:
        assert time.monotonic() < deadline, "no chunk was paid in time"
        time.sleep(0.05)

    ended = http.post(f"/api/v1/wallet/bulk-credit/{activity_id}/cancel", json={"reason": "stop"})

    assert ended.status_code == 202 and ended.json["status"] == "CANCELLED", ended.json
    wait_for_messages_handled(services.settings.redis_url)  # each one finds its chunk cancelled
    outcome = dict(query(engine, "SELECT status, count(*) FROM bulk_rows WHERE activity_id = :a GROUP BY status",
                         a=activity_id))
    assert set(outcome) <= {"SUCCESS", "CANCELLED"} and sum(outcome.values()) == rows
    paid = outcome.get("SUCCESS", 0)
    assert 2 * chunk_rows <= paid < rows and ended.json["successful_records"] == paid
    assert ended.json["cancelled_records"] == rows - paid
    assert query(engine, "SELECT count(*) FROM (SELECT chunk_number FROM bulk_rows WHERE activity_id = :a"
                         " GROUP BY chunk_number HAVING count(DISTINCT status) > 1) half", a=activity_id) == [(0,)]
    assert query(engine, "SELECT count(*) FILTER (WHERE r.status = 'SUCCESS'), count(*) FROM postings p"
                         " JOIN bulk_rows r ON r.id = p.bulk_row_id WHERE r.activity_id = :a",
                 a=activity_id) == [(paid, paid)]
    assert dict(((status, balance), count) for status, balance, count in query(
        engine, "SELECT r.status, coalesce(w.balance, 0), count(*) FROM bulk_rows r LEFT JOIN wallets w"
                " ON w.user_id = r.user_id AND w.currency = r.currency WHERE r.activity_id = :a GROUP BY 1, 2",
        a=activity_id)) == {("SUCCESS", 100): paid, ("CANCELLED", 0): rows - paid}
    assert account_balance(engine) == top_up - paid * 100 and reserved(engine, activity_id) == 0
    assert reconcile_full(services)["status"] == "clean"
    assert_ledger_invariants(engine)


def wait_for_messages_handled(redis_url: str, timeout_s: float = 60) -> None:
    """Waits until the bulk-credit queue holds no message, queued, delayed or being handled."""
    client = redis.Redis.from_url(redis_url)
    keys = [f"dramatiq:{queue}.msgs" for queue in (QUEUE_NAME, f"{QUEUE_NAME}.DQ")]
    deadline = time.monotonic() + timeout_s
    while any(client.hlen(key) for key in keys):
        assert time.monotonic() < deadline, "bulk-credit messages still unhandled"
        time.sleep(0.1)


def test_files_no_top_up_can_release_never_hold_back_another_accounts_file(services, engine, queue, clean_database,
                                                                          monkeypatch):
    monkeypatch.setattr(release, "AWAITING_PER_SWEEP_MAX", 2)
    users = seed_users(services, 4, funding_minor=0)
    fund(services, "SGD", 1, account="starved")
    waiting = [upload(services.uow, queue, services.settings, csv_of([f"{user},1.00"]),
                      funding_account="starved").activity.id for user in users[:3]]
    late = upload(services.uow, queue, services.settings, csv_of([f"{users[3]},1.00"])).activity.id
    fund(services, "SGD", 100)

    released = sum(release.release_funded(services.uow, queue, services.settings) for _ in range(3))

    assert released == 1 and status_of(engine, late) == "UPLOADED"
    assert {status_of(engine, activity_id) for activity_id in waiting} == {"AWAITING_FUNDS"}
