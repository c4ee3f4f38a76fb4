"""The ledger's rules, checked twice: by pipeline/ledger.py in Python and by PostgreSQL.

The database tests bypass Python with raw SQL, as a buggy repository or a person at a psql
prompt would, and show that PostgreSQL still refuses to lose or invent money: the deferred
balance trigger, the append-only triggers, the CHECK on user balances and the UNIQUE
wallet per user and currency.
"""
from __future__ import annotations

import uuid

import psycopg.errors
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from pipeline.errors import InsufficientFunds, UserClosed, WalletFrozen
from pipeline.ledger import Movement, Posting, Wallet, WalletKey, assert_balanced, post
from pipeline.ports import JournalEntry


# --- raw SQL helpers: nothing here goes through pipeline/ or storage/ ----------------------

def insert_user(connection) -> str:
    user_id = str(uuid.uuid4())
    connection.execute(
        text("INSERT INTO users (id, name, email) VALUES (:id, 'Ana', :email)"),
        {"id": user_id, "email": f"{user_id}@example.com"},
    )
    return user_id


def insert_user_wallet(connection, user_id: str, currency: str) -> int:
    return connection.execute(
        text("INSERT INTO wallets (user_id, currency) VALUES (:user_id, :currency) RETURNING id"),
        {"user_id": user_id, "currency": currency},
    ).scalar_one()


def insert_system_wallet(connection, name: str, currency: str, shard: int = 0) -> int:
    return connection.execute(
        text("INSERT INTO wallets (system_name, shard, currency) VALUES (:name, :shard, :currency) RETURNING id"),
        {"name": name, "shard": shard, "currency": currency},
    ).scalar_one()


def insert_entry(connection, currency: str = "SGD", amount: int = 100) -> str:
    entry_id = str(uuid.uuid4())
    connection.execute(
        text("INSERT INTO journal_entries (id, kind, currency, amount) VALUES (:id, 'deposit', :currency, :amount)"),
        {"id": entry_id, "currency": currency, "amount": amount},
    )
    return entry_id


def insert_posting(connection, entry_id: str, wallet_id: int, currency: str, amount: int) -> None:
    connection.execute(
        text("INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
             " VALUES (:entry, :wallet, :currency, :amount, 0)"),
        {"entry": entry_id, "wallet": wallet_id, "currency": currency, "amount": amount},
    )


def count(engine, table: str) -> int:
    with engine.connect() as connection:
        return connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


#: What PostgreSQL's refusals arrive as: wrapped by SQLAlchemy, or straight from psycopg
#: where storage/ runs a statement on the driver's cursor.
DATABASE_ERRORS = (DBAPIError, psycopg.Error)


def refusal(error: pytest.ExceptionInfo) -> psycopg.Error:
    """PostgreSQL's own error behind a refusal, whichever way it arrived."""
    orig = error.value.orig if isinstance(error.value, DBAPIError) else error.value
    assert isinstance(orig, psycopg.Error), repr(error.value)
    return orig


def sqlstate_of(error: pytest.ExceptionInfo) -> type:
    """The error's class, which psycopg derives from its SQLSTATE."""
    return type(refusal(error))


@pytest.fixture
def wallets(clean_database):
    """A user with SGD and JPY wallets and the `bank` system wallets, committed and funded
    by one balanced journal entry per currency (SGD 100.00, JPY 500)."""
    engine = clean_database
    with engine.begin() as connection:
        user_id = insert_user(connection)
        ids = {
            "user_id": user_id,
            "user_sgd": insert_user_wallet(connection, user_id, "SGD"),
            "user_jpy": insert_user_wallet(connection, user_id, "JPY"),
            "bank_sgd": insert_system_wallet(connection, "bank", "SGD"),
            "bank_jpy": insert_system_wallet(connection, "bank", "JPY"),
        }
        for currency, amount in (("SGD", 10_000), ("JPY", 500)):
            entry_id = insert_entry(connection, currency, amount)
            insert_posting(connection, entry_id, ids[f"bank_{currency.lower()}"], currency, -amount)
            insert_posting(connection, entry_id, ids[f"user_{currency.lower()}"], currency, amount)
            ids[f"entry_{currency.lower()}"] = entry_id
        connection.execute(text("UPDATE wallets SET balance = CASE WHEN user_id IS NULL THEN -1 ELSE 1 END"
                                " * CASE currency WHEN 'SGD' THEN 10000 ELSE 500 END"))
    ids["engine"] = engine
    return ids


