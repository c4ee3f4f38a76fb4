"""Reconciliation finds exactly what was tampered with, by raw SQL behind the ledger's back."""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline import reconciliation, users, wallets
from pipeline.money import currency
from tests.conftest import test_environ

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def funded_user(services, clean_database):
    """A user holding 50.00 SGD, deposited through the ledger."""
    user = users.create_user(services.uow(), "Ana", f"ana-{uuid.uuid4().hex[:8]}@example.com")
    deposit(services, user.id, 5_000)
    return user


def deposit(services, user_id: str, amount_minor: int) -> None:
    uow = services.uow()
    with uow:
        wallets.deposit(uow, services.settings, user_id, wallets.MoneyRequest(currency("SGD"), amount_minor, None))
        uow.commit()


def wallet_id_of(engine, user_id: str) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT id FROM wallets WHERE user_id = :u"), {"u": user_id}).scalar_one()


def reconcile(services, full: bool) -> dict:
    return reconciliation.run(services.uow(), reconciliation.start(services.uow(), full))


def test_a_clean_ledger_reconciles_clean_in_full_and_incrementally(services, funded_user):
    others = [users.create_user(services.uow(), "Bo", f"bo-{n}-{uuid.uuid4().hex[:8]}@example.com") for n in range(10)]
    for user in others:
        deposit(services, user.id, 1_000)
    full = reconcile(services, full=True)
    assert (full["status"], full["mismatch_count"], full["mismatches"]) == ("clean", 0, [])
    assert full["wallets_checked"] >= 12  # eleven users' wallets and a bank shard or more

    deposit(services, others[0].id, 1_000)
    incremental = reconcile(services, full=False)

    assert incremental["status"] == "clean"
    # Exactly what changed since the full run's snapshot horizon: the new deposit's wallets,
    # plus older ones only if a transaction on the server was still running at that snapshot.
    with services.engine.connect() as connection:
        horizon, started_at = connection.execute(text(
            "SELECT horizon_transaction_id, started_at FROM reconciliations WHERE id = :id"), {"id": full["id"]}).one()
        in_scope = connection.execute(text(
            "SELECT count(*) FROM (SELECT p.wallet_id FROM postings p JOIN journal_entries j ON j.id = p.journal_entry_id"
            " WHERE j.transaction_id >= :horizon UNION SELECT id FROM wallets WHERE updated_at >= :started_at) touched"),
            {"horizon": horizon, "started_at": started_at}).scalar_one()
        first_deposit_txid = connection.execute(text("SELECT min(transaction_id) FROM journal_entries")).scalar_one()
    assert incremental["wallets_checked"] == in_scope >= 2
    if horizon > first_deposit_txid:  # the usual case: nothing else was running
        assert incremental["wallets_checked"] < full["wallets_checked"]


def test_a_balance_tampered_with_by_raw_sql_is_reported_as_exactly_that_wallet(services, engine, funded_user):
    reconcile(services, full=True)
    wallet_id = wallet_id_of(engine, funded_user.id)
    with engine.begin() as connection:
        connection.execute(text("UPDATE wallets SET balance = balance + 7 WHERE id = :id"), {"id": wallet_id})
    alerts = []

    run = reconciliation.run(services.uow(), reconciliation.start(services.uow(), False), alert=alerts.append)

    assert run["status"] == "mismatched"
    assert sorted((m["wallet"], m["kind"], m["expected"], m["actual"]) for m in run["mismatches"]) == [
        (str(wallet_id), "balance_differs_from_last_balance_after", "50.00", "50.07"),
        (str(wallet_id), "balance_differs_from_postings", "50.00", "50.07"),
        ("currency:SGD", "currency_not_zero", "0.00", "0.07"),
    ]
    assert [alert["id"] for alert in alerts] == [run["id"]]
    with engine.connect() as connection:  # reconciliation reports; it never mends
        assert connection.execute(text("SELECT balance FROM wallets WHERE id = :id"), {"id": wallet_id}).scalar_one() == 5_007


