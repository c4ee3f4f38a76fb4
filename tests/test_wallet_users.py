"""A wallet's user is checked by PostgreSQL once per statement (migration 0031): a wallet must
name a user that exists; a user with wallets is never deleted, re-keyed or truncated away, and a
wallet insert racing a user's delete from another connection lets exactly one of them commit.
Raw SQL, as at a psql prompt: nothing here goes through pipeline/ or storage/."""
from __future__ import annotations

import threading
import time
import uuid

import psycopg.errors
import pytest
from sqlalchemy import text

from tests.test_ledger_constraints import DATABASE_ERRORS, count, insert_user, insert_user_wallet, refusal
from tests.test_ledger_constraints import wallets as ledger  # noqa: F401 (the fixture, named `ledger` here)


def test_a_wallet_for_a_user_who_does_not_exist_is_refused_and_one_refuses_the_statement(ledger):
    engine = ledger["engine"]
    before = count(engine, "wallets")
    missing = str(uuid.uuid4())
    with engine.connect() as connection, pytest.raises(DATABASE_ERRORS) as rejected:
        user = insert_user(connection)
        connection.execute(text("INSERT INTO wallets (user_id, currency) VALUES (:u, 'SGD'), (:m, 'SGD')"),
                           {"u": user, "m": missing})
    assert type(refusal(rejected)) is psycopg.errors.ForeignKeyViolation and missing in str(refusal(rejected))
    assert count(engine, "wallets") == before


@pytest.mark.parametrize("statement", [
    "DELETE FROM users WHERE id = :user",
    "UPDATE users SET id = gen_random_uuid() WHERE id = :user",
    "UPDATE wallets SET user_id = :other WHERE user_id = :user",
    "TRUNCATE users CASCADE",
])
def test_a_user_with_wallets_keeps_them_and_they_keep_their_user(ledger, statement):
    engine = ledger["engine"]
    with engine.begin() as connection:
        other = insert_user(connection)
        before = connection.execute(text("SELECT id, user_id FROM wallets ORDER BY id")).all()
    with engine.connect() as connection, pytest.raises(DATABASE_ERRORS) as rejected:
        connection.execute(text(statement), {"user": ledger["user_id"], "other": other})
        connection.commit()
    assert type(refusal(rejected)) is psycopg.errors.ForeignKeyViolation
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id, user_id FROM wallets ORDER BY id")).all() == before


def test_a_user_without_wallets_may_still_be_deleted(ledger):
    engine = ledger["engine"]
    with engine.begin() as connection:
        user = insert_user(connection)
    with engine.begin() as connection:
        assert connection.execute(text("DELETE FROM users WHERE id = :u"), {"u": user}).rowcount == 1


@pytest.mark.parametrize("first", ["insert", "delete"])
def test_a_wallet_insert_racing_its_users_delete_lets_exactly_one_commit(ledger, first):
    """Two connections; the first holds its change open while the second starts, then commits."""
    engine = ledger["engine"]
    with engine.begin() as connection:
        user = insert_user(connection)
    actions = {"insert": lambda c: insert_user_wallet(c, user, "SGD"),
               "delete": lambda c: c.execute(text("DELETE FROM users WHERE id = :u"), {"u": user})}
    second = "delete" if first == "insert" else "insert"
    outcome: dict[str, str] = {}

    def run(name: str, hold_s: float = 0.0) -> None:
        try:
            with engine.connect() as connection:
                actions[name](connection)
                time.sleep(hold_s)
                connection.commit()
            outcome[name] = "committed"
        except DATABASE_ERRORS as error:
            outcome[name] = type(getattr(error, "orig", error)).__name__

    holder = threading.Thread(target=run, args=(first, 1.0))
    holder.start()
    time.sleep(0.3)  # the first has written, not committed
    run(second)
    holder.join()

    assert outcome == {first: "committed", second: "ForeignKeyViolation"}
    with engine.connect() as connection:
        users = connection.execute(text("SELECT count(*) FROM users WHERE id = :u"), {"u": user}).scalar_one()
        wallets = connection.execute(text("SELECT count(*) FROM wallets WHERE user_id = :u"), {"u": user}).scalar_one()
    assert (users, wallets) == ((1, 1) if first == "insert" else (0, 0))


def test_a_repeatable_read_insert_whose_snapshot_predates_the_delete_fails_to_serialize(ledger):
    engine = ledger["engine"]
    with engine.begin() as connection:
        user = insert_user(connection)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as reader:
        reader.execute(text("SELECT count(*) FROM users")).scalar_one()  # the snapshot is taken
        with engine.begin() as deleter:
            deleter.execute(text("DELETE FROM users WHERE id = :u"), {"u": user})
        with pytest.raises(DATABASE_ERRORS) as rejected:
            insert_user_wallet(reader, user, "SGD")
    assert type(refusal(rejected)) is psycopg.errors.SerializationFailure
    assert count(engine, "users") == 1 and count(engine, "wallets") == 4  # the fixture's user and 4 wallets


@pytest.mark.parametrize("statement", ["DELETE FROM users WHERE id = :u",
                                       "UPDATE users SET id = gen_random_uuid() WHERE id = :u"])
def test_a_repeatable_read_delete_cannot_miss_a_wallet_committed_after_its_snapshot(ledger, statement):
    """From a break-it pass: the deleter's snapshot predated the wallet, whose insert had
    committed; the delete went through and left the wallet without its user."""
    engine = ledger["engine"]
    with engine.begin() as connection:
        user = insert_user(connection)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as deleter:
        deleter.execute(text("SELECT count(*) FROM users")).scalar_one()  # the snapshot is taken
        with engine.begin() as inserter:
            insert_user_wallet(inserter, user, "SGD")
        with pytest.raises(DATABASE_ERRORS) as rejected:
            deleter.execute(text(statement), {"u": user})
            deleter.commit()
    assert type(refusal(rejected)) is psycopg.errors.SerializationFailure
    with engine.connect() as connection:
        orphans = connection.execute(text("SELECT count(*) FROM wallets w LEFT JOIN users u ON u.id = w.user_id"
                                          " WHERE w.user_id IS NOT NULL AND u.id IS NULL")).scalar_one()
        kept = connection.execute(text("SELECT count(*) FROM wallets WHERE user_id = :u"), {"u": user}).scalar_one()
    assert (orphans, kept) == (0, 1)