# --- the deferred balance trigger -------------------------------------------------------

def test_an_unbalanced_journal_entry_is_rejected_at_commit_and_not_at_insert(wallets):
    engine = wallets["engine"]
    entries_before, postings_before = count(engine, "journal_entries"), count(engine, "postings")
    with engine.connect() as connection:
        entry_id = insert_entry(connection)
        insert_posting(connection, entry_id, wallets["bank_sgd"], "SGD", -100)
        insert_posting(connection, entry_id, wallets["user_sgd"], "SGD", 99)  # no error yet: deferred
        with pytest.raises(DATABASE_ERRORS) as rejected:
            connection.commit()
    assert sqlstate_of(rejected) is psycopg.errors.CheckViolation
    assert "does not balance" in str(refusal(rejected))
    assert (count(engine, "journal_entries"), count(engine, "postings")) == (entries_before, postings_before)


def test_an_entry_that_balances_only_by_the_end_of_the_transaction_is_accepted(wallets):
    engine = wallets["engine"]
    with engine.connect() as connection:
        entry_id = insert_entry(connection)
        insert_posting(connection, entry_id, wallets["bank_sgd"], "SGD", -100)
        insert_posting(connection, entry_id, wallets["user_sgd"], "SGD", 60)
        insert_posting(connection, entry_id, wallets["user_sgd"], "SGD", 40)
        connection.commit()
    with engine.connect() as connection:
        total = connection.execute(text("SELECT sum(amount) FROM postings WHERE journal_entry_id = :id"),
                                   {"id": entry_id}).scalar_one()
    assert total == 0


def test_a_journal_entry_without_postings_is_rejected_at_commit(wallets):
    engine = wallets["engine"]
    with engine.connect() as connection:
        insert_entry(connection)
        with pytest.raises(DATABASE_ERRORS) as rejected:
            connection.commit()
    assert sqlstate_of(rejected) is psycopg.errors.CheckViolation
    assert "has no postings" in str(refusal(rejected))


def test_postings_in_two_currencies_within_one_entry_must_each_balance(wallets):
    engine = wallets["engine"]
    with engine.connect() as connection:
        entry_id = insert_entry(connection)
        insert_posting(connection, entry_id, wallets["bank_sgd"], "SGD", -100)
        insert_posting(connection, entry_id, wallets["user_sgd"], "SGD", 100)
        insert_posting(connection, entry_id, wallets["bank_jpy"], "JPY", -7)
        insert_posting(connection, entry_id, wallets["user_jpy"], "JPY", 7)
        connection.commit()

    # Zero in total, but 100 SGD are not worth 100 JPY: each currency must balance on its own.
    with engine.connect() as connection:
        entry_id = insert_entry(connection)
        insert_posting(connection, entry_id, wallets["bank_sgd"], "SGD", -100)
        insert_posting(connection, entry_id, wallets["user_jpy"], "JPY", 100)
        with pytest.raises(DATABASE_ERRORS) as rejected:
            connection.commit()
    assert sqlstate_of(rejected) is psycopg.errors.CheckViolation

    with engine.connect() as connection:
        entry_id = insert_entry(connection)
        insert_posting(connection, entry_id, wallets["bank_sgd"], "SGD", -100)
        insert_posting(connection, entry_id, wallets["user_sgd"], "SGD", 100)
        insert_posting(connection, entry_id, wallets["bank_jpy"], "JPY", -7)
        insert_posting(connection, entry_id, wallets["user_jpy"], "JPY", 6)
        with pytest.raises(DATABASE_ERRORS) as rejected:
            connection.commit()
    assert sqlstate_of(rejected) is psycopg.errors.CheckViolation
    assert "JPY" in str(refusal(rejected))


