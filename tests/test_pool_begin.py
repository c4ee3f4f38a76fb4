"""The pool lends connections with their transaction begun, and that BEGIN is the liveness check
(storage/engine.py): connections the server dropped cost no request an error, and a caller may
still ask for another isolation level."""
from __future__ import annotations

from sqlalchemy import event, text

from storage.ledger import SqlLedger
from tests.conftest import assert_ledger_invariants


def cut_every_connection(engine) -> int:
    """Ends every other session of the test database, as a PostgreSQL restart would; how many."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        return connection.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()


def make_user(client, headers: dict, number: int, deposit: str | None = None) -> str:
    response = client.post("/api/v1/users", json={"name": "Ana", "email": f"{number}@example.com"}, headers=headers)
    assert response.status_code == 201, response.get_json()
    user_id = response.get_json()["id"]
    if deposit:
        response = client.post("/api/v1/wallet/deposit", json={"user_id": user_id, "amount": deposit, "currency": "SGD"},
                               headers={**headers, "Idempotency-Key": f"fund-{user_id}"})
        assert response.status_code == 201, response.get_json()
    return user_id


def test_requests_after_the_server_dropped_every_pooled_connection_are_answered_as_usual(client, admin_token, engine):
    headers = {"Authorization": f"Bearer {admin_token}"}
    sender, receiver = make_user(client, headers, 1, deposit="50.00"), make_user(client, headers, 2)
    assert cut_every_connection(engine) >= 1

    balance = client.get(f"/api/v1/users/{sender}/balance?currency=SGD", headers=headers)
    assert balance.status_code == 200, balance.get_json()
    assert balance.get_json()["balance"] == "50.00"

    cut_every_connection(engine)
    moved = client.post("/api/v1/wallet/transfer", headers={**headers, "Idempotency-Key": "after-cut"},
                        json={"from_user_id": sender, "to_user_id": receiver, "amount": "10.00", "currency": "SGD"})
    assert moved.status_code == 201, moved.get_json()
    with engine.connect() as connection:
        ledger = SqlLedger(connection)
        assert (ledger.balance(sender, "SGD"), ledger.balance(receiver, "SGD")) == (4_000, 1_000)
    assert_ledger_invariants(engine)


def test_a_lent_connection_may_switch_to_autocommit_and_run_a_vacuum(engine, clean_database):
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM wallets")
        assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1
    with engine.connect() as connection:  # the connection went back to the pool in its usual state
        assert connection.execute(text("SELECT count(*) FROM wallets")).scalar_one() == 0


def test_a_transfer_sends_six_statements_after_the_pools_begin_the_last_one_with_the_commit(client, admin_token, engine):
    """BEGIN (the pool's, also its ping), the idempotency claim, SAVEPOINT, the users check, the
    wallet lock, the write, and the stored answer sent with COMMIT: 7 round trips in all."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    sender, receiver = make_user(client, headers, 1, deposit="50.00"), make_user(client, headers, 2)
    sent: list[str] = []

    def remember(connection, cursor, statement, parameters, context, executemany):
        sent.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", remember)
    try:
        moved = client.post("/api/v1/wallet/transfer", headers={**headers, "Idempotency-Key": "counted"},
                            json={"from_user_id": sender, "to_user_id": receiver, "amount": "10.00", "currency": "SGD"})
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    assert moved.status_code == 201, moved.get_json()
    assert len(sent) == 6, sent
    assert sent[0].startswith("INSERT INTO idempotency_keys") and sent[1] == "SAVEPOINT use_case"
    assert sent[-1].startswith("UPDATE idempotency_keys") and sent[-1].endswith("; COMMIT")
    replayed = client.post("/api/v1/wallet/transfer", headers={**headers, "Idempotency-Key": "counted"},
                           json={"from_user_id": sender, "to_user_id": receiver, "amount": "10.00", "currency": "SGD"})
    assert replayed.status_code == 201 and replayed.headers["Idempotency-Replayed"] == "true"
    assert replayed.get_json() == moved.get_json()
