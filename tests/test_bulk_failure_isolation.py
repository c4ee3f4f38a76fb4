"""No payee lost, none blocking the others: a row that cannot be applied fails alone, a
chunk that keeps failing is given up on with a code, and a final activity stays final.

The chunk transactions run in this process against the real PostgreSQL, so each fault is
staged exactly; the issue's own example and the final-status case also run end to end
with real worker and scheduler processes.
"""
from __future__ import annotations

import dataclasses
import sys
import time

import pytest
from sqlalchemy import text

from pipeline.bulk import chunks, isolation, recovery
from pipeline.bulk.ports import Actor
from pipeline.bulk.upload import upload
from pipeline.money import BALANCE_MINOR_MAX
from tests.conftest import assert_ledger_invariants, test_environ
from tests.processes import Process
from tests.test_bulk_pipeline import RecordingQueue, apply_all, balances, csv_of, post_file, query, seed_users

OPERATOR = Actor("command_line")


@pytest.fixture
def users(services, clean_database):
    return seed_users(services, 4)


def fill_wallet(engine, user_id: str, currency: str, balance: int, shard: int = 63) -> None:
    """Brings a user's wallet to `balance` with one journal entry from a bank shard that
    deposits never use (63, or 62 for a second wallet near the limit), as raw SQL: the API
    caps one movement at 10**15 minor units."""
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO wallets (system_name, shard, currency) VALUES ('bank', :s, :c)"
                                " ON CONFLICT DO NOTHING"), {"c": currency, "s": shard})
        connection.execute(text("INSERT INTO wallets (user_id, currency) VALUES (:u, :c) ON CONFLICT DO NOTHING"),
                           {"u": user_id, "c": currency})
        (bank_id, bank_balance), = connection.execute(text(
            "SELECT id, balance FROM wallets WHERE system_name = 'bank' AND shard = :s AND currency = :c"),
            {"c": currency, "s": shard}).all()
        (wallet_id, current), = connection.execute(text(
            "SELECT id, balance FROM wallets WHERE user_id = :u AND currency = :c"), {"u": user_id, "c": currency}).all()
        delta = balance - current
        entry_id = connection.execute(text(
            "INSERT INTO journal_entries (id, kind, currency, amount, to_user_id)"
            " VALUES (gen_random_uuid(), 'deposit', :c, :a, :u) RETURNING id"),
            {"c": currency, "a": delta, "u": user_id}).scalar_one()
        connection.execute(text(
            "INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
            " VALUES (:e, :bank, :c, :minus, :bank_after), (:e, :w, :c, :a, :after)"),
            {"e": entry_id, "bank": bank_id, "c": currency, "minus": -delta, "bank_after": bank_balance - delta,
             "w": wallet_id, "a": delta, "after": balance})
        connection.execute(text("UPDATE wallets SET balance = balance + CASE WHEN id = :w THEN :a ELSE -:a END"
                                " WHERE id IN (:w, :bank)"), {"w": wallet_id, "bank": bank_id, "a": delta})


def rows_by_user(engine, activity_id) -> dict[str, tuple]:
    return {user: (status, code) for user, status, code in query(
        engine, "SELECT user_id::text, status, error_code FROM bulk_rows WHERE activity_id = :a", a=activity_id)}


def activity_state(engine, activity_id) -> tuple:
    return query(engine, "SELECT status, successful_records, failed_records, pending_records,"
                         " completed_at IS NOT NULL, next_retry_at IS NOT NULL, failed_chunks"
                         " FROM bulk_activities WHERE id = :a", a=activity_id)[0]


