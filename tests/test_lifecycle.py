"""Frozen wallets and closed users over HTTP against the real PostgreSQL: no money in or out,
history kept, a close raced against deposits never leaves money behind, and the database's
own checks behind the Python ones."""
from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from pipeline import lifecycle
from pipeline.audit import COMMAND_LINE
from pipeline.errors import BalanceNotZero, Rejected
from pipeline.money import MINOR_UNITS, Currency
from pipeline.retrying import committed
from pipeline.users import create_user
from pipeline.wallets import MoneyRequest, deposit
from pipeline.wallets import withdraw as withdraw_money
from tests.conftest import assert_ledger_invariants
from tests.test_holds import admin, audit_events, balance, funded, hold, token_for  # noqa: F401 (fixtures)
from tests.test_http_contract import Api, assert_problem

SGD = Currency("SGD", MINOR_UNITS["SGD"])


def freeze(api: Api, user_id: str, code: str = "SGD", action: str = "freeze", reason="card reported stolen"):
    return api.post(f"/api/v1/users/{user_id}/wallets/{code}/{action}", {"reason": reason}, key=None)


def withdraw(api: Api, user_id: str, amount: str, currency: str = "SGD"):
    return api.post("/api/v1/wallet/withdraw", {"user_id": user_id, "amount": amount, "currency": currency})


