"""Reversals end to end: a 10,000-row reversal run by real `dramatiq actors` worker processes
after some payees spent part of their credit, and a reversal raced against transfers out of
the same wallets from separate processes. Real PostgreSQL and Redis; a missing server fails."""
from __future__ import annotations

import dataclasses
import multiprocessing

from pipeline import wallets
from pipeline.bulk import reversal
from pipeline.bulk.ports import Actor
from pipeline.bulk.upload import upload
from pipeline.money import MINOR_UNITS, Currency
from tests.conftest import assert_ledger_invariants, test_environ
from tests.racing_reversals import apply_reversal, transfer_out
from tests.test_bulk_end_to_end import wait_settled
from tests.test_bulk_pipeline import apply_all, balances, csv_of, post_file, query, seed_users
from tests.test_funding import account_balance, reconcile_full

URL = "/api/v1/wallet/bulk-credit"
SGD = Currency("SGD", MINOR_UNITS["SGD"])


def withdraw(services, user_id: str, amount_minor: int) -> None:
    with services.uow() as uow:
        wallets.withdraw(uow, services.settings, user_id, wallets.MoneyRequest(SGD, amount_minor, None))
        uow.commit()


def test_a_10000_row_reversal_after_some_payees_spent_part_of_their_credit(services, http, workers, engine):
    users = seed_users(services, 10_000)
    amounts = {user: (n % 700 + 1) * 100 + 37 for n, user in enumerate(users)}
    content = "uuid,amount\n" + "".join(f"{u},{amounts[u] // 100}.{amounts[u] % 100:02d}\n" for u in users)
    started = workers(2)
    credit_id = post_file(http, content.encode()).json["activity_id"]
    assert wait_settled(http, credit_id, started)["status"] == "COMPLETED"
    funded = account_balance(engine)
    spenders = users[::250]  # 40 payees spent 1.00 more than a tenth of their credit in between
    for user in spenders:
        withdraw(services, user, amounts[user] // 10 + 100)

    accepted = http.post(f"{URL}/{credit_id}/reverse", json={"reason": "the whole file was wrong"},
                         headers={"Idempotency-Key": "reverse-everything"})
    assert accepted.status_code == 202, accepted.json
    done = wait_settled(http, accepted.json["activity_id"], started)

    assert (done["kind"], done["status"], done["final"]) == ("reversal", "PARTIALLY_COMPLETED", True)
    assert (done["total_records"], done["successful_records"], done["failed_records"]) == (10_000, 9_960, 40)
    failed = http.get(f"{URL}/{done['activity_id']}/rows?status=FAILED&limit=100").json["data"]
    assert sorted(row["user_id"] for row in failed) == sorted(spenders)
    assert {row["error_code"] for row in failed} == {"insufficient_funds"}
    expected = {user: 0 for user in users}
    expected.update({user: amounts[user] - amounts[user] // 10 - 100 for user in spenders})
    assert balances(engine) == expected
    reversed_total = sum(amounts.values()) - sum(amounts[user] for user in spenders)
    assert account_balance(engine) == funded + reversed_total
    assert query(engine, "SELECT sum(amount) FROM journal_entries WHERE kind = 'bulk_reversal'") == [
        (reversed_total,)]
    history = http.get(f"{URL}/{done['activity_id']}/history").json["data"]
    assert (history[-1]["to_status"], history[-1]["final"], history[-1]["actor"]["type"]) == (
        "PARTIALLY_COMPLETED", True, "worker")
    assert reconcile_full(services)["status"] == "clean"
    assert_ledger_invariants(engine)


def test_a_reversal_raced_against_transfers_out_of_the_same_wallets_lets_exactly_one_take_each_credit(
        services, clean_database, queue, engine):
    settings = dataclasses.replace(services.settings, bulk_credit_chunk_rows=20)
    users = seed_users(services, 200)
    [sink] = seed_users(services, 1, funding_minor=0)
    credit_id = upload(services.uow, queue, settings, csv_of([f"{user},100.00" for user in users])).activity.id
    apply_all(services, settings, queue.take())
    funded = account_balance(engine)
    with services.uow() as uow:
        created = reversal.reverse(uow, settings, activity_id=credit_id, actor=Actor("command_line"),
                                   reason="raced")
        uow.commit()
    chunk_ids = created.chunk_ids
    assert len(chunk_ids) == 10

    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(3)
    environ = test_environ()
    with context.Pool(3) as pool:
        reversing = pool.apply_async(apply_reversal, (chunk_ids, environ, barrier))
        # From the last payee back, while the reversal goes from the first on: they meet in between.
        spending = [pool.apply_async(transfer_out, (users[::-1][half::2], sink, 6_000, environ, barrier))
                    for half in (0, 1)]
        applied = reversing.get(timeout=300)
        transferred = {**spending[0].get(timeout=300), **spending[1].get(timeout=300)}

    reversed_rows = dict(query(engine, "SELECT user_id::text, status FROM bulk_rows WHERE activity_id = :a",
                               a=created.activity.id))
    assert sum(done for done, _ in applied) == list(reversed_rows.values()).count("SUCCESS")
    for user in users:  # 100.00 cannot pay both a 100.00 reversal and a 60.00 transfer: exactly one won
        won = (reversed_rows[user] == "SUCCESS", transferred[user] == "moved")
        assert won in ((True, False), (False, True)), (user, reversed_rows[user], transferred[user])
        assert balances(engine)[user] == (0 if won[0] else 4_000)
    reversed_count = list(reversed_rows.values()).count("SUCCESS")
    moved_count = list(transferred.values()).count("moved")
    assert set(transferred.values()) <= {"moved", "insufficient_funds"}
    assert set(reversed_rows.values()) <= {"SUCCESS", "FAILED"}
    assert account_balance(engine) == funded + 10_000 * reversed_count
    assert balances(engine)[sink] == 6_000 * moved_count
    assert query(engine, "SELECT count(*) FROM wallets WHERE balance < 0 AND system_name IS NULL") == [(0,)]
    assert reconcile_full(services)["status"] == "clean"
    assert_ledger_invariants(engine)