def test_a_posting_in_another_currency_than_its_wallet_is_rejected(wallets):
    with wallets["engine"].connect() as connection:
        entry_id = insert_entry(connection)
        with pytest.raises(DATABASE_ERRORS) as rejected:
            insert_posting(connection, entry_id, wallets["user_sgd"], "JPY", 100)
    assert sqlstate_of(rejected) is psycopg.errors.ForeignKeyViolation


# --- the append-only triggers -----------------------------------------------------------

@pytest.mark.parametrize("statement", [
    "UPDATE postings SET amount = amount * 2",
    "UPDATE postings SET balance_after = 0 WHERE id = (SELECT min(id) FROM postings)",
    "DELETE FROM postings WHERE id = (SELECT min(id) FROM postings)",
    "DELETE FROM postings",
    "TRUNCATE postings",
    "UPDATE journal_entries SET amount = 1",
    "DELETE FROM journal_entries",
    "TRUNCATE journal_entries CASCADE",
])
def test_a_raw_update_delete_or_truncate_of_the_ledger_is_rejected(wallets, statement):
    engine = wallets["engine"]
    with engine.connect() as connection:
        before = connection.execute(text("SELECT id, amount, balance_after FROM postings ORDER BY id")).all()
    with engine.connect() as connection:
        with pytest.raises(DATABASE_ERRORS) as rejected:
            connection.execute(text(statement))
    assert sqlstate_of(rejected) is psycopg.errors.InsufficientPrivilege
    assert "append-only" in str(refusal(rejected))
    with engine.connect() as connection:
        after = connection.execute(text("SELECT id, amount, balance_after FROM postings ORDER BY id")).all()
    assert after == before and len(after) == 4


def test_adding_a_posting_to_a_journal_entry_committed_earlier_is_rejected(wallets):
    engine = wallets["engine"]
    postings_before = count(engine, "postings")
    # Balanced on its own, so only the same-transaction rule can catch it: the balance
    # trigger of the old entry ran at its own commit and will not run again.
    with engine.connect() as connection:
        with pytest.raises(DATABASE_ERRORS) as rejected:
            connection.execute(
                text("INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
                     " VALUES (:entry, :bank, 'SGD', -500, 0), (:entry, :user, 'SGD', 500, 0)"),
                {"entry": wallets["entry_sgd"], "bank": wallets["bank_sgd"], "user": wallets["user_sgd"]},
            )
    assert sqlstate_of(rejected) is psycopg.errors.CheckViolation
    assert "same transaction" in str(refusal(rejected))
    assert count(engine, "postings") == postings_before


# --- wallets ----------------------------------------------------------------------------

def test_a_raw_update_that_would_make_a_user_wallet_negative_is_rejected(wallets):
    engine = wallets["engine"]
    with engine.connect() as connection:
        with pytest.raises(DATABASE_ERRORS) as rejected:
            connection.execute(text("UPDATE wallets SET balance = balance - 10001 WHERE id = :id"),
                               {"id": wallets["user_sgd"]})
    assert sqlstate_of(rejected) is psycopg.errors.CheckViolation
    assert "wallets_user_balance_not_negative" in str(refusal(rejected))
    with engine.connect() as connection:
        balance = connection.execute(text("SELECT balance FROM wallets WHERE id = :id"),
                                     {"id": wallets["user_sgd"]}).scalar_one()
    assert balance == 10_000


def test_a_user_wallet_may_be_emptied_to_exactly_zero(wallets):
    with wallets["engine"].begin() as connection:
        connection.execute(text("UPDATE wallets SET balance = 0 WHERE id = :id"), {"id": wallets["user_sgd"]})


