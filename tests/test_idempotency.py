"""Idempotency-Key on money movements, over the HTTP app and real PostgreSQL.

A key moves money at most once: concurrent and later requests with the same key and body
get the first answer back byte for byte (with `Idempotency-Replayed: true`), a different
body is refused, a refusal is replayed like a success, and a request refused before it
reached the ledger (no key, malformed body) does not use the key up.
"""
from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from api import create_app
from pipeline.config import Settings
from pipeline.users import create_api_key
from tests import conftest
from tests.conftest import assert_ledger_invariants

#: Requests sent at once with one key.
CONCURRENT_REQUESTS = 20


@pytest.fixture
def admin(client, admin_token):
    return {"Authorization": f"Bearer {admin_token}"}


def new_user(client, admin, deposit: str | None = None) -> str:
    response = client.post("/api/v1/users", json={"name": "Ana", "email": f"{uuid.uuid4()}@example.com"},
                           headers=admin)
    assert response.status_code == 201
    user_id = response.get_json()["id"]
    if deposit:
        response = client.post("/api/v1/wallet/deposit", json={"user_id": user_id, "amount": deposit, "currency": "SGD"},
                               headers={**admin, "Idempotency-Key": str(uuid.uuid4())})
        assert response.status_code == 201
    return user_id


def balance(client, admin, user_id: str) -> str:
    return client.get(f"/api/v1/users/{user_id}/balance?currency=SGD", headers=admin).get_json()["balance"]


def count_entries(engine, kind: str | None = None) -> int:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT count(*) FROM journal_entries WHERE CAST(:kind AS text) IS NULL OR kind = :kind"),
            {"kind": kind}).scalar_one()


def replayed(response) -> bool:
    return response.headers.get("Idempotency-Replayed") == "true"


