"""Reversing one movement over HTTP on the real PostgreSQL: a deposit, withdrawal or transfer is
undone in full, fee included, in one journal entry, at most once (and the database says so too)."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from api import create_app
from pipeline.config import Settings
from pipeline.users import create_api_key
from tests import conftest
from tests.conftest import assert_ledger_invariants
from tests.test_bulk_pipeline import apply_all, balances, post_file, query, seed_users
from tests.test_funding import reconcile_full

MOVE = "/api/v1/wallet"


def post(client, path: str, body: dict, key: str):
    return client.post(path, json=body, headers={"Idempotency-Key": key})


def reverse(client, entry_id: str, key: str = "undo-1", reason: str = "sent by mistake"):
    return post(client, f"/api/v1/transactions/{entry_id}/reverse", {"reason": reason}, key)


def user(client) -> str:
    count = query(client.application.extensions["wallet"].engine, "SELECT count(*) FROM users")[0][0]
    created = client.post("/api/v1/users", json={"name": "Ana", "email": f"u{count}@example.test"})
    assert created.status_code == 201
    return created.json["id"]


def deposit(client, user_id: str, amount: str, key: str) -> str:
    response = post(client, f"{MOVE}/deposit", {"user_id": user_id, "amount": amount, "currency": "SGD"}, key)
    assert response.status_code == 201
    return response.json["id"]


def system_totals(engine) -> dict[str, int]:
    return dict(query(engine, "SELECT system_name, sum(balance) FROM wallets WHERE system_name IS NOT NULL"
                              " GROUP BY system_name"))


@pytest.fixture
def fee_http(services, clean_database, admin_token):
    """An admin client of an app charging TRANSFER_FEE_BPS=150 (1.5%) on transfers."""
    app = create_app(Settings.from_environ(conftest.test_environ(TRANSFER_FEE_BPS="150")))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"
    yield client
    app.extensions["wallet"].engine.dispose()


def test_a_reversed_transfer_gives_the_sender_back_amount_and_fee_in_one_entry(fee_http, engine):
    ana, ben = user(fee_http), user(fee_http)
    deposit(fee_http, ana, "100.00", "d-1")
    sent = post(fee_http, f"{MOVE}/transfer", {"from_user_id": ana, "to_user_id": ben, "amount": "10.00",
                                               "currency": "SGD"}, "t-1").json
    assert balances(engine) == {ana: 8_985, ben: 1_000} and system_totals(engine)["fees"] == 15

    undone = reverse(fee_http, sent["id"])

    assert undone.status_code == 201, undone.json
    body = undone.json
    assert {k: body[k] for k in ("kind", "reverses", "reversed_kind", "from_user_id", "to_user_id", "amount",
                                 "fee", "currency")} == {
        "kind": "reversal", "reverses": sent["id"], "reversed_kind": "transfer", "from_user_id": ben,
        "to_user_id": ana, "amount": "10.00", "fee": "0.15", "currency": "SGD"}
    assert balances(engine) == {ana: 10_000, ben: 0} and system_totals(engine)["fees"] == 0
    read = fee_http.get(f"/api/v1/transactions/{body['id']}").json
    assert sorted((p["user_id"] or p["system_wallet"], p["amount"]) for p in read["postings"]) == sorted(
        [(ana, "10.15"), (ben, "-10.00"), ("fees", "-0.15")])
    assert (read["reverses"], fee_http.get(f"/api/v1/transactions/{sent['id']}").json["reversed_by"]) == (
        sent["id"], body["id"])
    assert query(engine, "SELECT count(*) FROM journal_entries WHERE kind = 'reversal'") == [(1,)]
    assert query(engine, "SELECT actor_type, action, object_id, detail->>'reason' FROM audit_events"
                        " WHERE action LIKE '%.reverse'") == [
        ("api_key", "transaction.reverse", sent["id"], "sent by mistake")]
    assert_ledger_invariants(engine)


def test_a_deposit_and_a_withdrawal_are_undone_against_the_bank(http, engine, services):
    ana = user(http)
    paid_in = deposit(http, ana, "50.00", "d-1")
    paid_out = post(http, f"{MOVE}/withdraw", {"user_id": ana, "amount": "20.00", "currency": "SGD"}, "w-1").json

    assert reverse(http, paid_out["id"], "undo-w").status_code == 201
    assert balances(engine) == {ana: 5_000}
    assert reverse(http, paid_in, "undo-d").status_code == 201
    assert balances(engine) == {ana: 0} and system_totals(engine)["bank"] == 0
    assert reconcile_full(services)["status"] == "clean"


def test_a_movement_is_reversed_once_and_a_spent_deposit_not_at_all(http, engine):
    ana = user(http)
    paid_in = deposit(http, ana, "50.00", "d-1")
    post(http, f"{MOVE}/withdraw", {"user_id": ana, "amount": "0.01", "currency": "SGD"}, "w-1")

    short = reverse(http, paid_in, "undo-1")
    assert (short.status_code, short.json["code"]) == (422, "insufficient_funds")
    assert balances(engine) == {ana: 4_999}
    deposit(http, ana, "0.01", "d-2")
    assert reverse(http, paid_in, "undo-2").status_code == 201
    again = reverse(http, paid_in, "undo-3")
    assert (again.status_code, again.json["code"]) == (409, "already_reversed")
    replayed = reverse(http, paid_in, "undo-2")
    assert (replayed.status_code, replayed.headers.get("Idempotency-Replayed")) == (201, "true")
    assert balances(engine) == {ana: 0} and query(engine, "SELECT count(*) FROM journal_entries"
                                                          " WHERE kind = 'reversal'") == [(1,)]


def test_reversals_raced_from_many_requests_undo_the_movement_once(app, http, engine, admin_token):
    ana = user(http)
    paid_in = deposit(http, ana, "50.00", "d-1")
    answers: list[int] = []

    def race(n: int) -> None:
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"
        answers.append(reverse(client, paid_in, f"race-{n}").status_code)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers) == [201] + [409] * 5
    assert balances(engine) == {ana: 0}
    assert_ledger_invariants(engine)


def test_the_database_refuses_a_second_reversal_of_one_entry(http, engine):
    ana = user(http)
    paid_in = deposit(http, ana, "50.00", "d-1")
    reversal_id = reverse(http, paid_in).json["id"]

    with pytest.raises(IntegrityError, match="reverses_entry_id"):
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO journal_entries (id, kind, currency, amount, reverses_entry_id)"
                " SELECT gen_random_uuid(), 'reversal', currency, amount, reverses_entry_id FROM journal_entries"
                " WHERE id = :id"), {"id": reversal_id})


def test_the_reverse_endpoint_answers_404_422_and_403_by_scope(app, services, http, queued_http, queue):
    ana = user(http)
    paid_in = deposit(http, ana, "50.00", "d-1")

    assert reverse(http, "00000000-0000-4000-8000-000000000000", "unknown").status_code == 404
    assert reverse(http, "nope", "malformed").status_code == 422
    no_reason = post(http, f"/api/v1/transactions/{paid_in}/reverse", {}, "no-reason")
    assert (no_reason.status_code, no_reason.json["errors"][0]["field"]) == (422, "reason")
    no_key = http.post(f"/api/v1/transactions/{paid_in}/reverse", json={"reason": "x"})
    assert (no_key.status_code, no_key.json["code"]) == (400, "idempotency_key_missing")
    for scope in ("operator", "approver", f"user:{ana}"):
        other = app.test_client()
        other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_api_key(services.uow(), scope)}"
        assert reverse(other, paid_in, f"scope-{scope}").status_code == 403, scope
    seed_users(services, 0, funding_minor=10_000)  # funds the default account; a bulk chunk's entry next
    post_file(queued_http, f"uuid,amount\n{ana},1.00\n".encode())
    apply_all(services, services.settings, queue.take())
    [chunk_entry] = query(services.engine, "SELECT id::text FROM journal_entries WHERE kind = 'bulk_credit'")[0]
    refused = reverse(http, chunk_entry, "bulk")
    assert (refused.status_code, refused.json["code"]) == (422, "not_reversible")
