"""Releasing and cancelling an activity: what it needs reserved, and the rows a cancel ends."""
from __future__ import annotations

from typing import Any

from sqlalchemy import text

#: How long a cancel waits for the chunks being applied to finish, in milliseconds.
CANCEL_WAIT_MS = 60_000

# A released activity's reservation is sharded by chunk number, like its chunks' debits. One
# pass over the rows gives the chunks and their totals (one row per chunk and currency, so at
# most BULK_CREDIT_MAX_ROWS / BULK_CREDIT_CHUNK_ROWS per currency); counting the chunks in a
# second pass cost as much again (about 0.5 s at 1,000,000 rows).
_CHUNK_TOTALS = text("""
SELECT currency, chunk_number, sum(amount_minor)
  FROM bulk_rows WHERE activity_id = :activity_id AND status = 'PENDING'
 GROUP BY currency, chunk_number
""")

_DUE_SCHEDULED = text("""
SELECT id::text FROM bulk_activities
 WHERE status = 'SCHEDULED' AND execute_at <= now() AND cancel_requested_at IS NULL
 ORDER BY execute_at LIMIT :limit
""")

# The longest untried first, so that files no top-up can release never hold the others back.
_AWAITING_FUNDS = text("""
SELECT id::text FROM bulk_activities WHERE status = 'AWAITING_FUNDS' AND cancel_requested_at IS NULL
 ORDER BY release_tried_at NULLS FIRST, created_at LIMIT :limit
""")

# Every chunk of the activity still to run, locked in id order (as chunk transactions lock
# theirs first): a chunk being applied finishes before the cancel goes on.
_LOCK_CHUNKS = text("""
SELECT count(*) FROM (SELECT id FROM bulk_chunks WHERE activity_id = :activity_id ORDER BY id FOR UPDATE) locked
""")

# A cancelled (or rejected) row was never paid: its reference goes back to the funding
# account, so that a corrected file may use the sender's own row ids again. Only the row's
# own claim is given back (activity and row number), each by the table's primary key.
_CANCEL_ROWS = text("""
WITH cancelled AS (
    UPDATE bulk_rows SET status = 'CANCELLED', next_attempt_at = NULL, updated_at = now(),
           error_code = :code, error_message = left(:code || ': ' || :reason, 500)
     WHERE activity_id = :activity_id AND status IN ('PENDING', 'FAILED')
    RETURNING currency, chunk_number, amount_minor, status, reference, row_number
), released AS (
    DELETE FROM bulk_references b USING cancelled c
     WHERE b.funding_account = (SELECT funding_account FROM bulk_activities WHERE id = :activity_id)
       AND b.reference = c.reference AND b.activity_id = :activity_id AND b.row_number = c.row_number
)
SELECT currency, chunk_number % :shards AS shard, sum(amount_minor), count(*) FROM cancelled
 GROUP BY currency, chunk_number % :shards ORDER BY currency, shard
""")

_COUNT_BY_STATUS = text("""
SELECT status, count(*) FROM bulk_rows WHERE activity_id = :activity_id AND status IN ('PENDING', 'FAILED')
 GROUP BY status
""")


class ReleaseSql:
    connection: Any

    def pending_totals(self, activity_id: str, shards_max: int) -> tuple[int, list[tuple[str, int, int]]]:
        """(shards, [(currency, shard, amount in minor units)]) for the PENDING rows: one shard
        per chunk up to `shards_max`."""
        per_chunk = self.connection.execute(_CHUNK_TOTALS, {"activity_id": activity_id}).all()
        shards = max(1, min(shards_max, len({chunk for _, chunk, _ in per_chunk})))
        totals: dict[tuple[str, int], int] = {}
        for currency, chunk, amount in per_chunk:
            key = (currency.strip(), chunk % shards)
            totals[key] = totals.get(key, 0) + amount
        return shards, [(currency, shard, amount) for (currency, shard), amount in sorted(totals.items())]

    def mark_released(self, activity_id: str, shards: int) -> None:
        self.connection.execute(text("UPDATE bulk_activities SET reservation_shards = :shards WHERE id = :id"),
                                {"id": activity_id, "shards": shards})

    def due_scheduled(self, limit: int) -> list[str]:
        return self.connection.execute(_DUE_SCHEDULED, {"limit": limit}).scalars().all()

    def mark_approved(self, activity_id: str, api_key_id: int | None) -> None:
        self.connection.execute(text("UPDATE bulk_activities SET approved_by = :key, approved_at = now()"
                                     " WHERE id = :id"), {"id": activity_id, "key": api_key_id})

    def set_execute_at(self, activity_id: str, execute_at) -> None:
        self.connection.execute(text("UPDATE bulk_activities SET execute_at = :at WHERE id = :id"),
                                {"id": activity_id, "at": execute_at})

    def awaiting_funds(self, limit: int) -> list[str]:
        return self.connection.execute(_AWAITING_FUNDS, {"limit": limit}).scalars().all()

    def note_release_tried(self, activity_id: str) -> None:
        self.connection.execute(text("UPDATE bulk_activities SET release_tried_at = now() WHERE id = :id"),
                                {"id": activity_id})

    def serialize_cancels(self, activity_id: str) -> None:
        """Two cancels of one activity take turns (an activity not yet released has no chunk
        rows to lock): a transaction-scoped advisory lock on its id."""
        self.connection.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:id, 9))"), {"id": activity_id})

    def request_cancel(self, activity_id: str, reason: str) -> None:
        self.connection.execute(text(
            "UPDATE bulk_activities SET cancel_requested_at = coalesce(cancel_requested_at, now()),"
            " cancel_reason = coalesce(cancel_reason, :reason) WHERE id = :id"), {"id": activity_id, "reason": reason})

    def lock_chunks(self, activity_id: str) -> int:
        # Waiting for a chunk being applied is expected here, and a chunk of 50,000 rows
        # takes seconds on a busy machine: a wait longer than LOCK_TIMEOUT_MS, bounded.
        self.connection.exec_driver_sql(f"SET LOCAL lock_timeout = {CANCEL_WAIT_MS}")
        return self.connection.execute(_LOCK_CHUNKS, {"activity_id": activity_id}).scalar_one()

    def cancellable_rows(self, activity_id: str) -> dict[str, int]:
        return dict(self.connection.execute(_COUNT_BY_STATUS, {"activity_id": activity_id}).all())

    def cancel_rows(self, activity_id: str, shards: int, reason: str,
                    code: str = "cancelled") -> list[tuple[str, int, int]]:
        """Ends every PENDING and FAILED row CANCELLED; [(currency, shard, amount)] they had reserved."""
        rows = self.connection.execute(_CANCEL_ROWS, {"activity_id": activity_id, "shards": shards,
                                                      "reason": reason, "code": code}).all()
        return [(currency.strip(), shard, amount) for currency, shard, amount, _ in rows]

    def end_chunks(self, activity_id: str) -> None:
        self.connection.execute(text("UPDATE bulk_chunks SET state = 'CANCELLED', leased_until = NULL"
                                     " WHERE activity_id = :activity_id AND state = 'PENDING'"),
                                {"activity_id": activity_id})
