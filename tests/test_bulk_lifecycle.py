"""Bulk-credit rows for frozen wallets and closed users fail alone with their code, the rest of
their chunk is credited, and a frozen wallet's row succeeds on retry once it is unfrozen: in
this process with staged timing, and end to end with real worker processes."""
from __future__ import annotations

from pipeline import lifecycle
from pipeline.audit import COMMAND_LINE
from pipeline.bulk import chunks
from pipeline.bulk.upload import upload
from pipeline.money import MINOR_UNITS, Currency
from pipeline.retrying import committed
from pipeline.wallets import MoneyRequest, deposit
from tests.conftest import assert_ledger_invariants
from tests.test_bulk_end_to_end import wait_settled
from tests.test_bulk_pipeline import apply_all, balances, csv_of, post_file, query, seed_users

SGD = Currency("SGD", MINOR_UNITS["SGD"])


def rows(engine, activity_id) -> dict[str, tuple]:
    return {user: (status, code) for user, status, code in query(
        engine, "SELECT user_id::text, status, error_code FROM bulk_rows WHERE activity_id = :a", a=activity_id)}


def stage(services, frozen: str, closing: list[str]) -> None:
    """`frozen` gets a wallet of 1.00 SGD and has it frozen; each of `closing` is closed."""
    committed(services.uow, 3, lambda uow: deposit(uow, services.settings, frozen, MoneyRequest(SGD, 100, None)))
    committed(services.uow, 3, lambda uow: lifecycle.set_frozen(uow, frozen, "SGD", True, "under review",
                                                                 COMMAND_LINE))
    for user_id in closing:
        committed(services.uow, 3, lambda uow: lifecycle.close_user(uow, user_id, COMMAND_LINE))


def test_rows_for_a_frozen_wallet_or_a_closed_user_fail_alone_and_the_frozen_one_succeeds_once_unfrozen(
        services, clean_database, queue):
    frozen, closed_later, closed_before, *others = seed_users(services, 8)
    stage(services, frozen, [closed_before])
    content = csv_of([f"{frozen},5.00", f"{closed_later},6.00", f"{closed_before},7.00"]
                     + [f"{user},1.00" for user in others])
    activity_id = upload(services.uow, queue, services.settings, content).activity.id
    # Closed after the upload, before its chunk runs.
    committed(services.uow, 3, lambda uow: lifecycle.close_user(uow, closed_later, COMMAND_LINE))

    [applied] = apply_all(services, services.settings, queue.take())

    assert (applied.credited, applied.failed) == (5, 2)
    outcome = rows(services.engine, activity_id)
    assert outcome[frozen] == ("FAILED", "wallet_frozen")
    assert outcome[closed_later] == ("FAILED", "user_closed")
    assert outcome[closed_before] == ("INVALID", "user_closed")  # a closed user never reopens
    assert all(outcome[user] == ("SUCCESS", None) for user in others)
    assert balances(services.engine)[frozen] == 100
    assert closed_later not in balances(services.engine)  # no wallet was created for a closed user

    committed(services.uow, 3, lambda uow: lifecycle.set_frozen(uow, frozen, "SGD", False, "cleared", COMMAND_LINE))
    chunks.retry_failed_rows(services.uow, queue, services.settings, activity_id, COMMAND_LINE)
    apply_all(services, services.settings, queue.take())

    outcome = rows(services.engine, activity_id)
    assert outcome[frozen] == ("SUCCESS", None)
    assert outcome[closed_later] == ("FAILED", "user_closed")
    assert balances(services.engine)[frozen] == 600
    assert_ledger_invariants(services.engine)


def test_end_to_end_a_frozen_wallets_row_and_a_closed_users_row_fail_alone_with_real_workers(
        services, http, workers):
    frozen, closed, *others = seed_users(services, 50)
    committed(services.uow, 3, lambda uow: deposit(uow, services.settings, frozen, MoneyRequest(SGD, 100, None)))
    content = ("uuid,amount\n" + f"{frozen},5.00\n{closed},6.00\n" + "".join(f"{u},1.00\n" for u in others)).encode()
    accepted = post_file(http, content)  # its chunk waits in Redis: no worker runs yet
    assert accepted.status_code == 202
    activity_id = accepted.json["activity_id"]
    assert http.post(f"/api/v1/users/{frozen}/wallets/SGD/freeze", json={"reason": "review"}).status_code == 200
    assert http.delete(f"/api/v1/users/{closed}").status_code == 204

    first = wait_settled(http, activity_id, workers(1))

    assert (first["status"], first["successful_records"], first["failed_records"]) == ("PARTIALLY_COMPLETED", 48, 2)
    failed = http.get(f"/api/v1/wallet/bulk-credit/{activity_id}/rows?status=FAILED").json["data"]
    assert {(row["user_id"], row["error_code"]) for row in failed} == {(frozen, "wallet_frozen"),
                                                                      (closed, "user_closed")}
    assert http.post(f"/api/v1/users/{frozen}/wallets/SGD/unfreeze", json={"reason": "ok"}).status_code == 200
    retried = http.post("/api/v1/wallet/bulk-credit/retry", json={"activity_id": activity_id})
    assert (retried.status_code, retried.json["retried_records"]) == (202, 2)
    second = wait_settled(http, activity_id)

    assert (second["successful_records"], second["failed_records"]) == (49, 1)
    assert http.get(f"/api/v1/users/{frozen}/balance").json["balance"] == "6.00"
    assert all(http.get(f"/api/v1/users/{u}/balance").json["balance"] == "1.00" for u in others)
    assert_ledger_invariants(services.engine)


def test_a_bulk_reversal_takes_back_only_available_money_and_nothing_from_a_frozen_wallet(
        services, queued_http, queue):
    from pipeline import holds
    from tests.test_bulk_reversal import URL, reverse
    from tests.test_funding import reconcile_full

    held, frozen, free = seed_users(services, 3)
    post_file(queued_http, f"uuid,amount\n{held},10.00\n{frozen},10.00\n{free},10.00\n".encode())
    apply_all(services, services.settings, queue.take())
    credit_id = query(services.engine, "SELECT id::text FROM bulk_activities")[0][0]
    # 10.00 each; 4.00 of the first payee's is held, so only 6.00 is available to take back.
    committed(services.uow, 3, lambda uow: holds.place(
        uow, holds.HoldRequest(held, MoneyRequest(SGD, 400, None), 3_600), COMMAND_LINE))
    committed(services.uow, 3, lambda uow: lifecycle.set_frozen(uow, frozen, "SGD", True, "review", COMMAND_LINE))

    reversal_id = reverse(queued_http, credit_id).json["activity_id"]
    apply_all(services, services.settings, queue.take())

    outcome = {row["user_id"]: (row["status"], row["error_code"])
               for row in queued_http.get(f"{URL}/{reversal_id}/rows").json["data"]}
    assert outcome == {held: ("FAILED", "insufficient_funds"), frozen: ("FAILED", "wallet_frozen"),
                       free: ("SUCCESS", None)}
    assert balances(services.engine) == {held: 1_000, frozen: 1_000, free: 0}
    assert reconcile_full(services)["status"] == "clean"
    assert_ledger_invariants(services.engine)
