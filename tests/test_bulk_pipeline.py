"""Bulk credit on the real PostgreSQL: upload, chunk application exactly once, retries,
duplicates, and the HTTP endpoints. Chunk messages are recorded and applied by the test,
so each race is staged exactly (the worker processes are in test_bulk_end_to_end.py)."""
from __future__ import annotations

import dataclasses
import io
import json
import threading
import uuid

import psycopg.errors
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from pipeline import funding
from pipeline.bulk import chunks
from pipeline.bulk.ports import Actor
from pipeline.bulk.upload import TooLarge, upload
from pipeline.errors import IdempotencyKeyReused, NotFound, NotRetryable, TransientFault
from pipeline.money import MINOR_UNITS, Currency
from pipeline.users import create_api_key, find_api_key
from pipeline.wallets import MoneyRequest
from tests.conftest import RecordingQueue, assert_ledger_invariants  # noqa: F401 (imported from here too)

CHUNK_ROWS = 50



@pytest.fixture
def bulk_settings(settings):
    return dataclasses.replace(settings, bulk_credit_chunk_rows=CHUNK_ROWS, retry_base_delay_s=0.0)


#: What seed_users tops the `default` funding account up by, per currency, in minor units:
#: far more than any test pays, so a test's file is released at once unless it says otherwise.
SEED_FUNDING_MINOR = 10**14


def seed_users(services, count: int, funding_minor: int = SEED_FUNDING_MINOR) -> list[str]:
    """Creates `count` users and funds the `default` account for paying them (in every
    supported currency), as `users seed-and-export` does."""
    user_ids = [str(uuid.uuid4()) for _ in range(count)]
    with services.uow() as uow:
        uow.bulk.copy_users((user_id, "Bulk test", f"{user_id}@example.test") for user_id in user_ids)
        uow.commit()
    if funding_minor:
        for code in sorted(services.settings.supported_currencies):
            fund(services, code, funding_minor)
    return user_ids


def fund(services, code: str, amount_minor: int, account: str = "default") -> None:
    request = MoneyRequest(Currency(code, MINOR_UNITS[code]), amount_minor, None)
    with services.uow() as uow:
        funding.top_up(uow, services.settings, account, request)
        uow.commit()


def csv_of(lines: list[str], header: str = "uuid,amount") -> io.BytesIO:
    return io.BytesIO(("\n".join([header, *lines]) + "\n").encode())


def apply_all(services, settings, chunk_ids):
    return [chunks.apply_chunk(services.uow, settings, chunk_id) for chunk_id in chunk_ids]


def query(engine, sql: str, **params):
    with engine.connect() as connection:
        return connection.execute(text(sql), params).all()


def balances(engine) -> dict[str, int]:
    return dict(query(engine, "SELECT user_id::text, balance FROM wallets WHERE user_id IS NOT NULL"))


def funding_total(engine) -> int:
    """Minus what the funding accounts have paid out so far: what they and their reservations
    hold, less everything topped up."""
    held, topped_up = query(engine, "SELECT (SELECT coalesce(sum(balance), 0) FROM wallets"
                                    " WHERE system_name IN ('funding', 'reservation')),"
                                    " (SELECT coalesce(sum(amount), 0) FROM journal_entries"
                                    " WHERE kind = 'funding_top_up')")[0]
    return held - topped_up


def row_statuses(engine, activity_id) -> dict[str, int]:
    return dict(query(engine, "SELECT status, count(*) FROM bulk_rows WHERE activity_id = :a GROUP BY status",
                      a=activity_id))


def activity_of(services, activity_id):
    with services.uow() as uow:
        return uow.bulk.activity(activity_id)


