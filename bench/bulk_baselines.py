"""The two references the bulk-credit benchmark compares itself with.

- `floor`: what PostgreSQL can do at best for the same ledger writes: one transaction that
  COPYs one posting per row (plus the funding debit) and moves every balance with one
  UPDATE ... FROM. No validation, no row outcomes, no chunking: a lower bound on time.
- `naive`: the seed's shape, one database transaction per row through the SQLAlchemy ORM
  (lock the wallet, lock the funding wallet, add a journal entry and two postings, update
  two balances, commit), with 2 threads as we have 2 worker processes.

Both write real, balanced journal entries, so the ledger invariants still hold afterwards.
"""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
from sqlalchemy import BigInteger, String, create_engine, select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.ledger_checks import libpq_url

CURRENCY = "SGD"
#: What each reference credits per row, in minor units.
AMOUNT_MINOR = 1
NAIVE_THREADS = 2


def floor(database_url: str, users: list[str]) -> dict:
    with psycopg.connect(libpq_url(database_url)) as connection:
        wallets = connection.execute(
            "SELECT id, balance FROM wallets WHERE user_id = ANY(%s::uuid[]) AND currency = %s",
            (users, CURRENCY)).fetchall()
        funding_id, funding_balance = _funding_wallet(connection)
        connection.commit()
        entry_id = uuid.uuid4()
        started = time.monotonic()
        with connection.transaction():
            connection.execute("INSERT INTO journal_entries (id, kind, currency, amount, metadata)"
                               " VALUES (%s, 'bulk_credit', %s, %s, '{\"benchmark\": \"floor\"}')",
                               (entry_id, CURRENCY, AMOUNT_MINOR * len(wallets)))
            with connection.cursor().copy("COPY postings (journal_entry_id, wallet_id, currency, amount,"
                                          " balance_after) FROM STDIN") as copy:
                for wallet_id, balance in wallets:
                    copy.write_row((entry_id, wallet_id, CURRENCY, AMOUNT_MINOR, balance + AMOUNT_MINOR))
                copy.write_row((entry_id, funding_id, CURRENCY, -AMOUNT_MINOR * len(wallets),
                                funding_balance - AMOUNT_MINOR * len(wallets)))
            connection.execute(
                "UPDATE wallets w SET balance = w.balance + d.delta, version = w.version + 1"
                "  FROM (SELECT wallet_id, sum(amount) AS delta FROM postings WHERE journal_entry_id = %s"
                "        GROUP BY wallet_id) d WHERE w.id = d.wallet_id", (entry_id,))
        seconds = time.monotonic() - started
    print(f"  floor: {len(wallets):,} postings in {seconds:.1f} s, {len(wallets) / seconds:,.0f} rows/s", flush=True)
    return {"rows": len(wallets), "seconds": seconds, "rate_per_s": len(wallets) / seconds}


def _funding_wallet(connection) -> tuple[int, int]:
    connection.execute("INSERT INTO wallets (system_name, shard, currency) VALUES ('bulk_funding', 0, %s)"
                       " ON CONFLICT DO NOTHING", (CURRENCY,))
    return connection.execute("SELECT id, balance FROM wallets WHERE system_name = 'bulk_funding' AND shard = 0"
                              " AND currency = %s", (CURRENCY,)).fetchone()


class Base(DeclarativeBase):
    pass


class Wallet(Base):
    __tablename__ = "wallets"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    system_name: Mapped[str | None] = mapped_column(String)
    shard: Mapped[int] = mapped_column()
    currency: Mapped[str] = mapped_column(String)
    balance: Mapped[int] = mapped_column(BigInteger)


class JournalEntry(Base):
    __tablename__ = "journal_entries"
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    currency: Mapped[str] = mapped_column(String)
    amount: Mapped[int] = mapped_column(BigInteger)


class Posting(Base):
    __tablename__ = "postings"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    journal_entry_id: Mapped[uuid.UUID] = mapped_column(UUID)
    wallet_id: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String)
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)


def _credit_one(engine, user_id: str) -> None:
    with Session(engine) as session, session.begin():
        wallet = session.scalars(select(Wallet).where(Wallet.user_id == user_id, Wallet.currency == CURRENCY)
                                 .with_for_update()).one()
        funding = session.scalars(select(Wallet).where(Wallet.system_name == "bulk_funding", Wallet.shard == 0,
                                                       Wallet.currency == CURRENCY).with_for_update()).one()
        entry = JournalEntry(id=uuid.uuid4(), kind="bulk_credit", currency=CURRENCY, amount=AMOUNT_MINOR)
        session.add(entry)
        session.flush()
        wallet.balance += AMOUNT_MINOR
        funding.balance -= AMOUNT_MINOR
        session.add_all([
            Posting(journal_entry_id=entry.id, wallet_id=wallet.id, currency=CURRENCY, amount=AMOUNT_MINOR,
                    balance_after=wallet.balance),
            Posting(journal_entry_id=entry.id, wallet_id=funding.id, currency=CURRENCY, amount=-AMOUNT_MINOR,
                    balance_after=funding.balance),
        ])


def naive(database_url: str, users: list[str]) -> dict:
    engine = create_engine(database_url, pool_size=NAIVE_THREADS, max_overflow=0)
    try:
        with psycopg.connect(libpq_url(database_url)) as connection:
            _funding_wallet(connection)
        started = time.monotonic()
        with ThreadPoolExecutor(NAIVE_THREADS) as pool:
            list(pool.map(lambda user: _credit_one(engine, user), users))
        seconds = time.monotonic() - started
    finally:
        engine.dispose()
    print(f"  naive: {len(users):,} rows in {seconds:.1f} s, {len(users) / seconds:,.0f} rows/s", flush=True)
    return {"rows": len(users), "seconds": seconds, "rate_per_s": len(users) / seconds, "threads": NAIVE_THREADS}