def test_a_credit_that_would_pass_the_bigint_balance_fails_alone_and_the_rest_of_its_chunk_is_credited(
        services, engine, queue, users):
    rich, a, b = users[:3]
    fill_wallet(engine, rich, "SGD", BALANCE_MINOR_MAX)
    activity_id = upload(services.uow, queue, services.settings,
                         csv_of([f"{a},5.00", f"{rich},0.01", f"{b},6.00"])).activity.id

    [applied] = apply_all(services, services.settings, queue.take())

    assert (applied.credited, applied.failed) == (2, 1)
    assert rows_by_user(engine, activity_id) == {
        a: ("SUCCESS", None), rich: ("FAILED", "amount_out_of_range"), b: ("SUCCESS", None)}
    assert balances(engine) == {rich: BALANCE_MINOR_MAX, a: 500, b: 600}
    # Final at once: trying again on a timer would only fail the same way.
    assert activity_state(engine, activity_id) == ("PARTIALLY_COMPLETED", 2, 1, 0, True, False, 0)
    assert_ledger_invariants(engine)


def test_rows_of_one_wallet_fail_from_the_first_that_would_pass_the_limit(services, engine, queue, users):
    rich = users[0]
    fill_wallet(engine, rich, "SGD", BALANCE_MINOR_MAX - 1000)
    activity_id = upload(services.uow, queue, services.settings,
                         csv_of([f"{rich},4.00", f"{rich},6.00", f"{rich},0.01", f"{users[1]},1.00"])).activity.id

    apply_all(services, services.settings, queue.take())

    statuses = query(engine, "SELECT row_number, status, error_code FROM bulk_rows WHERE activity_id = :a"
                             " ORDER BY row_number", a=activity_id)
    assert statuses == [(2, "SUCCESS", None), (3, "SUCCESS", None), (4, "FAILED", "amount_out_of_range"),
                        (5, "SUCCESS", None)]
    assert balances(engine)[rich] == BALANCE_MINOR_MAX
    assert_ledger_invariants(engine)



def test_a_frozen_wallet_at_the_limit_fails_as_frozen_beside_a_wallet_that_fails_as_out_of_range(
        services, engine, queue, users):
    frozen, rich, a = users[:3]
    fill_wallet(engine, frozen, "SGD", BALANCE_MINOR_MAX)
    fill_wallet(engine, rich, "SGD", BALANCE_MINOR_MAX - 100, shard=62)
    with engine.begin() as connection:
        connection.execute(text("UPDATE wallets SET status = 'frozen' WHERE user_id = :u"), {"u": frozen})
    activity_id = upload(services.uow, queue, services.settings, csv_of(
        [f"{frozen},0.01", f"{rich},0.50", f"{a},2.00", f"{rich},0.60", f"{frozen},3.00"])).activity.id

    apply_all(services, services.settings, queue.take())

    statuses = query(engine, "SELECT row_number, status, error_code FROM bulk_rows WHERE activity_id = :a"
                             " ORDER BY row_number", a=activity_id)
    assert statuses == [(2, "FAILED", "wallet_frozen"), (3, "SUCCESS", None), (4, "SUCCESS", None),
                        (5, "FAILED", "amount_out_of_range"), (6, "FAILED", "wallet_frozen")]
    assert balances(engine) == {frozen: BALANCE_MINOR_MAX, rich: BALANCE_MINOR_MAX - 50, a: 200}
    assert_ledger_invariants(engine)

@pytest.fixture
def staged_fault(engine):
    """Stages a fault PostgreSQL raises: `stage(table, event, condition, message)` adds a
    trigger on `table` that raises `message` (a check violation) when `condition` holds;
    `staged_fault.repair()` removes it, as the fixture does after the test."""
    staged: list[str] = []

    def stage(table: str, event: str, condition: str, message: str) -> None:
        name = f"test_fault_{len(staged)}"
        with engine.begin() as connection:
            connection.execute(text(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
                f" $$BEGIN RAISE EXCEPTION '{message}' USING ERRCODE = 'check_violation'; END$$"))
            connection.execute(text(f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW"
                                    f" WHEN ({condition}) EXECUTE FUNCTION {name}()"))
        staged.append(f"{name}:{table}")

    def repair() -> None:
        with engine.begin() as connection:
            while staged:
                name, table = staged.pop().split(":")
                connection.execute(text(f"DROP TRIGGER IF EXISTS {name} ON {table}"))
                connection.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))

    stage.repair = repair
    yield stage
    repair()