def test_an_upload_stores_every_row_with_its_outcome_and_plans_chunks_of_valid_rows(
        services, clean_database, bulk_settings, queue):
    users = seed_users(services, 120)
    lines = [f"{user},1.00,ref-{n}" for n, user in enumerate(users)]
    lines += ["not-a-uuid,1.00,bad-1", f"{uuid.uuid4()},1.00,stranger", f"{users[0]},1.00,ref-0", f"{users[1]},0,zero"]
    uploaded = upload(services.uow, queue, bulk_settings, csv_of(lines, "uuid,amount,reference"))

    counters = uploaded.activity.counters
    assert uploaded.created and uploaded.activity.status == "UPLOADED"
    assert (counters.total, counters.valid, counters.invalid, counters.pending) == (124, 120, 4, 120)
    assert sorted(query(clean_database, "SELECT row_number, error_code FROM bulk_rows WHERE status = 'INVALID'")) == [
        (122, "invalid_user_id"), (123, "unknown_user"), (124, "duplicate_reference"), (125, "invalid_amount")]
    assert len(queue.sent) == 3  # 120 valid rows in chunks of 50
    assert query(clean_database, "SELECT sum(row_count) FROM bulk_chunks")[0][0] == 120


def test_applying_every_chunk_credits_each_valid_row_once_and_debits_the_funding_shards(
        services, clean_database, bulk_settings, queue):
    users = seed_users(services, 130)
    lines = [f"{user},{n + 1}.00" for n, user in enumerate(users)] + [f"{users[0]},0.50"]
    activity_id = upload(services.uow, queue, bulk_settings, csv_of(lines)).activity.id

    outcomes = apply_all(services, bulk_settings, queue.take())

    expected = {user: (n + 1) * 100 for n, user in enumerate(users)}
    expected[users[0]] += 50
    assert balances(clean_database) == expected
    assert funding_total(clean_database) == -sum(expected.values())
    assert sum(outcome.credited for outcome in outcomes) == 131
    activity = activity_of(services, activity_id)
    assert activity.status == "COMPLETED" and activity.completed_at is not None
    assert (activity.counters.successful, activity.counters.pending) == (131, 0)
    assert row_statuses(clean_database, activity_id) == {"SUCCESS": 131}
    # One journal entry per chunk: 131 user postings and one funding debit per chunk.
    assert query(clean_database, "SELECT count(*) FROM journal_entries WHERE kind = 'bulk_credit'")[0][0] == 3
    assert query(clean_database, "SELECT count(*) FROM postings p JOIN journal_entries j ON j.id = p.journal_entry_id"
                                 " WHERE j.kind = 'bulk_credit' AND p.bulk_row_id IS NULL")[0][0] == 3
    # ... each from its own shard of the activity's reservation, which is now empty.
    assert query(clean_database, "SELECT count(*), sum(balance) FROM wallets WHERE system_name = 'reservation'"
                                 " AND currency = 'SGD'") == [(3, 0)]
    assert_ledger_invariants(clean_database)


def test_a_chunk_message_delivered_twice_credits_nothing_the_second_time(
        services, clean_database, bulk_settings, queue):
    users = seed_users(services, 10)
    upload(services.uow, queue, bulk_settings, csv_of([f"{user},5.00" for user in users]))
    [chunk_id] = queue.take()

    first = chunks.apply_chunk(services.uow, bulk_settings, chunk_id)
    second = chunks.apply_chunk(services.uow, bulk_settings, chunk_id)

    assert (first.credited, first.skipped) == (10, False)
    assert (second.credited, second.skipped) == (0, True)
    assert set(balances(clean_database).values()) == {500}
    assert query(clean_database, "SELECT count(*) FROM postings WHERE bulk_row_id IS NOT NULL")[0][0] == 10
    assert_ledger_invariants(clean_database)


def test_workers_racing_on_one_chunk_credit_each_row_exactly_once(services, clean_database, bulk_settings, queue):
    users = seed_users(services, CHUNK_ROWS)
    activity_id = upload(services.uow, queue, bulk_settings, csv_of([f"{user},2.00" for user in users])).activity.id
    [chunk_id] = queue.take()
    start, outcomes = threading.Barrier(6), []

    def worker():
        start.wait()
        outcomes.append(chunks.apply_chunk(services.uow, bulk_settings, chunk_id))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcome.skipped for outcome in outcomes) == [False] + [True] * 5
    assert set(balances(clean_database).values()) == {200} and len(balances(clean_database)) == CHUNK_ROWS
    assert funding_total(clean_database) == -200 * CHUNK_ROWS
    assert activity_of(services, activity_id).counters.successful == CHUNK_ROWS
    assert_ledger_invariants(clean_database)


