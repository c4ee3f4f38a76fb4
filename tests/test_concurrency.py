"""Concurrent transfers from separate OS processes against real PostgreSQL (seed 004's scenarios).

Threads of one test process would share one connection pool and, through the GIL, take
turns in ways production never does; separate processes each with their own engine meet
only in PostgreSQL, where the row locks, the CHECK on balances and the retries on
deadlocks must keep every minor unit in place. The fee is TRANSFER_FEE_BPS=150 (1.5%).

The last tests inject a deadlock in-process, since lock ordering makes a real one rare:
it must be retried, and when it never clears, end in a 503 rather than a 500.
"""
from __future__ import annotations

import multiprocessing
import queue
from collections import Counter

import psycopg.errors
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from storage.ledger import SqlLedger
from tests import conftest
from tests.concurrent_transfers import WAIT_S, Deposit, Outcome, Transfer, run_client
from tests.conftest import assert_ledger_invariants

FEE_BPS = "150"


def run_processes(token: str, transfers_per_process: list[list[Transfer | Deposit]]) -> list[Outcome]:
    """Starts one spawned process per list of transfers, releases them together, and
    returns every outcome."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(transfers_per_process))
    results = context.Queue()
    environ = conftest.test_environ(TRANSFER_FEE_BPS=FEE_BPS)
    processes = [context.Process(target=run_client, args=(environ, token, transfers, barrier, results))
                 for transfers in transfers_per_process]
    for process in processes:
        process.start()
    outcomes, failures = [], []
    try:
        for _ in processes:
            result = results.get(timeout=2 * WAIT_S)
            (failures.append if isinstance(result, str) else outcomes.extend)(result)
    except queue.Empty:
        failures.append("a client process gave no answer in time")
    finally:
        for process in processes:
            process.join(WAIT_S)
            if process.is_alive():
                process.kill()
    assert failures == [], "\n".join(failures)
    assert [process.exitcode for process in processes] == [0] * len(processes)
    return outcomes


@pytest.fixture
def admin(client, admin_token):
    """Creates users and funds them through the API, before any concurrency starts."""

    class Admin:
        headers = {"Authorization": f"Bearer {admin_token}"}
        token = admin_token

        def user(self, deposit: str | None = None) -> str:
            response = client.post("/api/v1/users", json={"name": "Ana", "email": f"{len(created)}@example.com"},
                                   headers=self.headers)
            assert response.status_code == 201, response.get_json()
            user_id = response.get_json()["id"]
            created.append(user_id)
            if deposit:
                response = client.post("/api/v1/wallet/deposit",
                                       json={"user_id": user_id, "amount": deposit, "currency": "SGD"},
                                       headers={**self.headers, "Idempotency-Key": f"fund-{user_id}"})
                assert response.status_code == 201, response.get_json()
            return user_id

    created: list[str] = []
    return Admin()


def balance(engine, user_id: str, currency: str = "SGD") -> int:
    """A user's balance in minor units, read straight from PostgreSQL (0 with no wallet)."""
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT coalesce(sum(balance), 0) FROM wallets WHERE user_id = :id AND currency = :currency"),
            {"id": user_id, "currency": currency},
        ).scalar_one()


def system_balance(engine, name: str, currency: str = "SGD") -> int:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT coalesce(sum(balance), 0) FROM wallets WHERE system_name = :name AND currency = :currency"),
            {"name": name, "currency": currency},
        ).scalar_one()


