"""Reversing a bulk credit over HTTP on the real PostgreSQL: a reversal activity takes the
money of the credit's SUCCESS rows back to its funding account, each row at most once, never
below zero. Chunk messages are recorded and applied here, so each case is staged exactly (the
worker processes are in test_bulk_reversal_end_to_end.py)."""
from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from pipeline import wallets
from pipeline.money import MINOR_UNITS, Currency
from pipeline.users import create_api_key
from tests.conftest import assert_ledger_invariants
from tests.test_bulk_pipeline import apply_all, balances, post_file, query, seed_users
from tests.test_funding import account_balance, reconcile_full

URL = "/api/v1/wallet/bulk-credit"


def credited(services, http, queue, lines: list[str], header: str = "uuid,amount,reference") -> str:
    """Uploads and applies a credit file; returns its activity id."""
    accepted = post_file(http, ("\n".join([header, *lines]) + "\n").encode())
    assert accepted.status_code == 202, accepted.json
    apply_all(services, services.settings, queue.take())
    return accepted.json["activity_id"]


def reverse(http, activity_id: str, key: str = "reverse-1", **body):
    return http.post(f"{URL}/{activity_id}/reverse", json={"reason": "wrong file", **body},
                     headers={"Idempotency-Key": key})


def rows(http, activity_id: str) -> dict[int, dict]:
    return {row["row_number"]: row for row in http.get(f"{URL}/{activity_id}/rows?limit=100").json["data"]}


def move(services, use_case, user_id: str, amount_minor: int) -> None:
    """A deposit or withdrawal of `amount_minor` SGD for the user, as an admin would make it."""
    request = wallets.MoneyRequest(Currency("SGD", MINOR_UNITS["SGD"]), amount_minor, None)
    with services.uow() as uow:
        use_case(uow, services.settings, user_id, request)
        uow.commit()


@pytest.fixture
def withdraw(services):
    """The payee pays part of a credit away (to bank)."""
    return lambda user_id, amount_minor: move(services, wallets.withdraw, user_id, amount_minor)


def test_reversing_every_row_takes_each_credit_back_to_the_funding_account_and_shows_what_reversed_it(
        services, queued_http, queue, engine):
    users = seed_users(services, 3)
    funded = account_balance(engine)
    credit_id = credited(services, queued_http, queue, [f"{users[0]},10.00,a", f"{users[1]},20.00,b",
                                                        f"{users[2]},5.00,c", "not-a-uuid,1.00,d"])
    assert account_balance(engine) == funded - 3_500

    accepted = reverse(queued_http, credit_id)
    assert accepted.status_code == 202, accepted.json
    body = accepted.json
    assert (body["kind"], body["reverses"], body["status"], body["total_records"]) == (
        "reversal", credit_id, "UPLOADED", 3)
    apply_all(services, services.settings, queue.take())

    done = queued_http.get(f"{URL}/{body['activity_id']}").json
    assert (done["status"], done["final"], done["successful_records"], done["kind"]) == (
        "COMPLETED", True, 3, "reversal")
    assert balances(engine) == {user: 0 for user in users}
    assert account_balance(engine) == funded
    reversal_rows = rows(queued_http, body["activity_id"])
    credit_rows = rows(queued_http, credit_id)
    assert {n: credit_rows[n]["reversed_by"] for n in (2, 3, 4)} == {
        n: {"activity_id": body["activity_id"], "row_number": n, "status": "SUCCESS"} for n in (2, 3, 4)}
    assert credit_rows[5]["reversed_by"] is None and credit_rows[2]["status"] == "SUCCESS"
    assert [(r["user_id"], r["amount"], r["reference"]) for r in reversal_rows.values()] == [
        (users[0], "10.00", "a"), (users[1], "20.00", "b"), (users[2], "5.00", "c")]
    assert query(engine, "SELECT count(*), sum(amount) FROM journal_entries WHERE kind = 'bulk_reversal'") == [
        (1, 3_500)]
    history = queued_http.get(f"{URL}/{body['activity_id']}/history").json["data"]
    assert (history[0]["to_status"], history[0]["reason"], history[-1]["to_status"], history[-1]["final"]) == (
        "UPLOADED", "wrong file", "COMPLETED", True)
    assert query(engine, "SELECT actor_type, action, object_id, detail->>'reversal_activity_id' FROM audit_events"
                        " WHERE action LIKE '%.reverse'") == [
        ("api_key", "bulk_credit.reverse", credit_id, body["activity_id"])]
    assert reconcile_full(services)["status"] == "clean"
    assert_ledger_invariants(engine)


