"""Every limit of the storage is checked before the database sees it: a movement that would
take a balance past PostgreSQL's bigint is a 422 `amount_out_of_range`, never a 500, and
nothing of it is written."""
from __future__ import annotations

import pytest

from pipeline.errors import AmountOutOfRange
from pipeline.ledger import Movement, Wallet, WalletKey, post
from pipeline.money import BALANCE_MINOR_MAX, BALANCE_MINOR_MIN
from tests.conftest import assert_ledger_invariants
from tests.test_bulk_failure_isolation import fill_wallet
from tests.test_bulk_pipeline import query
from tests.test_http_contract import Api, assert_problem

#: The issue's example: a wallet 7,758.07 SGD below the maximum.
HEADROOM_MINOR = 775_807


@pytest.fixture
def admin(client, admin_token) -> Api:
    return Api(client, admin_token)


def ledger_size(engine) -> tuple:
    return query(engine, "SELECT (SELECT count(*) FROM journal_entries), (SELECT count(*) FROM postings),"
                         " (SELECT count(*) FROM idempotency_keys)")[0]


def test_a_deposit_past_the_largest_balance_is_refused_with_422_and_moves_nothing(admin, engine):
    user = admin.user()["id"]
    fill_wallet(engine, user, "SGD", BALANCE_MINOR_MAX - HEADROOM_MINOR)
    before = ledger_size(engine)

    refused = admin.deposit(user, "7758.08")

    body = assert_problem(refused, 422, "amount_out_of_range", {"amount"})
    assert str(BALANCE_MINOR_MAX) in body["detail"]
    assert ledger_size(engine)[:2] == before[:2]
    assert admin.get(f"/api/v1/users/{user}/balance?currency=SGD").get_json()["balance"] == "92233720368540000.00"
    assert admin.deposit(user, "7758.07").status_code == 201  # exactly to the limit is fine
    assert_ledger_invariants(engine)


def test_a_transfer_past_the_largest_balance_is_refused_with_422_and_the_sender_keeps_the_money(admin, engine):
    sender, receiver = admin.user()["id"], admin.user()["id"]
    admin.deposit(sender, "10000.00")
    fill_wallet(engine, receiver, "SGD", BALANCE_MINOR_MAX - HEADROOM_MINOR)
    before = ledger_size(engine)

    assert_problem(admin.transfer(sender, receiver, "7758.08"), 422, "amount_out_of_range", {"amount"})

    assert ledger_size(engine)[:2] == before[:2]
    assert admin.get(f"/api/v1/users/{sender}/balance?currency=SGD").get_json()["balance"] == "10000.00"
    assert admin.transfer(sender, receiver, "7758.07").status_code == 201
    assert_ledger_invariants(engine)


def test_the_same_refusal_is_replayed_for_the_same_idempotency_key(admin, engine):
    user = admin.user()["id"]
    fill_wallet(engine, user, "SGD", BALANCE_MINOR_MAX)
    body = {"user_id": user, "amount": "0.01", "currency": "SGD"}

    first = admin.post("/api/v1/wallet/deposit", body, key="overflow-1")
    second = admin.post("/api/v1/wallet/deposit", body, key="overflow-1")

    assert (first.status_code, second.status_code) == (422, 422)
    assert first.get_json() == second.get_json()


@pytest.mark.parametrize("balance, amount", [(BALANCE_MINOR_MAX, 1), (BALANCE_MINOR_MIN, -1)])
def test_posting_refuses_any_wallet_leaving_the_bigint_range_a_system_shard_included(balance, amount):
    system = WalletKey("SGD", system_name="bank", shard=0)
    user = WalletKey("SGD", user_id="00000000-0000-0000-0000-000000000001")
    touched, other = (user, system) if amount > 0 else (system, user)
    wallets = {touched: Wallet(1, touched, balance), other: Wallet(2, other, 10**6)}

    with pytest.raises(AmountOutOfRange):
        post(wallets, [Movement(touched, amount), Movement(other, -amount)])
