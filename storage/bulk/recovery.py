"""The scheduler's queries: rows due for a retry, rows out of retries, chunks whose lease expired."""
from __future__ import annotations

from typing import Any

from sqlalchemy import text

from storage.bulk.apply import REOPEN

_ACTIVITIES_WITH_DUE_ROWS = text("""
SELECT DISTINCT activity_id::text FROM bulk_rows
 WHERE status = 'FAILED' AND next_attempt_at <= now()
 LIMIT :limit
""")

# Rows that have used up their attempts leave the retry index (next_attempt_at NULL).
_EXHAUST = text("""
UPDATE bulk_rows SET error_code = :code, next_attempt_at = NULL, updated_at = now(),
       error_message = 'failed ' || attempts || ' times: ' || coalesce(error_message, error_code)
 WHERE activity_id = :activity_id AND status = 'FAILED' AND next_attempt_at IS NOT NULL AND attempts >= :attempts_max
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

    def exhaust_rows(self, activity_id: str, attempts_max: int, code: str) -> int:
        return self.connection.execute(_EXHAUST, {"activity_id": activity_id, "attempts_max": attempts_max,
                                                  "code": code}).rowcount

    def reopen_due_rows(self, activity_id: str, attempts_max: int, lease_s: int) -> tuple[int, list[int]]:
        reopened, chunk_ids = self.connection.execute(REOPEN, {
            "activity_id": activity_id, "attempts_max": attempts_max, "lease_s": lease_s, "due_only": True}).one()
        return reopened, list(chunk_ids or [])

    def renew_expired_leases(self, lease_s: int, limit: int) -> list[int]:
        return sorted(self.connection.execute(_RENEW_EXPIRED, {"lease_s": lease_s, "limit": limit}).scalars().all())