def test_a_frozen_wallet_takes_no_money_in_or_out_until_it_is_unfrozen(engine, admin):
    ana, bo = funded(admin), funded(admin)
    hold_id = hold(admin, ana, "10.00").get_json()["id"]

    response = freeze(admin, ana)

    assert response.status_code == 200, response.data
    wallet = response.get_json()
    assert (wallet["currency"], wallet["status"], wallet["balance"], wallet["held"], wallet["status_reason"]) == \
        ("SGD", "frozen", "100.00", "10.00", "card reported stolen")
    assert_problem(admin.deposit(ana, "1.00"), 422, "wallet_frozen")
    assert_problem(withdraw(admin, ana, "1.00"), 422, "wallet_frozen")
    assert_problem(admin.transfer(ana, bo, "1.00"), 422, "wallet_frozen")
    assert_problem(admin.transfer(bo, ana, "1.00"), 422, "wallet_frozen")
    assert_problem(hold(admin, ana, "1.00"), 422, "wallet_frozen")
    assert_problem(admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", {}), 422, "wallet_frozen")
    assert admin.get(f"/api/v1/users/{ana}/wallets").get_json()["data"][0]["status"] == "frozen"
    assert admin.deposit(ana, "1", "JPY").status_code == 201  # only that currency's wallet is frozen
    assert_problem(freeze(admin, ana), 409, "invalid_state")

    response = freeze(admin, ana, action="unfreeze", reason="card found")

    assert (response.status_code, response.get_json()["status"]) == (200, "active")
    assert_problem(freeze(admin, ana, action="unfreeze"), 409, "invalid_state")
    assert admin.deposit(ana, "1.00").status_code == 201
    assert admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", {"to_user_id": bo}).status_code == 201
    assert balance(admin, ana) == {"balance": "91.00", "held": "0.00", "available": "91.00"}
    with engine.connect() as connection:
        events = connection.execute(text("SELECT actor_type, action, detail->>'reason' FROM audit_events"
                                         " WHERE object_type = 'wallet' ORDER BY id")).all()
    assert events == [("api_key", "wallet.freeze", "card reported stolen"),
                      ("api_key", "wallet.unfreeze", "card found")]
    assert_ledger_invariants(engine)


def test_a_frozen_wallets_hold_may_still_be_voided(admin):
    ana = funded(admin)
    hold_id = hold(admin, ana, "10.00").get_json()["id"]
    freeze(admin, ana)

    assert admin.post(f"/api/v1/wallet/holds/{hold_id}/void", None, key=None).status_code == 200
    assert balance(admin, ana) == {"balance": "100.00", "held": "0.00", "available": "100.00"}


def test_freezing_refuses_what_cannot_be_done_with_a_stable_code(client, admin, token_for):
    ana, bo = funded(admin), admin.user()["id"]
    operator, own = Api(client, token_for("operator")), Api(client, token_for(f"user:{ana}"))

    assert_problem(freeze(admin, ana, reason=""), 422, "validation_failed", {"reason"})
    assert_problem(freeze(admin, ana, reason=5), 422, "validation_failed", {"reason"})
    assert_problem(freeze(admin, ana, reason="x" * 501), 422, "validation_failed", {"reason"})
    assert_problem(freeze(admin, ana, code="EUR"), 422, "validation_failed", {"currency"})
    assert_problem(freeze(admin, ana, code="sgd"), 422, "validation_failed", {"currency"})
    assert_problem(freeze(admin, "nope"), 422, "validation_failed", {"user_id"})
    assert_problem(freeze(admin, str(uuid.uuid4())), 404, "not_found")
    assert_problem(freeze(admin, bo), 404, "not_found")  # no SGD wallet yet
    assert admin.post(f"/api/v1/users/{ana}/wallets/SGD/freeze", None, key=None).status_code == 400
    for api in (operator, own):
        assert_problem(freeze(api, ana), 403, "forbidden")
        assert_problem(api.client.delete(f"/api/v1/users/{ana}", headers=api.headers), 403, "forbidden")
    assert_problem(freeze(Api(client, None), ana), 401, "unauthenticated")
    assert admin.get(f"/api/v1/users/{ana}/wallets").get_json()["data"][0]["status"] == "active"


def close(api: Api, user_id: str):
    return api.client.delete(f"/api/v1/users/{user_id}", headers=api.headers)


def test_a_user_with_money_left_cannot_be_closed_and_one_without_is_closed_with_the_history_kept(engine, admin):
    ana, bo = funded(admin), funded(admin)
    hold_id = hold(admin, ana, "30.00").get_json()["id"]
    assert admin.deposit(ana, "5", "JPY").status_code == 201

    assert_problem(close(admin, ana), 409, "balance_not_zero")
    assert withdraw(admin, ana, "70.00").status_code == 201
    assert withdraw(admin, ana, "5", "JPY").status_code == 201
    assert_problem(close(admin, ana), 409, "balance_not_zero")  # 30.00 still held
    assert admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", {}).status_code == 201

    response = close(admin, ana)

    assert response.status_code == 204 and response.data == b""
    user = admin.get(f"/api/v1/users/{ana}").get_json()
    assert user["closed_at"] is not None
    assert len(admin.get(f"/api/v1/users/{ana}/transactions").get_json()["data"]) == 5
    assert {wallet["status"] for wallet in admin.get(f"/api/v1/users/{ana}/wallets").get_json()["data"]} == \
        {"closed"}
    assert_problem(admin.deposit(ana, "1.00"), 422, "user_closed")
    assert_problem(admin.deposit(ana, "1.00", "USD"), 422, "user_closed")  # no wallet in USD: none is created
    assert_problem(admin.transfer(bo, ana, "1.00"), 422, "user_closed")
    assert_problem(admin.transfer(bo, ana, "1.00", "USD"), 422, "user_closed")
    assert_problem(hold(admin, ana, "1.00"), 422, "user_closed")
    assert_problem(freeze(admin, ana), 422, "user_closed")
    assert_problem(close(admin, ana), 409, "invalid_state")
    assert_problem(close(admin, str(uuid.uuid4())), 404, "not_found")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM wallets WHERE user_id = :u"), {"u": ana}).scalar() == 2
    assert [(event[0], event[2]) for event in audit_events(engine, ana)] == [("api_key", "user.close")]
    assert_ledger_invariants(engine)


def test_a_deposit_racing_a_close_never_leaves_money_in_a_closed_users_wallet(services, clean_database):
    """Half the users have an empty SGD wallet already; for the other half the deposit creates it."""
    users = [create_user(services.uow(), "Racer", f"{uuid.uuid4()}@example.com").id for _ in range(24)]
    for user_id in users[::2]:  # a deposit and a withdrawal: an empty wallet with a history
        for move in (deposit, withdraw_money):
            committed(services.uow, 3, lambda uow: move(uow, services.settings, user_id, MoneyRequest(SGD, 1, None)))
    outcomes: dict[str, list[str]] = {user_id: [] for user_id in users}

    def act(user_id: str, action, barrier: threading.Barrier) -> None:
        barrier.wait(timeout=30)
        try:
            committed(services.uow, 5, action)
            outcomes[user_id].append("won")
        except Rejected as refusal:
            outcomes[user_id].append(refusal.code)

    threads = []
    for user_id in users:
        barrier = threading.Barrier(2)
        threads += [
            threading.Thread(target=act, args=(user_id, lambda uow, u=user_id: deposit(
                uow, services.settings, u, MoneyRequest(SGD, 500, None)), barrier)),
            threading.Thread(target=act, args=(user_id, lambda uow, u=user_id: lifecycle.close_user(
                uow, u, COMMAND_LINE), barrier)),
        ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    with services.engine.connect() as connection:
        left = connection.execute(text(
            "SELECT u.id::text FROM users u JOIN wallets w ON w.user_id = u.id"
            " WHERE u.closed_at IS NOT NULL AND (w.balance <> 0 OR w.status <> 'closed')")).all()
        closed = set(connection.execute(text("SELECT id::text FROM users WHERE closed_at IS NOT NULL")).scalars())
    assert left == []
    for user_id, seen in outcomes.items():
        # Either the deposit went first (and the close found money), or the close did (and the deposit was refused).
        assert sorted(seen) in (sorted(["won", BalanceNotZero.code]), sorted(["won", "user_closed"])), seen
        assert (user_id in closed) == ("user_closed" in seen)
    assert_ledger_invariants(services.engine)


# --- the database's own checks, reached with raw SQL past the Python ones ------------------

def test_the_database_refuses_a_balance_change_of_a_frozen_or_closed_wallet_and_a_closed_users_new_wallet(
        engine, admin):
    ana, bo = funded(admin), admin.user()["id"]
    freeze(admin, ana)
    close(admin, bo)

    with pytest.raises(DBAPIError, match="is frozen"):
        with engine.begin() as connection:
            connection.execute(text("UPDATE wallets SET balance = balance + 1 WHERE user_id = :u"), {"u": ana})
    with pytest.raises(DBAPIError, match="closed user"):
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO wallets (user_id, currency) VALUES (:u, 'SGD')"), {"u": bo})
    assert balance(admin, ana)["balance"] == "100.00"
