"""The event outbox (`uow.events`): the rows the trigger of migration 0005 writes, read in id order
with the facts of their postings, and deleted once published."""
from __future__ import annotations

from sqlalchemy import Connection, text

from pipeline.events import OutboxRow

#: The publisher's transaction-scoped advisory lock: any constant no other part of the project
#: uses (storage.migrate takes 7472010, the scheduler's leadership 7472011).
PUBLISHER_LOCK_KEY = 7472012

_PENDING = text("""
SELECT o.id, p.id, w.user_id::text, j.kind, p.amount, j.amount, j.fee, p.currency, p.balance_after,
       j.id::text, j.from_user_id::text, j.to_user_id::text, coalesce(r.reference, j.reference),
       j.activity_id::text, r.row_number, p.created_at
  FROM (SELECT id, posting_id FROM event_outbox ORDER BY id LIMIT :limit) o
  JOIN postings p ON p.id = o.posting_id
  JOIN wallets w ON w.id = p.wallet_id
  JOIN journal_entries j ON j.id = p.journal_entry_id
  LEFT JOIN bulk_rows r ON r.id = p.bulk_row_id
 ORDER BY o.id
""")


class SqlEventOutbox:
    def __init__(self, connection: Connection):
        self.connection = connection

    def take_publisher_lock(self) -> bool:
        return self.connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"),
                                       {"key": PUBLISHER_LOCK_KEY}).scalar_one()

    def pending(self, limit: int) -> list[OutboxRow]:
        return [OutboxRow(*row) for row in self.connection.execute(_PENDING, {"limit": limit})]

    def remove(self, outbox_ids: list[int]) -> int:
        return self.connection.execute(text("DELETE FROM event_outbox WHERE id = ANY(CAST(:ids AS bigint[]))"),
                                       {"ids": outbox_ids}).rowcount