def test_a_system_wallet_may_go_negative(wallets):
    engine = wallets["engine"]
    with engine.begin() as connection:
        connection.execute(text("UPDATE wallets SET balance = -999999999 WHERE id = :id"),
                           {"id": wallets["bank_sgd"]})
        fees = insert_system_wallet(connection, "fees", "SGD", shard=3)
        connection.execute(text("UPDATE wallets SET balance = -1 WHERE id = :id"), {"id": fees})
    with engine.connect() as connection:
        balances = connection.execute(text("SELECT balance FROM wallets WHERE id IN (:bank, :fees) ORDER BY id"),
                                      {"bank": wallets["bank_sgd"], "fees": fees}).scalars().all()
    assert balances == [-999999999, -1]


def test_a_user_has_at_most_one_wallet_per_currency(wallets):
    engine = wallets["engine"]
    with engine.connect() as connection:
        with pytest.raises(DATABASE_ERRORS) as rejected:
            insert_user_wallet(connection, wallets["user_id"], "SGD")
    assert sqlstate_of(rejected) is psycopg.errors.UniqueViolation
    assert "wallets_one_per_user_and_currency" in str(refusal(rejected))
    with engine.begin() as connection:
        insert_user_wallet(connection, wallets["user_id"], "USD")  # another currency is fine
        counted = connection.execute(text("SELECT count(*) FROM wallets WHERE user_id = :id"),
                                     {"id": wallets["user_id"]}).scalar_one()
    assert counted == 3


def test_a_wallet_belongs_to_a_user_or_to_the_system_never_both(wallets):
    with wallets["engine"].connect() as connection:
        with pytest.raises(DATABASE_ERRORS) as rejected:
            connection.execute(
                text("INSERT INTO wallets (user_id, system_name, currency) VALUES (:id, 'fees', 'USD')"),
                {"id": wallets["user_id"]})
    assert sqlstate_of(rejected) is psycopg.errors.CheckViolation


# --- the Python half of the pair --------------------------------------------------------

USER = WalletKey("SGD", user_id="7d1d2a52-65b5-4a2b-8c43-0a4ad6e4c8a1")
OTHER = WalletKey("SGD", user_id="0b9f7a4e-1f51-4a3e-9d0c-5e3b0f1f8e22")
BANK = WalletKey("SGD", system_name="bank", shard=2)
FEES = WalletKey("SGD", system_name="fees")
BANK_JPY = WalletKey("JPY", system_name="bank")
USER_JPY = WalletKey("JPY", user_id=USER.user_id)


def locked(**balances: int) -> dict[WalletKey, Wallet]:
    keys = {"user": USER, "other": OTHER, "bank": BANK, "fees": FEES, "bank_jpy": BANK_JPY, "user_jpy": USER_JPY}
    return {keys[name]: Wallet(index + 1, keys[name], balance) for index, (name, balance) in enumerate(balances.items())}


def test_post_refuses_an_overdraft_of_a_user_wallet():
    with pytest.raises(InsufficientFunds):
        post(locked(user=1_000, bank=0), [Movement(USER, -1_001), Movement(BANK, 1_001)])
    with pytest.raises(InsufficientFunds):  # a user with no money at all
        post(locked(user=0, bank=0), [Movement(USER, -1), Movement(BANK, 1)])


def test_post_refuses_a_transfer_of_one_minor_unit_more_than_the_balance_and_its_fee():
    wallets = locked(user=1_015, other=0, fees=0)
    with pytest.raises(InsufficientFunds):
        post(wallets, [Movement(USER, -1_016), Movement(OTHER, 1_001), Movement(FEES, 15)])
    postings = post(wallets, [Movement(USER, -1_015), Movement(OTHER, 1_000), Movement(FEES, 15)])
    assert [(p.wallet_id, p.amount, p.balance_after) for p in postings] == [(1, -1_015, 0), (2, 1_000, 1_000), (3, 15, 15)]


def test_post_lets_a_system_wallet_go_negative():
    postings = post(locked(bank=0, user=0), [Movement(BANK, -5_000), Movement(USER, 5_000)])
    assert [(p.amount, p.balance_after) for p in postings] == [(-5_000, -5_000), (5_000, 5_000)]