def test_fault_injected_and_deleted_users_fail_without_holding_back_the_rest_of_the_chunk(
        services, clean_database, bulk_settings, queue):
    users = seed_users(services, 20)
    faulty = dataclasses.replace(bulk_settings, bulk_credit_fail_user_ids=frozenset({users[0], users[1]}))
    activity_id = upload(services.uow, queue, faulty, csv_of([f"{user},3.00" for user in users])).activity.id
    with clean_database.begin() as connection:
        connection.execute(text("DELETE FROM users WHERE id = :id"), {"id": users[2]})

    [outcome] = apply_all(services, faulty, queue.take())

    assert (outcome.credited, outcome.failed) == (17, 3)
    failed = dict(query(clean_database, "SELECT user_id::text, error_code FROM bulk_rows WHERE status = 'FAILED'"))
    assert failed == {users[0]: "injected_fault", users[1]: "injected_fault", users[2]: "user_not_found"}
    activity = activity_of(services, activity_id)
    assert activity.status == "PARTIALLY_COMPLETED"
    assert (activity.counters.successful, activity.counters.failed, activity.counters.pending) == (17, 3, 0)
    assert set(balances(clean_database)) == set(users[3:])
    assert_ledger_invariants(clean_database)


def test_a_retry_with_the_fault_cleared_completes_the_activity_and_two_retries_at_once_requeue_rows_once(
        services, clean_database, bulk_settings, queue):
    users = seed_users(services, 120)
    faulty = dataclasses.replace(bulk_settings, bulk_credit_fail_user_ids=frozenset(users[::10]))
    activity_id = upload(services.uow, queue, faulty, csv_of([f"{user},1.00" for user in users])).activity.id
    apply_all(services, faulty, queue.take())
    assert activity_of(services, activity_id).counters.failed == 12
    start, results = threading.Barrier(2), []

    def retry():
        start.wait()
        try:
            results.append(chunks.retry_failed_rows(services.uow, queue, bulk_settings, activity_id, Actor("command_line")).retried_records)
        except NotRetryable:
            results.append("not_retryable")

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(results, key=str) == [12, "not_retryable"]
    assert activity_of(services, activity_id).status == "PROCESSING"
    resent = queue.take()
    apply_all(services, bulk_settings, resent + resent)  # and each message delivered twice
    activity = activity_of(services, activity_id)
    assert activity.status == "COMPLETED"
    assert (activity.counters.successful, activity.counters.failed, activity.counters.pending) == (120, 0, 0)
    assert set(balances(clean_database).values()) == {100} and len(balances(clean_database)) == 120
    assert funding_total(clean_database) == -12_000
    assert query(clean_database, "SELECT max(attempts) FROM bulk_rows")[0][0] == 2
    with pytest.raises(NotRetryable):
        chunks.retry_failed_rows(services.uow, queue, bulk_settings, activity_id, Actor("command_line"))
    assert_ledger_invariants(clean_database)


def test_the_same_file_uploaded_twice_returns_the_first_activity_and_credits_nothing_twice(
        services, clean_database, bulk_settings, queue):
    users = seed_users(services, 30)
    content = csv_of([f"{user},4.00" for user in users]).getvalue()
    first = upload(services.uow, queue, bulk_settings, io.BytesIO(content))
    apply_all(services, bulk_settings, queue.take())

    again = upload(services.uow, queue, bulk_settings, io.BytesIO(content))

    assert (again.created, again.activity.id, again.activity.status) == (False, first.activity.id, "COMPLETED")
    assert queue.take() == []
    assert query(clean_database, "SELECT count(*) FROM bulk_activities")[0][0] == 1
    assert query(clean_database, "SELECT count(*) FROM bulk_rows")[0][0] == 30
    assert set(balances(clean_database).values()) == {400}


