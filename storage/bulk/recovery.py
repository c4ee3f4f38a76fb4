"""The scheduler's queries: rows due for a retry, chunks whose lease expired."""
from __future__ import annotations

from typing import Any

from sqlalchemy import text

from storage.bulk.outcomes import REOPEN

_ACTIVITIES_WITH_DUE_ROWS = text("""
SELECT DISTINCT activity_id::text FROM bulk_rows
 WHERE status = 'FAILED' AND next_attempt_at <= now()
 LIMIT :limit
""")

# SKIP LOCKED: a chunk a worker is applying right now holds its row lock, and is not lost.
_RENEW_EXPIRED = text("""
UPDATE bulk_chunks SET leased_until = now() + make_interval(secs => :lease_s), sent_count = sent_count + 1
 WHERE id IN (SELECT id FROM bulk_chunks
               WHERE state = 'PENDING' AND coalesce(leased_until, '-infinity') < now()
               ORDER BY leased_until NULLS FIRST LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING id
""")


class RecoverySql:
    connection: Any

    def activities_with_due_rows(self, limit: int) -> list[str]:
        return self.connection.execute(_ACTIVITIES_WITH_DUE_ROWS, {"limit": limit}).scalars().all()

    def reopen_due_rows(self, activity_id: str, lease_s: int) -> tuple[int, list[int]]:
        reopened, chunk_ids = self.connection.execute(REOPEN, {
            "activity_id": activity_id, "lease_s": lease_s, "due_only": True}).one()
        return reopened, list(chunk_ids or [])

    def renew_expired_leases(self, lease_s: int, limit: int) -> list[int]:
        return sorted(self.connection.execute(_RENEW_EXPIRED, {"lease_s": lease_s, "limit": limit}).scalars().all())