def test_a_second_reversal_of_the_same_rows_reverses_nothing(services, queued_http, queue, engine):
    users = seed_users(services, 2)
    credit_id = credited(services, queued_http, queue, [f"{users[0]},10.00,a", f"{users[1]},20.00,b"])
    first = reverse(queued_http, credit_id, references=["a"]).json
    apply_all(services, services.settings, queue.take())
    funded = account_balance(engine)

    again = reverse(queued_http, credit_id, key="reverse-2", row_numbers=[2])

    assert again.status_code == 202
    assert (again.json["status"], again.json["final"], again.json["invalid_records"], queue.take()) == (
        "FAILED", True, 1, [])
    [row] = rows(queued_http, again.json["activity_id"]).values()
    assert (row["status"], row["error_code"]) == ("INVALID", "not_reversible")
    assert f"already reversed by activity {first['activity_id']} row 2" in row["error_message"]
    everything = reverse(queued_http, credit_id, key="reverse-3").json  # b was never reversed: only it goes
    assert (everything["valid_records"], everything["invalid_records"]) == (1, 1)
    apply_all(services, services.settings, queue.take())
    assert balances(engine) == {users[0]: 0, users[1]: 0}
    assert account_balance(engine) == funded + 2_000
    assert reconcile_full(services)["status"] == "clean"


def test_a_row_never_credited_is_not_reversible_and_a_payee_who_spent_the_money_fails_until_retried(
        services, queued_http, queue, engine, withdraw):
    users = seed_users(services, 3)
    post_file(queued_http, f"uuid,amount\n{users[0]},10.00\n{users[1]},10.00\n{users[2]},1.00\n".encode())
    credit_id = query(engine, "SELECT id::text FROM bulk_activities")[0][0]
    with engine.begin() as connection:  # row 4 is still to be paid when the reversal is asked for
        connection.execute(text("UPDATE bulk_rows SET chunk_number = 1 WHERE row_number = 4"))
    apply_all(services, services.settings, queue.take())
    withdraw(users[1], 400)  # the payee of row 3 spent 4.00 of the 10.00
    funded = account_balance(engine)

    body = reverse(queued_http, credit_id, row_numbers=[2, 3, 4]).json
    apply_all(services, services.settings, queue.take())

    done = queued_http.get(f"{URL}/{body['activity_id']}").json
    assert (done["status"], done["final"], done["successful_records"], done["failed_records"],
            done["invalid_records"]) == ("PARTIALLY_COMPLETED", True, 1, 1, 1)
    outcome = rows(queued_http, body["activity_id"])
    assert (outcome[3]["status"], outcome[3]["error_code"]) == ("FAILED", "insufficient_funds")
    assert (outcome[4]["status"], outcome[4]["error_code"]) == ("INVALID", "not_reversible")
    assert balances(engine) == {users[0]: 0, users[1]: 600}  # row 4's payee has no wallet: never paid
    assert account_balance(engine) == funded + 1_000
    assert reconcile_full(services)["status"] == "clean"

    move(services, wallets.deposit, users[1], 400)  # the payee gets money again; the operator retries
    retried = queued_http.post(f"{URL}/retry", json={"activity_id": body["activity_id"]})
    assert (retried.status_code, retried.json["retried_records"]) == (202, 1)
    apply_all(services, services.settings, queue.take())
    assert queued_http.get(f"{URL}/{body['activity_id']}").json["status"] == "COMPLETED"
    assert balances(engine) == {users[0]: 0, users[1]: 0}
    assert account_balance(engine) == funded + 2_000
    assert reconcile_full(services)["status"] == "clean"
    assert_ledger_invariants(engine)