def test_the_same_file_uploaded_twice_at_once_makes_one_activity(services, clean_database, bulk_settings, queue):
    users = seed_users(services, 2_000)
    content = csv_of([f"{user},1.00" for user in users]).getvalue()
    start, results = threading.Barrier(2), []

    def send():
        start.wait()
        results.append(upload(services.uow, queue, bulk_settings, io.BytesIO(content)))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(result.created for result in results) == [False, True]
    assert len({result.activity.id for result in results}) == 1
    assert query(clean_database, "SELECT count(*) FROM bulk_rows")[0][0] == 2_000
    assert len(queue.sent) == 2_000 // CHUNK_ROWS


def test_an_idempotency_key_returns_its_activity_and_refuses_a_different_file(
        services, clean_database, bulk_settings, queue):
    users = seed_users(services, 3)
    # Real keys: the upload's audit event names its key (audit_events.api_key_id references api_keys).
    maker, other = (find_api_key(services.uow(), create_api_key(services.uow(), "operator")).id for _ in range(2))
    first = upload(services.uow, queue, bulk_settings, csv_of([f"{users[0]},1.00"]), idempotency_key="k-1",
                   api_key_id=maker)
    again = upload(services.uow, queue, bulk_settings, csv_of([f"{users[0]},1.00"]), idempotency_key="k-1",
                   api_key_id=maker)
    assert (again.created, again.activity.id) == (False, first.activity.id)
    with pytest.raises(IdempotencyKeyReused):
        upload(services.uow, queue, bulk_settings, csv_of([f"{users[1]},1.00"]), idempotency_key="k-1", api_key_id=maker)
    other_client = upload(services.uow, queue, bulk_settings, csv_of([f"{users[2]},1.00"]), idempotency_key="k-1",
                          api_key_id=other)
    assert other_client.created


def test_a_transient_fault_runs_the_whole_chunk_again_and_credits_once(services, clean_database, bulk_settings, queue):
    users = seed_users(services, 10)
    upload(services.uow, queue, bulk_settings, csv_of([f"{user},1.00" for user in users]))
    [chunk_id] = queue.take()
    faults = iter([True])

    class FlakyUnitOfWork:
        """Fails once after the chunk's rows were written, as a lost connection would."""

        def __init__(self):
            self.inner = services.uow()

        def __enter__(self):
            self.inner.__enter__()
            self.bulk, outer = self.inner.bulk, self

            def finish(*args):
                type(self.inner.bulk).finish_chunk(self.inner.bulk, *args)
                if next(faults, False):
                    raise TransientFault("connection lost (staged)")
            outer.bulk = type("Bulk", (), {"__getattr__": lambda _, name: getattr(self.inner.bulk, name),
                                           "finish_chunk": staticmethod(finish)})()
            return self

        def __exit__(self, *exc_info):
            return self.inner.__exit__(*exc_info)

        def commit(self):
            self.inner.commit()

    outcome = chunks.apply_chunk(FlakyUnitOfWork, bulk_settings, chunk_id)

    assert list(faults) == [], "the staged fault happened"
    assert outcome.credited == 10
    assert set(balances(clean_database).values()) == {100}
    assert query(clean_database, "SELECT count(*) FROM journal_entries WHERE kind = 'bulk_credit'")[0][0] == 1
    assert_ledger_invariants(clean_database)