def test_twenty_concurrent_requests_with_one_key_move_the_money_once_and_get_one_answer(app, client, admin, engine):
    sender, receiver = new_user(client, admin, deposit="100.00"), new_user(client, admin)
    body = {"from_user_id": sender, "to_user_id": receiver, "amount": "10.00", "currency": "SGD", "reference": "r1"}
    headers = {**admin, "Idempotency-Key": "pay-once"}
    clients = [app.test_client() for _ in range(CONCURRENT_REQUESTS)]
    responses = [None] * CONCURRENT_REQUESTS
    start = threading.Barrier(CONCURRENT_REQUESTS, timeout=30)

    def send(index: int) -> None:
        start.wait()
        responses[index] = clients[index].post("/api/v1/wallet/transfer", json=body, headers=headers)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(CONCURRENT_REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert all(response is not None for response in responses)
    answered = [r for r in responses if r.status_code == 201]
    in_progress = [r for r in responses if r.status_code == 409]
    assert len(answered) + len(in_progress) == CONCURRENT_REQUESTS, [r.status_code for r in responses]
    assert all(r.get_json()["code"] == "idempotency_key_in_progress" for r in in_progress)
    assert len({r.data for r in answered}) == 1, "every answer must be the same bytes"
    assert [replayed(r) for r in answered].count(False) == 1, "exactly one request did the work"
    assert count_entries(engine, "transfer") == 1
    assert balance(client, admin, sender) == "90.00"
    assert balance(client, admin, receiver) == "10.00"
    assert_ledger_invariants(engine)


@pytest.mark.parametrize("path, extra", [
    ("/api/v1/wallet/deposit", {}),
    ("/api/v1/wallet/withdraw", {}),
    ("/api/v1/wallet/transfer", {"to": True}),
])
def test_a_replay_returns_the_original_status_and_body_and_moves_nothing(client, admin, engine, path, extra):
    user, other = new_user(client, admin, deposit="50.00"), new_user(client, admin)
    body = {"amount": "5.00", "currency": "SGD", "reference": "café ☕ 咖啡"}
    body |= {"from_user_id": user, "to_user_id": other} if extra else {"user_id": user}
    headers = {**admin, "Idempotency-Key": "k-1"}
    entries = count_entries(engine)

    first = client.post(path, json=body, headers=headers)
    second = client.post(path, json=dict(reversed(body.items())), headers=headers)  # key order is not the body

    assert first.status_code == second.status_code == 201
    assert not replayed(first) and replayed(second)
    assert second.data == first.data
    assert second.get_json()["reference"] == "café ☕ 咖啡"
    assert count_entries(engine) == entries + 1
    assert_ledger_invariants(engine)


def test_the_same_key_with_a_different_body_is_refused_and_moves_nothing(client, admin, engine):
    user = new_user(client, admin, deposit="50.00")
    headers = {**admin, "Idempotency-Key": "k-2"}
    first = client.post("/api/v1/wallet/withdraw", json={"user_id": user, "amount": "5.00", "currency": "SGD"},
                        headers=headers)
    assert first.status_code == 201

    changed = client.post("/api/v1/wallet/withdraw", json={"user_id": user, "amount": "6.00", "currency": "SGD"},
                          headers=headers)
    elsewhere = client.post("/api/v1/wallet/deposit", json={"user_id": user, "amount": "5.00", "currency": "SGD"},
                            headers=headers)

    for response in (changed, elsewhere):
        assert response.status_code == 422
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["code"] == "idempotency_key_reused"
    assert balance(client, admin, user) == "45.00"
    assert count_entries(engine, "withdrawal") == 1


def test_a_refused_request_replays_its_refusal_even_once_the_money_is_there(client, admin, engine):
    user = new_user(client, admin, deposit="5.00")
    body = {"user_id": user, "amount": "8.00", "currency": "SGD"}
    headers = {**admin, "Idempotency-Key": "k-3"}

    refused = client.post("/api/v1/wallet/withdraw", json=body, headers=headers)
    assert refused.status_code == 422 and refused.get_json()["code"] == "insufficient_funds"
    assert not replayed(refused)

    new_user_deposit = client.post("/api/v1/wallet/deposit", json={"user_id": user, "amount": "10.00", "currency": "SGD"},
                                   headers={**admin, "Idempotency-Key": "k-3-top-up"})
    assert new_user_deposit.status_code == 201
    replay = client.post("/api/v1/wallet/withdraw", json=body, headers=headers)

    assert replay.status_code == 422 and replayed(replay)
    assert replay.mimetype == "application/problem+json"
    assert replay.data == refused.data
    assert balance(client, admin, user) == "15.00"
    assert count_entries(engine, "withdrawal") == 0
    assert_ledger_invariants(engine)


def test_a_transfer_to_an_unknown_user_replays_its_404(client, admin, engine):
    sender = new_user(client, admin, deposit="5.00")
    body = {"from_user_id": sender, "to_user_id": str(uuid.uuid4()), "amount": "1.00", "currency": "SGD"}
    headers = {**admin, "Idempotency-Key": "k-4"}
    first = client.post("/api/v1/wallet/transfer", json=body, headers=headers)
    second = client.post("/api/v1/wallet/transfer", json=body, headers=headers)
    assert first.status_code == second.status_code == 404
    assert first.get_json()["code"] == "not_found"
    assert replayed(second) and second.data == first.data
    assert balance(client, admin, sender) == "5.00"


@pytest.mark.parametrize("headers", [{}, {"Idempotency-Key": ""}, {"Idempotency-Key": "   "}])
def test_a_money_movement_without_an_idempotency_key_is_refused_with_400(client, admin, engine, headers):
    user = new_user(client, admin)
    entries = count_entries(engine)
    for path, body in [
        ("/api/v1/wallet/deposit", {"user_id": user, "amount": "5.00", "currency": "SGD"}),
        ("/api/v1/wallet/withdraw", {"user_id": user, "amount": "5.00", "currency": "SGD"}),
        ("/api/v1/wallet/transfer", {"from_user_id": user, "to_user_id": str(uuid.uuid4()), "amount": "5.00",
                                     "currency": "SGD"}),
    ]:
        response = client.post(path, json=body, headers={**admin, **headers})
        assert response.status_code == 400, path
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["code"] == "idempotency_key_missing"
    assert count_entries(engine) == entries
    assert balance(client, admin, user) == "0.00"


@pytest.mark.parametrize("malformed, status", [
    ({"amount": "1e3"}, 422),
    ({"amount": 5}, 422),
    ({"currency": "XXX"}, 422),
    ({"user_id": "not-a-uuid"}, 422),
    (None, 400),  # not JSON at all
])
def test_a_malformed_request_does_not_use_up_its_key(client, admin, engine, malformed, status):
    user = new_user(client, admin)
    good = {"user_id": user, "amount": "5.00", "currency": "SGD"}
    headers = {**admin, "Idempotency-Key": "k-5"}
    if malformed is None:
        refused = client.post("/api/v1/wallet/deposit", data="{not json", content_type="application/json",
                              headers=headers)
    else:
        refused = client.post("/api/v1/wallet/deposit", json=good | malformed, headers=headers)
    assert refused.status_code == status
    assert not replayed(refused)

    accepted = client.post("/api/v1/wallet/deposit", json=good, headers=headers)

    assert accepted.status_code == 201 and not replayed(accepted)
    assert balance(client, admin, user) == "5.00"


def test_keys_belong_to_the_api_key_that_sent_them(client, admin, services, engine):
    user = new_user(client, admin)
    other_admin = {"Authorization": f"Bearer {create_api_key(services.uow(), 'admin')}"}
    body = {"user_id": user, "amount": "5.00", "currency": "SGD"}
    first = client.post("/api/v1/wallet/deposit", json=body, headers={**admin, "Idempotency-Key": "shared"})
    second = client.post("/api/v1/wallet/deposit", json=body, headers={**other_admin, "Idempotency-Key": "shared"})
    assert first.status_code == second.status_code == 201
    assert not replayed(second) and first.get_json()["id"] != second.get_json()["id"]
    assert balance(client, admin, user) == "10.00"


def test_a_request_arriving_while_the_first_with_its_key_still_runs_gets_409(services, client, admin, engine):
    user = new_user(client, admin)
    impatient = create_app(Settings.from_environ(conftest.test_environ(LOCK_TIMEOUT_MS="300")))
    body = {"user_id": user, "amount": "5.00", "currency": "SGD"}
    headers = {**admin, "Idempotency-Key": "k-6"}
    try:
        with engine.connect() as first:  # the first request, holding its key, not committed yet
            first.execute(text("INSERT INTO idempotency_keys (api_key_id, key, request_sha256, status_code, response)"
                               " SELECT id, 'k-6', 'in flight', 0, '{}' FROM api_keys"))
            busy = impatient.test_client().post("/api/v1/wallet/deposit", json=body, headers=headers)
            first.rollback()  # the first request failed and left nothing behind
        retried = impatient.test_client().post("/api/v1/wallet/deposit", json=body, headers=headers)
    finally:
        impatient.extensions["wallet"].engine.dispose()

    assert busy.status_code == 409
    assert busy.mimetype == "application/problem+json"
    assert busy.get_json()["code"] == "idempotency_key_in_progress"
    assert retried.status_code == 201 and not replayed(retried)
    assert balance(client, admin, user) == "5.00"
    assert count_entries(engine, "deposit") == 1


def test_the_journal_entry_carries_the_key_so_the_database_refuses_a_second_entry_with_it(client, admin, engine):
    user_id = new_user(client, admin)
    response = client.post("/api/v1/wallet/deposit", headers={**admin, "Idempotency-Key": "ledger-key-1"},
                           json={"user_id": user_id, "amount": "5.00", "currency": "SGD"})
    assert response.status_code == 201
    with engine.connect() as connection:
        key = connection.execute(text("SELECT idempotency_key FROM journal_entries WHERE id = :id"),
                                 {"id": response.json["id"]}).scalar_one()
    assert key.startswith("api:") and key.endswith(":ledger-key-1")

    with pytest.raises(IntegrityError):  # even if the stored answer were lost, the ledger says no
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO journal_entries (id, kind, idempotency_key, currency, amount)"
                                    " VALUES (:id, 'deposit', :key, 'SGD', 500)"), {"id": str(uuid.uuid4()), "key": key})