def test_a_row_the_database_refuses_for_an_unforeseen_reason_fails_alone_with_cannot_apply(
        services, engine, queue, clean_database, staged_fault):
    payees = seed_users(services, 300)
    activity_id = upload(services.uow, queue, services.settings,
                         csv_of([f"{user},1.00" for user in payees])).activity.id
    bad_user = payees[137]
    row_id = query(engine, "SELECT id FROM bulk_rows WHERE activity_id = :a AND user_id = :u",
                   a=activity_id, u=bad_user)[0][0]
    staged_fault("postings", "INSERT", f"NEW.bulk_row_id = {int(row_id)}", "refused by the test")

    [applied] = apply_all(services, services.settings, queue.take())

    assert (applied.credited, applied.failed) == (299, 1)
    outcomes = rows_by_user(engine, activity_id)
    assert outcomes.pop(bad_user) == ("FAILED", "cannot_apply")
    assert set(outcomes.values()) == {("SUCCESS", None)}
    message = query(engine, "SELECT error_message FROM bulk_rows WHERE user_id = :u", u=bad_user)[0][0]
    assert "CheckViolation" in message and "refused by the test" in message
    # (isolating made its wallet, empty: wallets are made once, before the savepoints)
    assert sum(balances(engine).values()) == 29_900 and balances(engine)[bad_user] == 0
    assert activity_state(engine, activity_id) == ("PARTIALLY_COMPLETED", 299, 1, 0, True, False, 0)
    assert_ledger_invariants(engine)


def test_a_chunk_that_keeps_failing_is_given_up_after_its_error_limit_and_an_operator_retry_credits_it(
        services, engine, queue, users, staged_fault):
    settings = dataclasses.replace(services.settings, bulk_credit_chunk_rows=2)
    activity_id = upload(services.uow, queue, settings, csv_of([f"{user},1.00" for user in users])).activity.id
    first, second = queue.take()
    staged_fault("bulk_chunks", "UPDATE", f"NEW.id = {int(second)} AND NEW.state = 'DONE'",
                 "chunk bug staged by the test")
    apply_all(services, settings, [first])

    for _ in range(chunks.CHUNK_ERRORS_MAX - 1):
        with pytest.raises(Exception, match="chunk bug staged by the test"):
            chunks.apply_chunk(services.uow, settings, second)
    gave_up = chunks.apply_chunk(services.uow, settings, second)

    assert (gave_up.gave_up, gave_up.failed) == (True, 2)
    assert {outcome for outcome in rows_by_user(engine, activity_id).values()} == {
        ("SUCCESS", None), ("FAILED", "chunk_failed")}
    assert activity_state(engine, activity_id) == ("PARTIALLY_COMPLETED", 2, 2, 0, True, False, 1)
    error = query(engine, "SELECT last_chunk_error FROM bulk_activities WHERE id = :a", a=activity_id)[0][0]
    assert f"failed {chunks.CHUNK_ERRORS_MAX} times" in error and "chunk bug staged by the test" in error
    assert chunks.apply_chunk(services.uow, settings, second).skipped  # never tried again by itself

    staged_fault.repair()
    chunks.retry_failed_rows(services.uow, queue, settings, activity_id, OPERATOR)
    apply_all(services, settings, queue.take())

    assert activity_state(engine, activity_id) == ("COMPLETED", 4, 0, 0, True, False, 0)
    assert query(engine, "SELECT last_chunk_error FROM bulk_activities") == [(None,)]
    assert set(balances(engine).values()) == {100}
    assert_ledger_invariants(engine)


