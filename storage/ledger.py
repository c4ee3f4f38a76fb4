"""Wallets, journal entries and postings, each written with one statement."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg.errors
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from pipeline.errors import AlreadyReversed, UserClosed
from pipeline.ledger import Posting, Wallet, WalletKey
from pipeline.ports import JournalEntry
from storage import driver

_CREATE_WALLETS = text("""
INSERT INTO wallets (user_id, system_name, shard, currency)
SELECT * FROM unnest(CAST(:user_ids AS uuid[]), CAST(:system_names AS text[]),
                     CAST(:shards AS smallint[]), CAST(:currencies AS char(3)[]))
ON CONFLICT DO NOTHING
""")

#: Wallets one movement touches at most (two users and a system shard) and users it names.
#: The two statements below take exactly this many keys, padded with NULLs, as scalar
#: parameters: with a fixed shape PostgreSQL's cached generic plan is the index plan, so
#: the statements are neither planned again on every call nor planned as scans of every
#: wallet (which is what a generic plan over arrays of unknown length turns into).
WALLETS_PER_MOVEMENT_MAX = 3
USERS_PER_MOVEMENT_MAX = 2

_KEYS = ", ".join(f"(CAST(:user_id_{n} AS uuid), CAST(:system_name_{n} AS text), CAST(:shard_{n} AS smallint),"
                  f" CAST(:currency_{n} AS char(3)))" for n in range(WALLETS_PER_MOVEMENT_MAX))
_USERS = ", ".join(f"CAST(:known_user_id_{n} AS uuid)" for n in range(USERS_PER_MOVEMENT_MAX))

# One round trip for two questions: which users exist, and the wallets a movement may credit
# for the first time, created unless they exist already (most do: an index probe, and no
# sequence value spent) or belong to a user who does not exist (no foreign key error: the
# caller reports the unknown user instead) or is closed (the caller reports that).
_KNOWN_USERS_CREATING_WALLETS = driver.statement(f"""
WITH known AS (
    SELECT id, closed_at FROM users WHERE id IN ({_USERS})
), created AS (
    INSERT INTO wallets (user_id, system_name, shard, currency)
    SELECT k.user_id, k.system_name, k.shard, k.currency
      FROM (VALUES {_KEYS}) AS k(user_id, system_name, shard, currency)
     WHERE k.currency IS NOT NULL
       AND (k.user_id IS NULL OR k.user_id IN (SELECT id FROM known WHERE closed_at IS NULL))
       AND NOT EXISTS (SELECT 1 FROM wallets w
                        WHERE w.currency = k.currency
                          AND (w.user_id = k.user_id OR (w.system_name = k.system_name AND w.shard = k.shard)))
    ON CONFLICT DO NOTHING
)
SELECT id::text FROM known
""")

# ORDER BY before FOR UPDATE: rows are locked in ascending id order, so two movements
# over the same wallets always queue instead of deadlocking.
_LOCK_WALLETS = driver.statement(f"""
SELECT w.id, w.user_id::text, w.system_name, w.shard, w.currency, w.balance, w.held, w.status
  FROM wallets w
 WHERE w.id IN (SELECT found.id
                  FROM (VALUES {_KEYS}) AS k(user_id, system_name, shard, currency)
                  JOIN wallets found
                    ON found.currency = k.currency
                   AND (found.user_id = k.user_id OR (found.system_name = k.system_name AND found.shard = k.shard)))
 ORDER BY w.id
   FOR UPDATE OF w
""")

_RECORD = driver.statement("""
WITH entry AS (
    INSERT INTO journal_entries (id, kind, idempotency_key, currency, amount, fee,
                                 from_user_id, to_user_id, reference, activity_id, funding_account, reverses_entry_id)
    VALUES (:id, :kind, :idempotency_key, :currency, :amount, :fee,
            :from_user_id, :to_user_id, :reference, :activity_id, :funding_account, :reverses_entry_id)
    RETURNING created_at
), posted AS (
    INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)
    SELECT :id, * FROM unnest(CAST(:wallet_ids AS bigint[]), CAST(:currencies AS char(3)[]),
                              CAST(:amounts AS bigint[]), CAST(:balances AS bigint[]))
), moved AS (
    UPDATE wallets w SET balance = w.balance + d.delta, version = w.version + 1, updated_at = now()
      FROM (SELECT wallet_id, sum(amount) AS delta
              FROM unnest(CAST(:wallet_ids AS bigint[]), CAST(:amounts AS bigint[])) AS p(wallet_id, amount)
             GROUP BY wallet_id) d
     WHERE w.id = d.wallet_id
       -- Redundant, but it keeps PostgreSQL's cached generic plan on the primary key instead
       -- of a scan of every wallet (the plan cannot see how short the arrays are).
       AND w.id = ANY(CAST(:wallet_ids AS bigint[]))
)
SELECT created_at FROM entry
""")

_HISTORY = text("""
SELECT p.id AS posting_id, j.id::text AS id, j.kind, p.amount AS posted, j.amount, j.fee,
       p.currency, p.balance_after, j.from_user_id::text, j.to_user_id::text,
       coalesce(j.reference, b.reference) AS reference, j.activity_id::text, p.bulk_row_id, p.created_at
  FROM postings p JOIN journal_entries j ON j.id = p.journal_entry_id
  -- A bulk credit's journal entry covers a chunk; the row carries the sender's own reference.
  LEFT JOIN bulk_rows b ON b.id = p.bulk_row_id
 WHERE p.wallet_id IN (SELECT id FROM wallets WHERE user_id = :user_id
                          AND (CAST(:currency AS text) IS NULL OR currency = :currency))
   AND (CAST(:before_id AS bigint) IS NULL OR p.id < :before_id)
 ORDER BY p.id DESC
 LIMIT :limit
