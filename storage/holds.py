"""The `holds` table and the `held` money of wallets (migration 0015)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, text

from pipeline.holds import EXPIRED, Hold

_COLUMNS = """h.id::text, h.wallet_id, h.user_id::text, h.currency, h.amount, h.status, h.reference, h.expires_at,
       h.created_at, h.decided_at, h.captured_amount, h.to_user_id::text, h.journal_entry_id::text"""

# The hold and the wallet's held money in one statement; the wallet is locked by the caller.
_ADD = text(f"""
WITH h AS (
    INSERT INTO holds (id, wallet_id, user_id, currency, amount, reference, idempotency_key, expires_at)
    VALUES (:id, :wallet_id, :user_id, :currency, :amount, :reference, :idempotency_key,
            now() + make_interval(secs => :expires_in_s))
    RETURNING *
), reserved AS (
    UPDATE wallets SET held = held + :amount, updated_at = now() WHERE id = :wallet_id RETURNING id
)
SELECT {_COLUMNS} FROM h, reserved
""")

_LOCK = text(f"SELECT {_COLUMNS}, h.expires_at <= statement_timestamp() FROM holds h WHERE h.id = :id FOR UPDATE")

_DECIDE = text(f"""
UPDATE holds h SET status = :status, decided_at = now(), captured_amount = :captured_amount,
       to_user_id = :to_user_id, journal_entry_id = :journal_entry_id
 WHERE h.id = :id AND h.status = 'held'
RETURNING {_COLUMNS}
""")

_RELEASE = text("UPDATE wallets SET held = held - :amount, updated_at = now() WHERE id = :wallet_id")

# Holds a capture or a void is deciding are skipped, not waited for (SKIP LOCKED); a hold decided
# since this statement's snapshot is re-checked on its newest version and left alone.
_EXPIRE = text(f"""
WITH due AS (
    SELECT id FROM holds
     WHERE status = 'held' AND expires_at <= coalesce(CAST(:now AS timestamptz), statement_timestamp())
     ORDER BY expires_at, id LIMIT :limit FOR UPDATE SKIP LOCKED
)
UPDATE holds h SET status = '{EXPIRED}', decided_at = now() FROM due WHERE h.id = due.id
RETURNING {_COLUMNS}
""")

# Wallets locked in ascending id order, like every movement, then released in one statement.
_LOCK_WALLETS = text("SELECT count(*) FROM (SELECT id FROM wallets WHERE id = ANY(CAST(:ids AS bigint[]))"
                     " ORDER BY id FOR UPDATE) locked")
_RELEASE_MANY = text("""
UPDATE wallets w SET held = w.held - r.amount, updated_at = now()
  FROM (SELECT wallet_id, sum(amount) AS amount
          FROM unnest(CAST(:ids AS bigint[]), CAST(:amounts AS bigint[])) AS r(wallet_id, amount)
         GROUP BY wallet_id) r
 WHERE w.id = r.wallet_id
""")


class SqlHolds:
    def __init__(self, connection: Connection):
        self.connection = connection

    def add(self, hold_id: str, wallet_id: int, user_id: str, currency: str, amount: int, reference: str | None,
            idempotency_key: str | None, expires_in_s: int) -> Hold:
        row = self.connection.execute(_ADD, {
            "id": hold_id, "wallet_id": wallet_id, "user_id": user_id, "currency": currency, "amount": amount,
            "reference": reference, "idempotency_key": idempotency_key, "expires_in_s": expires_in_s}).one()
        return Hold(*row)

    def lock(self, hold_id: str) -> tuple[Hold, bool] | None:
        """The hold, locked until the transaction ends, and whether it is past `expires_at`."""
        row = self.connection.execute(_LOCK, {"id": hold_id}).one_or_none()
        return (Hold(*row[:-1]), row[-1]) if row else None

    def get(self, hold_id: str) -> Hold | None:
        row = self.connection.execute(text(f"SELECT {_COLUMNS} FROM holds h WHERE h.id = :id"),
                                      {"id": hold_id}).one_or_none()
        return Hold(*row) if row else None

    def release(self, wallet_id: int, amount: int) -> None:
        """Takes `amount` off the wallet's held money; the wallet is locked by the caller."""
        assert self.connection.execute(_RELEASE, {"wallet_id": wallet_id, "amount": amount}).rowcount == 1

    def decide(self, hold_id: str, status: str, captured_amount: int | None = None, to_user_id: str | None = None,
               journal_entry_id: str | None = None) -> Hold:
        row = self.connection.execute(_DECIDE, {
            "id": hold_id, "status": status, "captured_amount": captured_amount, "to_user_id": to_user_id,
            "journal_entry_id": journal_entry_id}).one()  # the caller holds the row lock: it is still held
        return Hold(*row)

    def expire_due(self, now: datetime | None, limit: int) -> list[Hold]:
        """Expires up to `limit` open holds due at `now` (default: the database's clock) and
        releases their money; returns them."""
        holds = [Hold(*row) for row in self.connection.execute(_EXPIRE, {"now": now, "limit": limit})]
        if holds:
            ids = [hold.wallet_id for hold in holds]
            self.connection.execute(_LOCK_WALLETS, {"ids": ids})
            self.connection.execute(_RELEASE_MANY, {"ids": ids, "amounts": [hold.amount for hold in holds]})
        return holds