def test_a_chunk_whose_message_waits_through_many_expired_leases_is_sent_again_and_never_given_up(
        services, engine, queue, users):
    activity_id = upload(services.uow, queue, services.settings, csv_of([f"{users[0]},1.00"])).activity.id
    queue.take()  # no worker runs: the message waits, and its lease expires again and again
    for _ in range(3 * chunks.CHUNK_STARTS_MAX):
        with engine.begin() as connection:
            connection.execute(text("UPDATE bulk_chunks SET leased_until = now() - interval '1 second'"))
        assert recovery.resend_lost_chunks(services.uow, queue, services.settings) == 1
    sent = queue.take()

    apply_all(services, services.settings, sent)  # the workers come back to a long backlog

    assert rows_by_user(engine, activity_id) == {users[0]: ("SUCCESS", None)}
    assert activity_state(engine, activity_id) == ("COMPLETED", 1, 0, 0, True, False, 0)


def test_a_chunk_begun_more_than_its_maximum_without_finishing_is_given_up_and_a_retry_credits_it(
        services, engine, queue, users):
    activity_id = upload(services.uow, queue, services.settings, csv_of([f"{users[0]},1.00"])).activity.id
    [chunk_id] = queue.take()
    with engine.begin() as connection:  # as if that many workers had died applying it
        connection.execute(text("UPDATE bulk_chunks SET started_count = :n"), {"n": chunks.CHUNK_STARTS_MAX})

    gave_up = chunks.apply_chunk(services.uow, services.settings, chunk_id)

    assert (gave_up.gave_up, gave_up.failed) == (True, 1)
    assert rows_by_user(engine, activity_id) == {users[0]: ("FAILED", "chunk_failed")}
    assert query(engine, "SELECT state FROM bulk_chunks") == [("FAILED",)]
    assert activity_state(engine, activity_id) == ("FAILED", 0, 1, 0, True, False, 1)
    assert "begun 5 times without finishing" in query(engine, "SELECT last_chunk_error FROM bulk_activities")[0][0]

    chunks.retry_failed_rows(services.uow, queue, services.settings, activity_id, OPERATOR)
    apply_all(services, services.settings, queue.take())
    assert activity_state(engine, activity_id) == ("COMPLETED", 1, 0, 0, True, False, 0)


def test_past_the_isolation_limit_rows_not_tried_fail_as_chunk_failed_never_as_refused(
        services, engine, queue, clean_database, staged_fault, monkeypatch):
    monkeypatch.setattr(isolation, "ISOLATION_TRIES_MAX", 256)  # a third of the rows are refused: far past it
    payees = seed_users(services, 600)
    lines = [f"{user},{'42.42' if n % 3 == 0 else '1.00'}" for n, user in enumerate(payees)]
    activity_id = upload(services.uow, queue, services.settings, csv_of(lines)).activity.id
    staged_fault("postings", "INSERT", "NEW.bulk_row_id IS NOT NULL AND NEW.amount = 4242",
                 "amount refused by the test")

    apply_all(services, services.settings, queue.take())

    outcomes = query(engine, "SELECT amount_minor, status, error_code, count(*) FROM bulk_rows"
                             " WHERE activity_id = :a GROUP BY 1, 2, 3", a=activity_id)
    by_outcome = {(amount, status, code): count for amount, status, code, count in outcomes}
    assert not any(code == "cannot_apply" and amount == 100 for amount, _, code in by_outcome)
    assert not any(status == "SUCCESS" and amount == 4242 for amount, status, _ in by_outcome)
    assert by_outcome.get((100, "SUCCESS", None), 0) > 0 and by_outcome.get((4242, "FAILED", "cannot_apply"), 0) > 0
    assert sum(by_outcome.values()) == 600 and by_outcome.get((100, "FAILED", "chunk_failed"), 0) > 0
    not_tried = query(engine, "SELECT DISTINCT error_message FROM bulk_rows WHERE error_code = 'chunk_failed'")
    assert all("not tried" in message for message, in not_tried)
    assert_ledger_invariants(engine)