def test_a_journal_entry_inserted_with_its_trigger_disabled_is_found_by_the_zero_sum_check(services, engine, funded_user):
    wallet_id = wallet_id_of(engine, funded_user.id)
    entry_id = str(uuid.uuid4())
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE journal_entries DISABLE TRIGGER journal_entries_balance")
        connection.execute(text("INSERT INTO journal_entries (id, kind, currency, amount) VALUES (:id, 'deposit', 'SGD', 100)"),
                           {"id": entry_id})
        connection.execute(text("INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
                                " VALUES (:id, :wallet, 'SGD', 100, 5100)"), {"id": entry_id, "wallet": wallet_id})
        connection.execute(text("UPDATE wallets SET balance = 5100 WHERE id = :id"), {"id": wallet_id})
        connection.exec_driver_sql("ALTER TABLE journal_entries ENABLE TRIGGER journal_entries_balance")

    run = reconcile(services, full=True)

    found = {(m["wallet"], m["kind"]): m for m in run["mismatches"]}
    assert found[(f"journal_entry:{entry_id}", "journal_entry_unbalanced")]["actual"] == "1.00 SGD"
    assert found[("currency:SGD", "currency_not_zero")]["actual"] == "1.00"
    assert not any(m["wallet"] == str(wallet_id) for m in run["mismatches"])  # its balance matches its postings


def insert_activity(connection, statuses: list[str], successful_records: int) -> str:
    activity_id = str(uuid.uuid4())
    valid = sum(status != "INVALID" for status in statuses)
    failed = statuses.count("FAILED")
    connection.execute(text(
        "INSERT INTO bulk_activities (id, status, total_records, valid_records, invalid_records,"
        " successful_records, failed_records, pending_records)"
        " VALUES (:id, 'PARTIALLY_COMPLETED', :total, :valid, :invalid, :ok, :failed, :pending)"), {
        "id": activity_id, "total": len(statuses), "valid": valid, "invalid": len(statuses) - valid,
        "ok": successful_records, "failed": failed, "pending": valid - successful_records - failed})
    for number, status in enumerate(statuses, start=2):
        connection.execute(text(
            "INSERT INTO bulk_rows (activity_id, row_number, user_id, amount_minor, currency, status, journal_entry_id)"
            " VALUES (:activity, :number, :user, 100, 'SGD', :status, :entry)"), {
            "activity": activity_id, "number": number, "user": str(uuid.uuid4()), "status": status,
            "entry": str(uuid.uuid4()) if status == "SUCCESS" else None})
    return activity_id


def test_activity_counters_that_disagree_with_their_rows_and_rows_without_their_posting_are_reported(services, engine, clean_database):
    with engine.begin() as connection:
        activity_id = insert_activity(connection, ["SUCCESS", "FAILED", "PENDING"], successful_records=0)
        success_row_id = connection.execute(text(
            "SELECT id FROM bulk_rows WHERE activity_id = :a AND status = 'SUCCESS'"), {"a": activity_id}).scalar_one()

    run = reconcile(services, full=True)

    kinds = {(m["wallet"], m["kind"], m["expected"], m["actual"]) for m in run["mismatches"]}
    assert (f"activity:{activity_id}", "activity_counter_successful_records", "1", "0") in kinds
    assert (f"activity:{activity_id}", "activity_counter_pending_records", "1", "2") in kinds
    assert (f"bulk_row:{success_row_id}", "success_row_postings", "1", "0") in kinds


def test_the_command_line_exits_with_status_one_when_anything_mismatches(services, engine, funded_user):
    command = [sys.executable, "-m", "flask", "--app", "api", "reconcile", "--full"]
    clean = subprocess.run(command, cwd=ROOT, env=test_environ(), capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr
    assert "clean" in clean.stdout
    with engine.begin() as connection:
        connection.execute(text("UPDATE wallets SET balance = balance + 1 WHERE user_id = :u"), {"u": funded_user.id})

    mismatched = subprocess.run(command, cwd=ROOT, env=test_environ(), capture_output=True, text=True, timeout=60)

    assert mismatched.returncode == 1
    assert "balance_differs_from_postings" in mismatched.stdout


def test_a_mismatch_is_posted_to_the_alert_webhook_as_json(services, engine, funded_user):
    import http.server
    import json
    import threading

    from telemetry.alerting import reconciliation_alert

    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.handle_request, daemon=True).start()
    with engine.begin() as connection:
        connection.execute(text("UPDATE wallets SET balance = balance + 1 WHERE user_id = :u"), {"u": funded_user.id})

    alert = reconciliation_alert(f"http://127.0.0.1:{server.server_port}/hook")
    run = reconciliation.run(services.uow(), reconciliation.start(services.uow(), True), alert)
    server.server_close()

    assert len(received) == 1
    assert received[0]["id"] == run["id"]
    assert received[0]["mismatch_count"] == run["mismatch_count"] == 3