def test_post_carries_the_balance_from_one_posting_to_the_next_on_the_same_wallet():
    postings = post(locked(user=100, bank=0), [Movement(USER, 50), Movement(USER, -150), Movement(BANK, 100)])
    assert [p.balance_after for p in postings] == [150, 0, 100]
    with pytest.raises(InsufficientFunds):  # order matters: the balance may not dip below zero midway
        post(locked(user=100, bank=0), [Movement(USER, -150), Movement(USER, 50), Movement(BANK, 100)])


def test_assert_balanced_catches_an_unbalanced_entry():
    with pytest.raises(AssertionError, match="unbalanced"):
        assert_balanced([Movement(BANK, -100), Movement(USER, 99)])


def test_assert_balanced_checks_each_currency_on_its_own():
    assert_balanced([Movement(BANK, -100), Movement(USER, 100), Movement(BANK_JPY, -3), Movement(USER_JPY, 3)])
    with pytest.raises(AssertionError, match="unbalanced"):
        assert_balanced([Movement(BANK, -100), Movement(USER_JPY, 100)])


def test_assert_balanced_refuses_a_posting_of_zero():
    with pytest.raises(AssertionError, match="zero"):
        assert_balanced([Movement(BANK, 0), Movement(USER, 0)])


def test_post_checks_the_balance_before_it_checks_any_wallet():
    with pytest.raises(AssertionError, match="unbalanced"):
        post(locked(user=1_000, other=0), [Movement(USER, -10), Movement(OTHER, 9)])


# --- the pair: what Python refuses, PostgreSQL refuses too ------------------------------

def test_postings_that_python_calls_unbalanced_are_refused_by_postgresql_as_well(services, wallets):
    movements = [Movement(BANK, -100), Movement(USER, 99)]
    with pytest.raises(AssertionError):
        assert_balanced(movements)

    # The same postings handed straight to the repository, as a bug that skipped post() would.
    uow = services.uow()
    entry = JournalEntry(str(uuid.uuid4()), "deposit", "SGD", 100, to_user_id=wallets["user_id"])
    postings = [Posting(wallets["bank_sgd"], "SGD", -100, -10_100), Posting(wallets["user_sgd"], "SGD", 99, 10_099)]
    with pytest.raises(DATABASE_ERRORS) as rejected:
        with uow:
            uow.ledger.record(entry, postings)
            uow.commit()
    assert sqlstate_of(rejected) is psycopg.errors.CheckViolation
    with services.engine.connect() as connection:
        stored = connection.execute(text("SELECT count(*) FROM journal_entries WHERE id = :id"),
                                    {"id": entry.id}).scalar_one()
        balances = connection.execute(text("SELECT id, balance FROM wallets WHERE id IN (:bank, :user) ORDER BY id"),
                                      {"bank": wallets["bank_sgd"], "user": wallets["user_sgd"]}).all()
    assert stored == 0
    assert dict(balances) == {wallets["bank_sgd"]: -10_000, wallets["user_sgd"]: 10_000}


def test_an_overdraft_that_python_refuses_is_refused_by_postgresql_as_well(services, wallets):
    with pytest.raises(InsufficientFunds):
        post(locked(user=10_000, bank=-10_000), [Movement(USER, -10_001), Movement(BANK, 10_001)])

    uow = services.uow()
    entry = JournalEntry(str(uuid.uuid4()), "withdrawal", "SGD", 10_001, from_user_id=wallets["user_id"])
    postings = [Posting(wallets["user_sgd"], "SGD", -10_001, -1), Posting(wallets["bank_sgd"], "SGD", 10_001, 1)]
    with pytest.raises(DATABASE_ERRORS) as rejected:
        with uow:
            uow.ledger.record(entry, postings)
            uow.commit()
    assert sqlstate_of(rejected) is psycopg.errors.CheckViolation
    assert count(services.engine, "postings") == 4