def test_the_database_refuses_a_second_posting_for_one_row(services, clean_database, bulk_settings, queue):
    users = seed_users(services, 1)
    upload(services.uow, queue, bulk_settings, csv_of([f"{users[0]},1.00"]))
    apply_all(services, bulk_settings, queue.take())
    wallet_id, row_id = query(clean_database, "SELECT p.wallet_id, p.bulk_row_id FROM postings p"
                                              " WHERE p.bulk_row_id IS NOT NULL")[0]
    with pytest.raises(IntegrityError) as refusal, clean_database.begin() as connection:
        entry = uuid.uuid4()
        connection.execute(text("INSERT INTO journal_entries (id, kind, currency, amount)"
                                " VALUES (:id, 'bulk_credit', 'SGD', 100)"), {"id": entry})
        connection.execute(text("INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after,"
                                " bulk_row_id) VALUES (:entry, :wallet, 'SGD', 100, 200, :row)"),
                           {"entry": entry, "wallet": wallet_id, "row": row_id})
    assert isinstance(refusal.value.orig, psycopg.errors.UniqueViolation)


def test_an_unknown_chunk_is_not_found(services, clean_database, bulk_settings):
    with pytest.raises(NotFound):
        chunks.apply_chunk(services.uow, bulk_settings, 123_456)


# --- HTTP ----------------------------------------------------------------------------------

@pytest.fixture
def http(queued_http):
    return queued_http


def post_file(http, content: bytes, **headers):
    return http.post("/api/v1/wallet/bulk-credit", data={"file": (io.BytesIO(content), "credits.csv")},
                     headers=headers, content_type="multipart/form-data")


def test_uploading_over_http_answers_202_then_200_for_the_same_file(services, http, queue):
    users = seed_users(services, 3)
    content = f"uuid,amount\n{users[0]},1.00\n{users[1]},2.00\nnope,3\n".encode()

    accepted = post_file(http, content)
    again = post_file(http, content)

    assert accepted.status_code == 202
    assert accepted.json == {"activity_id": accepted.json["activity_id"], "status": "accepted", "total_records": 3}
    assert again.status_code == 200 and again.json["activity_id"] == accepted.json["activity_id"]
    assert again.json["invalid_records"] == 1 and again.json["status"] == "UPLOADED"


@pytest.mark.parametrize("content, status, code", [
    (b"name,amount\nx,1\n", 422, "unreadable_file"),
    (b"", 422, "unreadable_file"),
    (b"\xff\xfe\x00", 422, "unreadable_file"),
])
def test_an_unreadable_upload_is_refused_with_the_reason(http, content, status, code):
    response = post_file(http, content)
    assert (response.status_code, response.json["code"]) == (status, code)
    assert response.mimetype == "application/problem+json"


def test_an_upload_without_a_file_field_is_422_and_one_too_large_is_413(services, http, monkeypatch):
    assert http.post("/api/v1/wallet/bulk-credit", data={}, content_type="multipart/form-data").status_code == 422
    # The upload route has its own limit, BULK_CREDIT_MAX_BYTES, whatever the app's limit for other routes.
    monkeypatch.setattr(services, "settings", dataclasses.replace(services.settings, bulk_credit_max_bytes=1_000))
    response = post_file(http, b"uuid,amount\n" + b"x" * 2_000)
    assert (response.status_code, response.json["code"]) == (413, "payload_too_large")


def test_a_header_only_file_is_accepted_and_failed_at_once(http):
    response = post_file(http, b"uuid,amount\r\n")
    assert (response.status_code, response.json["total_records"]) == (202, 0)
    activity = http.get(f"/api/v1/wallet/bulk-credit/{response.json['activity_id']}").json
    assert activity["status"] == "FAILED" and activity["completed_at"] is not None


