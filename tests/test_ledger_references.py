"""What a posting names is checked by PostgreSQL, per statement (migration 0029).

A posting must name a journal entry that exists (and was written by the same transaction)
and a wallet that exists in the posting's currency; wallets, which postings name without a
foreign key, are never deleted and keep their id and currency. Raw SQL, as a person at a
psql prompt would write it: nothing here goes through pipeline/ or storage/.
"""
from __future__ import annotations

import uuid

import psycopg.errors
import pytest
from sqlalchemy import text

from tests.test_ledger_constraints import (
    DATABASE_ERRORS,
    count,
    insert_entry,
    insert_posting,
    insert_user,
    insert_user_wallet,
    refusal,
)
from tests.test_ledger_constraints import wallets as ledger  # noqa: F401 (the fixture, named `ledger` here)


def sqlstate(rejected: pytest.ExceptionInfo) -> type:
    return type(refusal(rejected))


def test_a_posting_to_a_wallet_that_does_not_exist_is_refused(ledger):
    engine = ledger["engine"]
    postings_before = count(engine, "postings")
    with engine.connect() as connection:
        entry_id = insert_entry(connection)
        with pytest.raises(DATABASE_ERRORS) as rejected:
            insert_posting(connection, entry_id, 987_654_321, "SGD", 100)
    assert sqlstate(rejected) is psycopg.errors.ForeignKeyViolation
    assert "987654321" in str(refusal(rejected))
    assert count(engine, "postings") == postings_before


def test_one_orphan_posting_among_many_refuses_the_whole_statement(ledger):
    engine = ledger["engine"]
    postings_before, outbox_before = count(engine, "postings"), count(engine, "event_outbox")
    with engine.connect() as connection:
        entry_id = insert_entry(connection)
        with pytest.raises(DATABASE_ERRORS) as rejected:
            connection.execute(text(
                "INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
                " SELECT :entry, CASE WHEN n = 250 THEN -1 ELSE :user END, 'SGD', 1, 0 FROM generate_series(1, 500) n"),
                {"entry": entry_id, "user": ledger["user_sgd"]})
    assert sqlstate(rejected) is psycopg.errors.ForeignKeyViolation
    assert count(engine, "postings") == postings_before and count(engine, "event_outbox") == outbox_before


def test_a_posting_to_a_journal_entry_that_does_not_exist_is_refused(ledger):
    engine = ledger["engine"]
    missing = str(uuid.uuid4())
    with engine.connect() as connection, pytest.raises(DATABASE_ERRORS) as rejected:
        connection.execute(
            text("INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
                 " VALUES (:entry, :bank, 'SGD', -5, 0), (:entry, :user, 'SGD', 5, 0)"),
            {"entry": missing, "bank": ledger["bank_sgd"], "user": ledger["user_sgd"]})
    assert sqlstate(rejected) is psycopg.errors.ForeignKeyViolation
    assert missing in str(refusal(rejected))


@pytest.mark.parametrize("statement", [
    "DELETE FROM wallets WHERE id = :fresh",
    "DELETE FROM wallets WHERE id = :posted",
    "TRUNCATE wallets CASCADE",
    "UPDATE wallets SET currency = 'JPY' WHERE id = :fresh",
    "UPDATE wallets SET id = id + 1000 WHERE id = :fresh",
    "UPDATE wallets SET currency = 'USD' WHERE id = :posted",
])
def test_a_wallet_is_never_deleted_nor_given_another_id_or_currency_even_without_postings(ledger, statement):
    engine = ledger["engine"]
    with engine.begin() as connection:
        fresh = insert_user_wallet(connection, insert_user(connection), "SGD")  # no posting names it
    with engine.connect() as connection:
        before = connection.execute(text("SELECT id, currency FROM wallets ORDER BY id")).all()
    with engine.connect() as connection, pytest.raises(DATABASE_ERRORS) as rejected:
        connection.execute(text(statement), {"fresh": fresh, "posted": ledger["user_sgd"]})
        connection.commit()
    assert sqlstate(rejected) is psycopg.errors.ForeignKeyViolation
    assert "never deleted" in str(refusal(rejected))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id, currency FROM wallets ORDER BY id")).all() == before


def test_a_wallet_update_that_keeps_its_id_and_currency_is_allowed(ledger):
    engine = ledger["engine"]
    with engine.begin() as connection:
        connection.execute(text("UPDATE wallets SET currency = currency, id = id, status = 'frozen' WHERE id = :id"),
                           {"id": ledger["user_sgd"]})
    with engine.connect() as connection:
        status = connection.execute(text("SELECT status FROM wallets WHERE id = :id"), {"id": ledger["user_sgd"]})
        assert status.scalar_one() == "frozen"