def test_the_scheduler_retries_what_the_worker_left_due_whatever_its_own_attempt_limit(
        services, engine, queue, users):
    worker = dataclasses.replace(services.settings, bulk_credit_fail_user_ids=frozenset({users[0]}),
                                 retry_base_delay_s=0.0, retry_max_attempts=3)
    scheduler = dataclasses.replace(worker, retry_max_attempts=1)
    activity_id = upload(services.uow, queue, worker, csv_of([f"{user},1.00" for user in users])).activity.id
    apply_all(services, worker, queue.take())

    for _ in range(3):
        recovery.retry_due_rows(services.uow, queue, scheduler)
        apply_all(services, worker, queue.take())

    assert activity_state(engine, activity_id) == ("PARTIALLY_COMPLETED", 3, 1, 0, True, False, 0)
    assert rows_by_user(engine, activity_id)[users[0]] == ("FAILED", "retries_exhausted")


def test_automatic_retries_never_move_a_settled_activity_back_and_it_stays_final_once_final(
        services, engine, queue, users):
    settings = dataclasses.replace(services.settings, bulk_credit_fail_user_ids=frozenset({users[0]}),
                                   retry_base_delay_s=0.0, retry_max_attempts=3)
    activity_id = upload(services.uow, queue, settings, csv_of([f"{user},1.00" for user in users])).activity.id
    apply_all(services, settings, queue.take())
    seen = [activity_state(engine, activity_id)]
    for _ in range(5):
        recovery.retry_due_rows(services.uow, queue, settings)
        seen.append(activity_state(engine, activity_id))
        apply_all(services, settings, queue.take())
        seen.append(activity_state(engine, activity_id))

    assert {state[0] for state in seen} == {"PARTIALLY_COMPLETED"}
    assert seen[0] == ("PARTIALLY_COMPLETED", 3, 1, 0, False, True, 0)  # not final: a retry is due
    final_from = next(n for n, state in enumerate(seen) if state[4])
    assert all(state == ("PARTIALLY_COMPLETED", 3, 1, 0, True, False, 0) for state in seen[final_from:])
    completed_at = query(engine, "SELECT completed_at FROM bulk_activities")[0][0]
    recovery.retry_due_rows(services.uow, queue, settings)
    assert query(engine, "SELECT completed_at FROM bulk_activities")[0][0] == completed_at
    history = query(engine, "SELECT from_status, to_status, final, actor_type FROM bulk_activity_history"
                            " ORDER BY id")
    assert history == [(None, "UPLOADED", False, "command_line"),
                       ("UPLOADED", "PARTIALLY_COMPLETED", False, "worker"),
                       ("PARTIALLY_COMPLETED", "PARTIALLY_COMPLETED", True, "worker")]


def test_the_retry_endpoint_records_its_caller_in_the_history_and_reopens_a_final_activity(
        services, engine, http, users):
    http.application.extensions["wallet.chunk_queue"] = queue = RecordingQueue()
    settings = dataclasses.replace(services.settings, bulk_credit_fail_user_ids=frozenset({users[0]}),
                                   retry_max_attempts=1)
    activity_id = upload(services.uow, queue, settings, csv_of([f"{user},1.00" for user in users])).activity.id
    apply_all(services, settings, queue.take())
    body = http.get(f"/api/v1/wallet/bulk-credit/{activity_id}").json
    assert (body["status"], body["final"], body["next_retry_at"]) == ("PARTIALLY_COMPLETED", True, None)

    assert http.post("/api/v1/wallet/bulk-credit/retry", json={"activity_id": activity_id}).status_code == 202
    apply_all(services, services.settings, queue.take())

    body = http.get(f"/api/v1/wallet/bulk-credit/{activity_id}").json
    assert (body["status"], body["final"], body["completed_at"] is not None) == ("COMPLETED", True, True)
    history = http.get(f"/api/v1/wallet/bulk-credit/{activity_id}/history").json["data"]
    assert [(change["from_status"], change["to_status"], change["final"], change["actor"]["type"])
            for change in history] == [
        (None, "UPLOADED", False, "command_line"), ("UPLOADED", "PARTIALLY_COMPLETED", True, "worker"),
        ("PARTIALLY_COMPLETED", "PROCESSING", False, "api_key"), ("PROCESSING", "COMPLETED", True, "worker")]
    admin_key_id = query(engine, "SELECT id FROM api_keys WHERE scope = 'admin'")[0][0]
    assert history[2]["actor"]["api_key_id"] == admin_key_id and history[2]["reason"] == "retry of 1 FAILED rows"
    assert all(change["at"].endswith("Z") for change in history)
    assert http.get(f"/api/v1/wallet/bulk-credit/{users[0]}/history").status_code == 404


