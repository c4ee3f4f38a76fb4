"""Capture raced against void raced against expiry, from separate processes on the real
PostgreSQL: for every hold exactly one wins, and the ledger stays exact."""
from __future__ import annotations

import multiprocessing
import uuid
from datetime import timedelta

from sqlalchemy import text

from pipeline import holds, reconciliation
from pipeline.audit import COMMAND_LINE
from pipeline.money import MINOR_UNITS, Currency
from pipeline.retrying import committed
from pipeline.users import create_api_key, create_user, find_api_key
from pipeline.wallets import MoneyRequest, deposit
from tests.conftest import assert_ledger_invariants, test_environ
from tests.racing_holds import race

ROUNDS = 24
SGD = Currency("SGD", MINOR_UNITS["SGD"])


def new_user(services) -> str:
    return create_user(services.uow(), "Racer", f"{uuid.uuid4()}@example.com").id


def place(services, user_id: str, amount: int, expires_in_s: int) -> holds.Hold:
    request = holds.HoldRequest(user_id, MoneyRequest(SGD, amount, None), expires_in_s)
    return committed(services.uow, 3, lambda uow: holds.place(uow, request, COMMAND_LINE))


def test_capture_raced_against_void_raced_against_expiry_lets_exactly_one_win_for_every_hold(
        services, clean_database):
    engine = services.engine
    payer, payee = new_user(services), new_user(services)
    committed(services.uow, 3, lambda uow: deposit(uow, services.settings, payer, MoneyRequest(SGD, 1_000_000, None)))
    token = create_api_key(services.uow(), "admin")
    api_key_id = find_api_key(services.uow(), token).id
    rounds = []
    for n in range(ROUNDS):
        # Hold n expires before hold n + 1, and the sweep of round n runs on a clock between
        # them: it may expire hold n (and finds earlier ones decided), never a later one.
        hold = place(services, payer, 1_000 + n, expires_in_s=3_600 * (n + 1))
        rounds.append({"hold_id": hold.id, "capture": f"{(500 + n) / 100:.2f}", "to_user_id": payee if n % 2 else None,
                       "expiry_clock": hold.expires_at + timedelta(minutes=30)})
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(3)
    with context.Pool(3) as pool:
        capture, void, expiry = pool.starmap(race, [(action, rounds, test_environ(), api_key_id, barrier)
                                                    for action in ("capture", "void", "expiry")])

    with engine.connect() as connection:
        statuses = dict(connection.execute(text("SELECT id::text, status FROM holds")).all())
        entries = connection.execute(text(
            "SELECT count(*) FROM journal_entries WHERE idempotency_key LIKE 'hold_capture:%'")).scalar_one()
        held = connection.execute(text("SELECT held FROM wallets WHERE user_id = :u"), {"u": payer}).scalar_one()
    for n, round in enumerate(rounds):
        outcomes = (capture[n], void[n], expiry[n])
        assert outcomes.count("won") == 1, (n, outcomes)
        assert set(outcomes) - {"won"} <= {"invalid_state", "nothing_due"}, (n, outcomes)
        winner = ("captured", "voided", "expired")[outcomes.index("won")]
        assert statuses[round["hold_id"]] == winner
    print("winners (capture, void, expiry):", capture.count("won"), void.count("won"), expiry.count("won"))
    captured = [n for n in range(ROUNDS) if capture[n] == "won"]
    assert entries == len(captured) and held == 0
    paid = sum(500 + n for n in captured)
    with engine.connect() as connection:
        balances = dict(connection.execute(text(
            "SELECT user_id::text, balance FROM wallets WHERE user_id IS NOT NULL")).all())
    assert balances[payer] == 1_000_000 - paid
    assert balances.get(payee, 0) == sum(500 + n for n in captured if n % 2)
    assert_ledger_invariants(engine)
    run = reconciliation.run(services.uow(), reconciliation.start(services.uow(), True))
    assert (run["status"], run["mismatches"]) == ("clean", [])