def test_a_cancelled_reversal_gives_its_rows_back_to_a_later_reversal(services, queued_http, queue, engine, withdraw):
    [user] = seed_users(services, 1)
    credit_id = credited(services, queued_http, queue, [f"{user},10.00,a"])
    withdraw(user, 100)
    first = reverse(queued_http, credit_id).json
    apply_all(services, services.settings, queue.take())
    assert rows(queued_http, credit_id)[2]["reversed_by"]["status"] == "FAILED"

    cancelled = queued_http.post(f"{URL}/{first['activity_id']}/cancel", json={"reason": "payee kept it"})

    assert (cancelled.status_code, cancelled.json["status"]) == (202, "CANCELLED")
    assert rows(queued_http, credit_id)[2]["reversed_by"] is None
    later = reverse(queued_http, credit_id, key="reverse-2").json
    assert later["valid_records"] == 1
    assert reconcile_full(services)["status"] == "clean"


def test_the_database_refuses_a_second_claim_on_a_credit_row(services, queued_http, queue, engine):
    [user] = seed_users(services, 1)
    credit_id = credited(services, queued_http, queue, [f"{user},10.00,a"])
    reversal_id = reverse(queued_http, credit_id).json["activity_id"]

    with pytest.raises(IntegrityError, match="bulk_reversal_claims_pkey"):
        with engine.begin() as connection:  # what a reversal racing past the activity's lock would write
            connection.execute(text(
                "INSERT INTO bulk_reversal_claims (credit_row_id, reversal_row_id, reversal_activity_id)"
                " SELECT reverses_row_id, -1, activity_id FROM bulk_rows WHERE activity_id = :a"), {"a": reversal_id})


def test_the_reverse_endpoint_answers_404_409_422_and_403_by_scope_and_replays_its_key(
        app, services, queued_http, queue, engine):
    users = seed_users(services, 2)
    credit_id = credited(services, queued_http, queue, [f"{users[0]},10.00,a", f"{users[1]},20.00,b"])
    unknown = "00000000-0000-4000-8000-000000000000"

    assert reverse(queued_http, unknown, key="unknown").status_code == 404
    assert reverse(queued_http, "nope", key="malformed").status_code == 422
    missing = reverse(queued_http, credit_id, key="missing", row_numbers=[2, 99], references=["b", "zz"])
    assert (missing.status_code, missing.json["code"]) == (422, "validation_failed")
    assert {error["field"] for error in missing.json["errors"]} == {"row_numbers", "references"}
    assert "99" in missing.json["errors"][0]["message"]
    for bad in ({"reason": ""}, {"reason": "x", "row_numbers": []}, {"reason": "x", "row_numbers": [1]},
                {"reason": "x", "row_numbers": ["2"]}, {"reason": "x", "references": [3]}):
        response = queued_http.post(f"{URL}/{credit_id}/reverse", json=bad, headers={"Idempotency-Key": "bad"})
        assert response.status_code == 422, bad
    no_key = queued_http.post(f"{URL}/{credit_id}/reverse", json={"reason": "x"})
    assert (no_key.status_code, no_key.json["code"]) == (400, "idempotency_key_missing")
    for scope in ("approver", f"user:{users[0]}"):
        other = app.test_client()
        other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_api_key(services.uow(), scope)}"
        assert reverse(other, credit_id).status_code == 403

    operator = app.test_client()
    operator.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_api_key(services.uow(), 'operator')}"
    first = reverse(operator, credit_id, key="k")
    replayed = reverse(operator, credit_id, key="k")
    assert (first.status_code, replayed.status_code, replayed.headers.get("Idempotency-Replayed")) == (
        202, 202, "true")
    assert replayed.json == first.json and len(queue.take()) == 1
    reused = reverse(operator, credit_id, key="k", references=["a"])
    assert (reused.status_code, reused.json["code"]) == (422, "idempotency_key_reused")
    assert query(engine, "SELECT count(*) FROM bulk_activities WHERE kind = 'reversal'") == [(1,)]
    of_reversal = reverse(operator, first.json["activity_id"], key="k2")
    assert (of_reversal.status_code, of_reversal.json["code"]) == (409, "invalid_state")


