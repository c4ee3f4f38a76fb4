"""Ledger invariants, checked with raw SQL after a benchmark has hammered the database.

They bypass the application on purpose: if the code under load lost an update or wrote an
unbalanced journal entry, these queries see it whatever the code believes.
"""
from __future__ import annotations

import psycopg

#: Name of each invariant, and a query counting the rows that break it.
INVARIANTS = {
    "journal entries whose postings do not sum to zero per currency": """
        SELECT count(*) FROM (SELECT journal_entry_id FROM postings
                               GROUP BY journal_entry_id, currency HAVING sum(amount) <> 0) unbalanced""",
    "journal entries without postings": """
        SELECT count(*) FROM journal_entries j
         WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.journal_entry_id = j.id)""",
    "wallets whose balance differs from the sum of their postings": """
        SELECT count(*) FROM wallets w
          LEFT JOIN (SELECT wallet_id, sum(amount) AS total FROM postings GROUP BY wallet_id) p
                 ON p.wallet_id = w.id
         WHERE w.balance <> coalesce(p.total, 0)""",
    "user wallets below zero": "SELECT count(*) FROM wallets WHERE user_id IS NOT NULL AND balance < 0",
}

#: Postings of one wallet whose balance_after is not the running sum of its postings in id
#: order: a lost update on a hot wallet shows up here even when the final balance is right.
RUNNING_BALANCE_BREAKS = """
SELECT count(*) FROM (
    SELECT balance_after, sum(amount) OVER (ORDER BY id) AS running
      FROM postings WHERE wallet_id = %(wallet_id)s
) chain WHERE balance_after <> running
"""


def libpq_url(database_url: str) -> str:
    """SQLAlchemy's `postgresql+psycopg://` URL as libpq spells it."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def violations(database_url: str) -> dict[str, int]:
    """Each invariant's name and how many rows break it (0 everywhere when the ledger is sound)."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        return {name: connection.execute(query).fetchone()[0] for name, query in INVARIANTS.items()}


def running_balance_breaks(database_url: str, wallet_id: int) -> int:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        return connection.execute(RUNNING_BALANCE_BREAKS, {"wallet_id": wallet_id}).fetchone()[0]