def test_the_activity_rows_and_csv_export_show_each_rows_outcome(services, http, queue, settings):
    users = seed_users(services, 3)
    content = f"uuid,amount\n{users[0]},1.50\n=cmd|' /C calc'!A0,1\n{users[1]},2.00\n".encode()
    activity_id = post_file(http, content).json["activity_id"]
    apply_all(services, settings, queue.take())

    activity = http.get(f"/api/v1/wallet/bulk-credit/{activity_id}").json
    first_page = http.get(f"/api/v1/wallet/bulk-credit/{activity_id}/rows?limit=2").json
    second_page = http.get(f"/api/v1/wallet/bulk-credit/{activity_id}/rows?limit=2&cursor={first_page['next_cursor']}").json
    invalid = http.get(f"/api/v1/wallet/bulk-credit/{activity_id}/rows?status=invalid").json["data"]
    export = http.get(f"/api/v1/wallet/bulk-credit/{activity_id}/rows", headers={"Accept": "text/csv"})

    assert {key: activity[key] for key in ("status", "total_records", "valid_records", "invalid_records",
                                           "successful_records", "failed_records", "pending_records")} == {
        "status": "COMPLETED", "total_records": 3, "valid_records": 2, "invalid_records": 1,
        "successful_records": 2, "failed_records": 0, "pending_records": 0}
    assert [row["row_number"] for row in first_page["data"] + second_page["data"]] == [2, 3, 4]
    assert second_page["next_cursor"] is None
    success = first_page["data"][0]
    assert (success["user_id"], success["amount"], success["currency"], success["status"], success["attempts"]) == (
        users[0], "1.50", "SGD", "SUCCESS", 1)
    assert http.get(f"/api/v1/transactions/{success['transaction_id']}").json["kind"] == "bulk_credit"
    assert [(row["row_number"], row["error_code"]) for row in invalid] == [(3, "invalid_user_id")]
    assert export.status_code == 200 and export.mimetype == "text/csv"
    lines = export.get_data(as_text=True).splitlines()
    assert lines[0].startswith("row_number,user_id,amount,currency") and len(lines) == 4
    assert lines[2].startswith("3,'=cmd|' /C calc'!A0,1,")


def test_retry_over_http_answers_202_then_400_and_refuses_unknown_or_malformed_ids(
        services, http, queue, settings):
    users = seed_users(services, 2)
    faulty = dataclasses.replace(settings, bulk_credit_fail_user_ids=frozenset({users[0]}))
    activity_id = post_file(http, f"uuid,amount\n{users[0]},1.00\n{users[1]},1.00\n".encode()).json["activity_id"]
    apply_all(services, faulty, queue.take())
    assert http.get(f"/api/v1/wallet/bulk-credit/{activity_id}").json["status"] == "PARTIALLY_COMPLETED"

    retried = http.post("/api/v1/wallet/bulk-credit/retry", json={"activity_id": activity_id})
    again = http.post("/api/v1/wallet/bulk-credit/retry", json={"activity_id": activity_id})
    unknown = http.post("/api/v1/wallet/bulk-credit/retry", json={"activity_id": str(uuid.uuid4())})
    malformed = http.post("/api/v1/wallet/bulk-credit/retry", json={"activity_id": "nope"})

    assert (retried.status_code, retried.json) == (202, {"activity_id": activity_id, "status": "PROCESSING",
                                                         "retried_records": 1})
    assert (again.status_code, again.json["code"]) == (400, "not_retryable")
    assert (unknown.status_code, malformed.status_code) == (404, 422)
    apply_all(services, settings, queue.take())
    assert http.get(f"/api/v1/wallet/bulk-credit/{activity_id}").json["status"] == "COMPLETED"


def test_bulk_credit_needs_an_operator_or_admin_scope(services, app, http):
    user_token = create_api_key(services.uow(), f"user:{seed_users(services, 1)[0]}")
    operator_token = create_api_key(services.uow(), "operator")
    client = app.test_client()
    as_user = client.get(f"/api/v1/wallet/bulk-credit/{uuid.uuid4()}", headers={"Authorization": f"Bearer {user_token}"})
    as_operator = client.get(f"/api/v1/wallet/bulk-credit/{uuid.uuid4()}",
                             headers={"Authorization": f"Bearer {operator_token}"})
    anonymous = client.get(f"/api/v1/wallet/bulk-credit/{uuid.uuid4()}")
    assert (as_user.status_code, as_operator.status_code, anonymous.status_code) == (403, 404, 401)