def test_the_command_line_reverses_named_rows_and_reconciliation_catches_a_reversal_row_changed_by_hand(
        app, services, queued_http, queue, engine):
    users = seed_users(services, 2)
    credit_id = credited(services, queued_http, queue, [f"{users[0]},10.00,a", f"{users[1]},20.00,b"])

    done = app.test_cli_runner().invoke(args=["bulk-credit", "reverse", credit_id, "--reason", "duplicate bonus",
                                              "--reference", "b"])

    assert done.exit_code == 0, done.output
    reversal_id = json.loads(done.stdout)["activity_id"]
    chunk_ids = [chunk_id for (chunk_id,) in query(engine, "SELECT id FROM bulk_chunks WHERE activity_id = :a",
                                                   a=reversal_id)]
    apply_all(services, services.settings, chunk_ids)
    assert balances(engine) == {users[0]: 1_000, users[1]: 0}
    assert query(engine, "SELECT actor_type, action FROM audit_events"
                        " WHERE action LIKE '%.reverse'") == [("command_line", "bulk_credit.reverse")]
    assert reconcile_full(services)["status"] == "clean"
    with engine.begin() as connection:
        connection.execute(text("UPDATE bulk_rows SET amount_minor = 1 WHERE activity_id = :a"), {"a": reversal_id})
    run = reconcile_full(services)
    assert "reversal_row_differs_from_credit_row" in {mismatch["kind"] for mismatch in run["mismatches"]}


def test_worked_example_a_reversal_after_a_partial_spend_posts_the_ledger_an_accountant_expects(
        services, queued_http, queue, engine, withdraw):
    ana, ben = seed_users(services, 2)
    credit_id = credited(services, queued_http, queue, [f"{ana},10.00,a", f"{ben},20.00,b"])
    withdraw(ben, 500)  # Ben spends 5.00 of his 20.00
    reversal_id = reverse(queued_http, credit_id).json["activity_id"]
    apply_all(services, services.settings, queue.take())
    move(services, wallets.deposit, ben, 500)  # Ben is paid 5.00 again; the operator retries his row
    queued_http.post(f"{URL}/retry", json={"activity_id": reversal_id})
    apply_all(services, services.settings, queue.take())

    names = {ana: "ana", ben: "ben"}
    ledger = query(engine, """
        SELECT j.kind, array_agg(coalesce(w.user_id::text, w.system_name) || ' ' || p.amount) FROM postings p
          JOIN journal_entries j ON j.id = p.journal_entry_id JOIN wallets w ON w.id = p.wallet_id
         WHERE j.kind <> 'funding_top_up' AND p.currency = 'SGD'
         GROUP BY j.id, j.kind ORDER BY min(p.id)""")
    entries = [(kind, {(names.get(owner, owner), int(amount)) for owner, amount in map(str.split, postings)})
               for kind, postings in ledger]
    assert entries == [
        ("reservation", {("funding", -3_000), ("reservation", 3_000)}),
        ("bulk_credit", {("reservation", -3_000), ("ana", 1_000), ("ben", 2_000)}),
        ("withdrawal", {("ben", -500), ("bank", 500)}),
        ("bulk_reversal", {("ana", -1_000), ("funding", 1_000)}),  # Ben's row: FAILED insufficient_funds
        ("deposit", {("bank", -500), ("ben", 500)}),
        ("bulk_reversal", {("ben", -2_000), ("funding", 2_000)}),  # the retry
    ]
    assert balances(engine) == {ana: 0, ben: 0}
    assert reconcile_full(services)["status"] == "clean"


def test_reversals_of_one_credit_raced_from_many_requests_claim_each_row_once(
        app, services, queued_http, queue, engine, admin_token):
    users = seed_users(services, 50)
    credit_id = credited(services, queued_http, queue, [f"{user},1.00,r{n}" for n, user in enumerate(users)])
    answers: list[dict] = []

    def race(n: int) -> None:
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"
        answers.append(reverse(client, credit_id, key=f"race-{n}").json)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    apply_all(services, services.settings, queue.take())

    assert sorted(answer["valid_records"] for answer in answers) == [0, 0, 0, 50]
    assert query(engine, "SELECT count(*), count(DISTINCT credit_row_id) FROM bulk_reversal_claims") == [(50, 50)]
    assert balances(engine) == {user: 0 for user in users}
    assert reconcile_full(services)["status"] == "clean"