def test_a_system_shard_is_found_by_index_with_any_parameters(engine):
    """The transfer path looks bank and fees shards up with parameters, through a generic plan;
    a partial index would not serve it and every transfer would scan every wallet."""
    with engine.connect() as connection:
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        connection.exec_driver_sql(
            "PREPARE shard_lookup(text, smallint, char(3)) AS SELECT id FROM wallets w"
            " WHERE w.system_name = $1 AND w.shard = $2 AND w.currency = $3")
        plan = "\n".join(connection.exec_driver_sql("EXPLAIN EXECUTE shard_lookup('bank', 1, 'SGD')").scalars())
        connection.exec_driver_sql("DEALLOCATE shard_lookup")
    assert "wallets_one_per_system_shard" in plan and "Seq Scan" not in plan, plan


def test_post_refuses_a_debit_of_money_a_hold_reserved_but_not_a_credit():
    wallets = {**locked(bank=0), USER: Wallet(1, USER, 1_000, held=300)}
    with pytest.raises(InsufficientFunds):
        post(wallets, [Movement(USER, -701), Movement(BANK, 701)])
    assert post(wallets, [Movement(USER, -700), Movement(BANK, 700)])[0].balance_after == 300
    assert post(wallets, [Movement(BANK, -5), Movement(USER, 5)])[1].balance_after == 1_005


@pytest.mark.parametrize("status, refusal", [("frozen", WalletFrozen), ("closed", UserClosed)])
def test_post_moves_no_money_in_or_out_of_a_frozen_wallet_or_a_closed_users(status, refusal):
    wallets = {**locked(bank=0), USER: Wallet(1, USER, 1_000, status=status)}
    with pytest.raises(refusal):
        post(wallets, [Movement(USER, -1), Movement(BANK, 1)])
    with pytest.raises(refusal):
        post(wallets, [Movement(BANK, -1), Movement(USER, 1)])


def test_the_reversal_key_holds_the_reversals_only_and_still_refuses_a_second_reversal(wallets):
    """Entries that reverse nothing (every transfer, deposit and chunk) leave no entry in the
    reversal key's index (migration 0030): one index write fewer per movement."""
    engine = wallets["engine"]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE journal_entries")  # counts the rows each index holds
        index_entries = connection.execute(text(
            "SELECT reltuples FROM pg_class WHERE relname = 'journal_entries_reverses_entry_id_key'")).scalar_one()
    assert index_entries == 0, "the two deposits of the fixture are in the reversal key's index"
    reversal = ("INSERT INTO journal_entries (id, kind, currency, amount, reverses_entry_id)"
                " VALUES (:id, 'reversal', 'SGD', 100, :reversed)")
    with engine.begin() as connection:
        reversal_id = str(uuid.uuid4())
        connection.execute(text(reversal), {"id": reversal_id, "reversed": wallets["entry_sgd"]})
        insert_posting(connection, reversal_id, wallets["bank_sgd"], "SGD", 100)
        insert_posting(connection, reversal_id, wallets["user_sgd"], "SGD", -100)
    with pytest.raises(DATABASE_ERRORS) as second:
        with engine.begin() as connection:
            connection.execute(text(reversal), {"id": str(uuid.uuid4()), "reversed": wallets["entry_sgd"]})
    assert sqlstate_of(second) is psycopg.errors.UniqueViolation and "reverses_entry_id" in str(refusal(second))


def test_the_reversal_of_an_entry_is_found_by_index_through_a_generic_plan(engine):
    """storage/ledger.py asks `reverses_entry_id = $1` with a parameter: the partial index must
    serve that generic plan (a predicate a generic plan cannot prove would scan every entry)."""
    with engine.connect() as connection:
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        connection.exec_driver_sql("SET enable_seqscan = off")
        connection.exec_driver_sql(
            "PREPARE reversal_of(uuid) AS SELECT id FROM journal_entries WHERE reverses_entry_id = $1")
        plan = "\n".join(connection.exec_driver_sql(
            "EXPLAIN EXECUTE reversal_of('00000000-0000-0000-0000-000000000000')").scalars())
        connection.exec_driver_sql("DEALLOCATE reversal_of")
    assert "journal_entries_reverses_entry_id_key" in plan, plan