""")


# A `user:` key's view of an entry keeps only the postings on that user's wallets: the other
# side of a transfer (its wallet id, its balance_after) is the other user's business.
_ENTRY_POSTINGS_SCOPE = """
  FROM postings p JOIN wallets w ON w.id = p.wallet_id
 WHERE p.journal_entry_id = :id
   AND (CAST(:user_id AS uuid) IS NULL OR w.user_id = CAST(:user_id AS uuid))
"""
_ENTRY_POSTINGS_TOTAL = text(f"SELECT count(*), coalesce(sum(p.amount), 0) {_ENTRY_POSTINGS_SCOPE}")
_ENTRY_POSTINGS = text(f"""
SELECT p.id, p.wallet_id, w.user_id::text, w.system_name, p.currency, p.amount, p.balance_after,
       p.bulk_row_id, p.created_at
{_ENTRY_POSTINGS_SCOPE}
   AND (CAST(:after_id AS bigint) IS NULL OR p.id > :after_id)
 ORDER BY p.id
 LIMIT :limit
""")


def _padded_keys(keys: list[WalletKey]) -> dict[str, Any]:
    assert len(keys) <= WALLETS_PER_MOVEMENT_MAX, f"a movement touches at most {WALLETS_PER_MOVEMENT_MAX} wallets"
    padded = list(keys) + [None] * (WALLETS_PER_MOVEMENT_MAX - len(keys))
    parameters = {}
    for n, key in enumerate(padded):
        parameters.update({f"user_id_{n}": key and key.user_id, f"system_name_{n}": key and key.system_name,
                           f"shard_{n}": key and key.shard, f"currency_{n}": key and key.currency})
    return parameters


def _key_arrays(keys: list[WalletKey]) -> dict[str, list]:
    return {
        "user_ids": [key.user_id for key in keys],
        "system_names": [key.system_name for key in keys],
        "shards": [key.shard for key in keys],
        "currencies": [key.currency for key in keys],
    }


class SqlLedger:
    def __init__(self, connection: Connection):
        self.connection = connection

    def known_users_creating_wallets(self, user_ids: list[str], create: list[WalletKey]) -> set[str]:
        assert len(user_ids) <= USERS_PER_MOVEMENT_MAX, f"a movement names at most {USERS_PER_MOVEMENT_MAX} users"
        padded = list(user_ids) + [None] * (USERS_PER_MOVEMENT_MAX - len(user_ids))
        users = {f"known_user_id_{n}": user_id for n, user_id in enumerate(padded)}
        try:
            rows = driver.execute(self.connection, _KNOWN_USERS_CREATING_WALLETS, {**users, **_padded_keys(create)})
        except DBAPIError as error:
            # A close committed while this statement waited for the user's row (migration 0015).
            if isinstance(error.orig, psycopg.errors.CheckViolation) and "closed user" in str(error.orig):
                raise UserClosed("the user is closed: no money moves for them any more") from error
            raise
        return {row[0] for row in rows}

    def lock_wallets(self, keys: list[WalletKey], create: list[WalletKey] = ()) -> dict[WalletKey, Wallet]:
        if create:
            self.connection.execute(_CREATE_WALLETS, _key_arrays(create))
        rows = driver.execute(self.connection, _LOCK_WALLETS, _padded_keys(keys))
        wallets = {}
        for wallet_id, user_id, system_name, shard, currency, balance, held, status in rows:
            key = WalletKey(currency, user_id, system_name, shard if system_name else 0)
            wallets[key] = Wallet(wallet_id, key, balance, held, status)
        return wallets

    def record(self, entry: JournalEntry, postings: list[Posting]) -> datetime:
        """Writes the entry and its postings and moves the balances. Raises AlreadyReversed when
        `entry.reverses_entry_id` was reversed already (its UNIQUE key, behind the use case's check)."""
        try:
            return self._record(entry, postings)
        except IntegrityError as error:
            if entry.reverses_entry_id is not None and "reverses_entry_id" in str(error.orig):
                raise AlreadyReversed(f"transaction {entry.reverses_entry_id} is already reversed") from error
            raise

    def _record(self, entry: JournalEntry, postings: list[Posting]) -> datetime:
        ((created_at,),) = driver.execute(self.connection, _RECORD, {
            **vars(entry),
            "wallet_ids": [posting.wallet_id for posting in postings],
            "currencies": [posting.currency for posting in postings],
            "amounts": [posting.amount for posting in postings],
            "balances": [posting.balance_after for posting in postings],
        }).fetchall()
        return created_at

    def entry(self, entry_id: str) -> dict[str, Any] | None:
        row = self.connection.execute(
            text("SELECT id::text, kind, currency, amount, fee, from_user_id::text, to_user_id::text,"
                 " reference, activity_id::text, created_at, reverses_entry_id::text AS reverses,"
                 " (SELECT r.id::text FROM journal_entries r WHERE r.reverses_entry_id = j.id) AS reversed_by"
                 " FROM journal_entries j WHERE id = :id"),
            {"id": entry_id},
        ).mappings().one_or_none()
        return dict(row) if row else None

    def entry_wallets(self, entry_id: str, limit: int) -> list[tuple[WalletKey, int]]:
        rows = self.connection.execute(text(
            "SELECT w.currency, w.user_id::text, w.system_name, w.shard, coalesce(w.funding_account,"
            " w.activity_id::text), p.amount FROM postings p JOIN wallets w ON w.id = p.wallet_id"
            " WHERE p.journal_entry_id = :id ORDER BY p.id LIMIT :limit"), {"id": entry_id, "limit": limit})
        return [(WalletKey(currency.strip(), user_id, system_name, shard if system_name else 0, owner), amount)
                for currency, user_id, system_name, shard, owner, amount in rows]

    def reversal_of(self, entry_id: str) -> str | None:
        return self.connection.execute(text("SELECT id::text FROM journal_entries WHERE reverses_entry_id = :id"),
                                       {"id": entry_id}).scalar_one_or_none()

    def entry_postings(self, entry_id: str, user_id: str | None, after_id: int | None,
                       limit: int) -> tuple[int, int, list[dict[str, Any]]]:
        """(count, signed sum, up to `limit` postings after `after_id` in id order) of the entry's
        postings, only those on `user_id`'s wallets when given. An entry's postings never change
        once written, so a count and the pages read later in other transactions agree."""
        scope = {"id": entry_id, "user_id": user_id}
        total, amount = self.connection.execute(_ENTRY_POSTINGS_TOTAL, scope).one()
        rows = self.connection.execute(_ENTRY_POSTINGS, {**scope, "after_id": after_id, "limit": limit})
        return total, int(amount), [dict(row) for row in rows.mappings()]

    def wallets_of(self, user_id: str) -> list[dict[str, Any]]:
        rows = self.connection.execute(
            text("SELECT currency, balance, held, status, updated_at FROM wallets"
                 " WHERE user_id = :user_id ORDER BY currency"),
            {"user_id": user_id},
        )
        return [dict(row) for row in rows.mappings()]

    def balance(self, user_id: str, currency: str) -> int:
        balance = self.connection.execute(
            text("SELECT balance FROM wallets WHERE user_id = :user_id AND currency = :currency"),
            {"user_id": user_id, "currency": currency},
        ).scalar_one_or_none()
        return balance or 0

    def balance_and_held(self, user_id: str, currency: str) -> tuple[int, int]:
        """(balance, held) of the user's wallet in `currency`, in minor units; (0, 0) without one."""
        row = self.connection.execute(
            text("SELECT balance, held FROM wallets WHERE user_id = :user_id AND currency = :currency"),
            {"user_id": user_id, "currency": currency},
        ).one_or_none()
        return (row[0], row[1]) if row else (0, 0)

    def closed_users(self, user_ids: list[str]) -> set[str]:
        """Which of `user_ids` are closed."""
        rows = self.connection.execute(
            text("SELECT id::text FROM users WHERE id = ANY(CAST(:ids AS uuid[])) AND closed_at IS NOT NULL"),
            {"ids": user_ids})
        return {row[0] for row in rows}

    def history(self, user_id: str, currency: str | None, limit: int, before_id: int | None) -> list[dict[str, Any]]:
        rows = self.connection.execute(
            _HISTORY, {"user_id": user_id, "currency": currency, "limit": limit, "before_id": before_id}
        )
        return [dict(row) for row in rows.mappings()]