def test_a_users_history_shows_the_bulk_credit_with_the_rows_reference_and_activity(services, http, queue, settings):
    [user] = seed_users(services, 1)
    activity_id = post_file(http, f"uuid,amount,reference\n{user},7.25,payroll-42\n".encode()).json["activity_id"]
    apply_all(services, settings, queue.take())

    [item] = http.get(f"/api/v1/users/{user}/transactions").json["data"]

    assert (item["kind"], item["amount"], item["direction"], item["balance_after"]) == ("bulk_credit", "7.25",
                                                                                         "credit", "7.25")
    assert (item["reference"], item["activity_id"]) == ("payroll-42", activity_id)


def test_chunks_crediting_the_same_new_users_at_once_create_each_wallet_once_and_chain_balances(
        services, clean_database, bulk_settings, queue):
    users = seed_users(services, CHUNK_ROWS)
    lines = [f"{user},1.00" for user in users] + [f"{user},2.00" for user in reversed(users)]
    upload(services.uow, queue, bulk_settings, csv_of(lines))
    chunk_ids = queue.take()
    start = threading.Barrier(len(chunk_ids))

    def worker(chunk_id):
        start.wait()
        chunks.apply_chunk(services.uow, bulk_settings, chunk_id)

    threads = [threading.Thread(target=worker, args=(chunk_id,)) for chunk_id in chunk_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(chunk_ids) == 2 and set(balances(clean_database).values()) == {300}
    broken_chains = query(clean_database, """
        SELECT count(*) FROM (SELECT balance_after, sum(amount) OVER (PARTITION BY wallet_id ORDER BY id) AS running
                                FROM postings) chain WHERE balance_after <> running""")[0][0]
    assert broken_chains == 0
    assert_ledger_invariants(clean_database)


def test_a_file_with_more_rows_than_the_limit_is_refused_whole(services, clean_database, bulk_settings, queue):
    users = seed_users(services, 11)
    small = dataclasses.replace(bulk_settings, bulk_credit_max_rows=10, bulk_credit_chunk_rows=5)
    with pytest.raises(TooLarge):
        upload(services.uow, queue, small, csv_of([f"{user},1.00" for user in users]))
    assert query(clean_database, "SELECT count(*) FROM bulk_rows")[0][0] == 0
    assert query(clean_database, "SELECT count(*) FROM bulk_activities")[0][0] == 0


def test_the_command_line_seeds_users_uploads_their_file_and_shows_its_status(app, services, tmp_path, settings):
    runner = app.test_cli_runner()
    out = tmp_path / "seed.csv"

    seeded = runner.invoke(args=["users", "seed-and-export", "--total", "120", "--amount", "2.50", "--out", str(out)])
    checked = runner.invoke(args=["bulk-credit", "upload", "--dry-run", str(out)])
    uploaded = runner.invoke(args=["bulk-credit", "upload", str(out)])
    again = runner.invoke(args=["bulk-credit", "upload", str(out)])

    assert seeded.exit_code == 0, seeded.output
    lines = out.read_text().splitlines()
    assert lines[0] == "uuid,amount" and len(lines) == 121 and lines[1].endswith(",2.50")
    assert query(services.engine, "SELECT count(*) FROM users")[0][0] == 120
    # seed-and-export funded the default account with exactly the file's total
    assert json.loads(checked.stdout)["funding"] == [
        {"currency": "SGD", "required": "300.00", "available": "300.00", "sufficient": True}]
    assert uploaded.exit_code == 0, uploaded.output
    activity_id = json.loads(uploaded.stdout)["activity_id"]
    assert json.loads(again.stdout)["activity_id"] == activity_id
    chunk_ids = [chunk_id for (chunk_id,) in query(services.engine, "SELECT id FROM bulk_chunks")]
    apply_all(services, settings, chunk_ids)
    status = runner.invoke(args=["bulk-credit", "status", activity_id])
    retry = runner.invoke(args=["bulk-credit", "retry", activity_id])
    assert json.loads(status.stdout)["status"] == "COMPLETED"
    assert retry.exit_code == 1 and "not_retryable" in retry.output