# End to end: the issue's example, and a client polling for a final status, with real processes.

def wait_for(http, activity_id, done, seconds: float = 90, seen: list | None = None) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        body = http.get(f"/api/v1/wallet/bulk-credit/{activity_id}").json
        if seen is not None:
            seen.append(body)
        if done(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_the_issue_example_a_maxed_wallet_row_fails_alone_through_real_workers(services, engine, http, workers):
    a, rich, b = seed_users(services, 3)
    fill_wallet(engine, rich, "SGD", BALANCE_MINOR_MAX)
    workers(1)

    accepted = post_file(http, f"uuid,amount\n{a},5.00\n{rich},0.01\n{b},6.00\n".encode())
    body = wait_for(http, accepted.json["activity_id"], lambda body: body["final"])

    assert (body["status"], body["successful_records"], body["failed_records"]) == ("PARTIALLY_COMPLETED", 2, 1)
    rows = http.get(f"/api/v1/wallet/bulk-credit/{body['activity_id']}/rows").json["data"]
    assert [(row["status"], row["error_code"]) for row in rows] == [
        ("SUCCESS", None), ("FAILED", "amount_out_of_range"), ("SUCCESS", None)]
    assert balances(engine) == {a: 500, rich: BALANCE_MINOR_MAX, b: 600}
    assert_ledger_invariants(engine)


def test_a_client_polling_for_final_never_sees_it_change_while_the_scheduler_retries(
        services, engine, http, workers, tmp_path):
    users = seed_users(services, 3)
    environ = {"BULK_CREDIT_FAIL_USER_IDS": users[0], "RETRY_BASE_DELAY_S": "0.5", "RETRY_MAX_ATTEMPTS": "3",
               "SCHEDULER_SWEEP_INTERVAL_S": "0.3", "RECONCILE_INTERVAL_S": "3600"}
    workers(1, **environ)
    scheduler = Process(tmp_path / "scheduler.log", [sys.executable, "-m", "jobs"], test_environ(**environ))
    try:
        accepted = post_file(http, ("uuid,amount\n" + "".join(f"{user},1.00\n" for user in users)).encode())
        seen: list[dict] = []
        final = wait_for(http, accepted.json["activity_id"], lambda body: body["final"], seen=seen)
        for _ in range(20):  # the scheduler keeps sweeping; nothing may change any more
            time.sleep(0.1)
            seen.append(http.get(f"/api/v1/wallet/bulk-credit/{final['activity_id']}").json)
    finally:
        scheduler.stop()

    settled = [body for body in seen if body["pending_records"] == 0]
    assert {body["status"] for body in settled} == {"PARTIALLY_COMPLETED"}, scheduler.tail()
    assert any(body["next_retry_at"] for body in seen if not body["final"])
    after = seen[seen.index(final):]
    assert all(body == final for body in after)
    row = http.get(f"/api/v1/wallet/bulk-credit/{final['activity_id']}/rows?status=FAILED").json["data"][0]
    assert (row["error_code"], row["attempts"]) == ("retries_exhausted", 3)