def transfer_entries(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM journal_entries WHERE kind = 'transfer'")).scalar_one()


def assert_money_is_conserved(engine) -> None:
    """Every entry balances, every balance equals its postings and every balance_after
    their running sum, no user wallet is below zero, and per currency all wallets together
    (system wallets included) hold nothing."""
    assert_ledger_invariants(engine)
    with engine.connect() as connection:
        totals = connection.execute(
            text("SELECT currency, sum(balance) FROM wallets GROUP BY currency HAVING sum(balance) <> 0")).all()
        # Postings of one wallet are written while it is locked, so in id order their
        # amounts must add up to each balance_after: a lost update shows here first.
        misstated = connection.execute(text(
            "SELECT id, wallet_id, balance_after, running FROM ("
            " SELECT id, wallet_id, balance_after, sum(amount) OVER (PARTITION BY wallet_id ORDER BY id) AS running"
            " FROM postings) p WHERE balance_after <> running")).all()
        overdrawn = connection.execute(
            text("SELECT p.id, p.balance_after FROM postings p JOIN wallets w ON w.id = p.wallet_id"
                 " WHERE w.user_id IS NOT NULL AND p.balance_after < 0")).all()
    assert totals == [], f"money appeared or vanished: {totals}"
    assert misstated == [], f"postings whose balance_after is not the running sum: {misstated[:5]}"
    assert overdrawn == [], f"a user wallet went below zero along the way: {overdrawn}"


def statuses(outcomes: list[Outcome]) -> Counter:
    return Counter((outcome.status, (outcome.body or {}).get("code")) for outcome in outcomes)


def test_ten_concurrent_transfers_of_ten_from_one_thousand_leave_exactly_898_50(engine, admin):
    sender, receiver = admin.user(deposit="1000.00"), admin.user()

    outcomes = run_processes(admin.token, [[Transfer(sender, receiver, "10.00")] for _ in range(10)])

    assert statuses(outcomes) == {(201, None): 10}
    assert {(o.body["amount"], o.body["fee"]) for o in outcomes} == {("10.00", "0.15")}
    assert balance(engine, sender) == 89_850
    assert balance(engine, receiver) == 10_000
    assert system_balance(engine, "fees") == 150
    assert transfer_entries(engine) == 10
    assert_money_is_conserved(engine)


def test_eight_concurrent_transfers_of_one_hundred_from_315_let_exactly_three_through(engine, admin):
    sender, receiver = admin.user(deposit="315.00"), admin.user()

    outcomes = run_processes(admin.token, [[Transfer(sender, receiver, "100.00")] for _ in range(8)])

    # 3 x 101.50 = 304.50 fits in 315.00; a fourth would need 406.00.
    assert statuses(outcomes) == {(201, None): 3, (422, "insufficient_funds"): 5}
    assert balance(engine, sender) == 1_050
    assert balance(engine, receiver) == 30_000
    assert system_balance(engine, "fees") == 450
    assert transfer_entries(engine) == 3
    assert_money_is_conserved(engine)


def test_eight_senders_making_five_concurrent_transfers_each_into_one_receiver_lose_nothing(engine, admin):
    receiver = admin.user()
    senders = [admin.user(deposit="100.00") for _ in range(8)]

    outcomes = run_processes(admin.token, [[Transfer(sender, receiver, "12.34")] * 5 for sender in senders])

    # 12.34 at 1.5% is 0.1851, rounded half-up to 0.19: each transfer costs its sender 12.53.
    assert statuses(outcomes) == {(201, None): 40}
    assert balance(engine, receiver) == 40 * 1_234
    assert [balance(engine, sender) for sender in senders] == [10_000 - 5 * 1_253] * 8
    assert system_balance(engine, "fees") == 40 * 19
    assert transfer_entries(engine) == 40
    assert_money_is_conserved(engine)


def test_two_users_transferring_to_each_other_at_once_all_succeed_with_exact_balances(engine, admin):
    ana, ben = admin.user(deposit="500.00"), admin.user(deposit="500.00")
    ana_to_ben, ben_to_ana = Transfer(ana, ben, "10.00"), Transfer(ben, ana, "10.00")

    # Deadlock bait: each process sends both directions at once, interleaved.
    outcomes = run_processes(admin.token, [[ana_to_ben, ben_to_ana] * 3 for _ in range(4)])

    assert statuses(outcomes) == {(201, None): 24}
    # Each side sends 12 x 10.15 and receives 12 x 10.00.
    assert balance(engine, ana) == balance(engine, ben) == 50_000 - 12 * 15
    assert system_balance(engine, "fees") == 24 * 15
    assert transfer_entries(engine) == 24
    assert_money_is_conserved(engine)


def test_concurrent_first_credits_create_one_wallet_and_lose_nothing(engine, admin):
    ana, ben = admin.user(), admin.user(deposit="100.00")  # no SGD wallet, and no JPY wallet anywhere yet

    outcomes = run_processes(admin.token, [
        [Deposit(ana, "1.00"), Deposit(ana, "7", "JPY"), Transfer(ben, ana, "2.00")] for _ in range(6)])

    assert statuses(outcomes) == {(201, None): 18}
    with engine.connect() as connection:
        wallets = connection.execute(text("SELECT currency, count(*) FROM wallets WHERE user_id = :id"
                                          " GROUP BY currency ORDER BY currency"), {"id": ana}).all()
    assert wallets == [("JPY", 1), ("SGD", 1)]
    assert balance(engine, ana) == 6 * 300
    assert balance(engine, ana, "JPY") == 6 * 7
    assert balance(engine, ben) == 10_000 - 6 * 203
    assert_money_is_conserved(engine)


# --- the safety net: a deadlock that happens anyway is retried, never a 500 --------------

def wrapped_deadlock() -> Exception:
    return OperationalError("UPDATE wallets ...", {}, psycopg.errors.DeadlockDetected("deadlock detected"))


def raw_deadlock() -> Exception:
    return psycopg.errors.DeadlockDetected("deadlock detected")


#: A deadlock as SQLAlchemy reports it, and as psycopg does where storage/ bypasses SQLAlchemy.
DEADLOCKS = pytest.mark.parametrize("deadlock", [wrapped_deadlock, raw_deadlock])


@DEADLOCKS
def test_a_transfer_that_hits_a_deadlock_is_retried_and_happens_once(engine, admin, client, monkeypatch, deadlock):
    sender, receiver = admin.user(deposit="50.00"), admin.user()
    record, calls = SqlLedger.record, []

    def deadlocked_once(self, entry, postings):
        calls.append(entry.id)
        if len(calls) == 1:
            record(self, entry, postings)  # written, then lost with the rolled-back transaction
            raise deadlock()
        return record(self, entry, postings)

    monkeypatch.setattr(SqlLedger, "record", deadlocked_once)
    response = client.post("/api/v1/wallet/transfer", headers={**admin.headers, "Idempotency-Key": "once"},
                           json={"from_user_id": sender, "to_user_id": receiver, "amount": "10.00", "currency": "SGD"})

    assert response.status_code == 201, response.get_json()
    assert len(calls) == 2
    assert transfer_entries(engine) == 1
    assert (balance(engine, sender), balance(engine, receiver)) == (4_000, 1_000)
    assert_money_is_conserved(engine)


@DEADLOCKS
def test_a_deadlock_on_every_attempt_is_a_503_that_leaves_nothing_behind(engine, admin, client, monkeypatch, settings,
                                                                        deadlock):
    sender, receiver = admin.user(deposit="50.00"), admin.user()
    calls = []

    def always_deadlocked(self, entry, postings):
        calls.append(entry.id)
        raise deadlock()

    body = {"from_user_id": sender, "to_user_id": receiver, "amount": "10.00", "currency": "SGD"}
    headers = {**admin.headers, "Idempotency-Key": "busy"}
    with monkeypatch.context() as patched:
        patched.setattr(SqlLedger, "record", always_deadlocked)
        response = client.post("/api/v1/wallet/transfer", headers=headers, json=body)

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "temporarily_unavailable"
    assert len(calls) == settings.transaction_attempts_max
    assert transfer_entries(engine) == 0
    # The key was not used up: the client's retry moves the money.
    retried = client.post("/api/v1/wallet/transfer", headers=headers, json=body)
    assert retried.status_code == 201 and "Idempotency-Replayed" not in retried.headers
    assert (balance(engine, sender), balance(engine, receiver)) == (4_000, 1_000)
    assert_money_is_conserved(engine)
