"""Activities and row outcomes, read by primary key or by keyset over (activity_id, row_number)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import text

from pipeline.bulk.ports import Activity
from pipeline.bulk.status import Counters

ACTIVITY_COLUMNS = """id::text, status, content_sha256, created_at, started_at, completed_at, next_retry_at,
    failed_chunks, last_chunk_error, total_records, valid_records, invalid_records, successful_records,
    failed_records, pending_records"""

_ROWS = text("""
SELECT row_number, coalesce(user_id::text, raw_user_id) AS user_id, amount_minor, raw_amount, currency, reference,
       status, error_code, error_message, attempts, journal_entry_id::text AS transaction_id
  FROM bulk_rows
 WHERE activity_id = :activity_id AND row_number > :after
   AND (CAST(:status AS text) IS NULL OR status = :status)
 ORDER BY row_number
 LIMIT :limit
""")


def activity_from(row) -> Activity:
    (activity_id, status, content_sha256, created_at, started_at, completed_at, next_retry_at, failed_chunks,
     last_chunk_error, *counts) = row
    return Activity(activity_id, status, Counters(*counts), content_sha256, created_at, started_at, completed_at,
                    next_retry_at, failed_chunks, last_chunk_error)


class ReadSql:
    connection: Any

    def _one_activity(self, where: str, params: dict, lock: bool = False) -> Activity | None:
        row = self.connection.execute(
            text(f"SELECT {ACTIVITY_COLUMNS} FROM bulk_activities WHERE {where}" + (" FOR UPDATE" if lock else "")),
            params,
        ).one_or_none()
        return activity_from(row) if row else None

    def activity(self, activity_id: str) -> Activity | None:
        return self._one_activity("id = :id", {"id": activity_id})

    def recent_activities(self, limit: int) -> list[Activity]:
        # One row per uploaded file: a top-N sort of the whole table stays cheap.
        rows = self.connection.execute(
            text(f"SELECT {ACTIVITY_COLUMNS} FROM bulk_activities ORDER BY created_at DESC, id LIMIT :limit"),
            {"limit": limit},
        ).all()
        return [activity_from(row) for row in rows]

    def lock_activity(self, activity_id: str) -> Activity | None:
        return self._one_activity("id = :id", {"id": activity_id}, lock=True)

    def find_by_idempotency_key(self, api_key_id: int | None, key: str) -> Activity | None:
        return self._one_activity("coalesce(api_key_id, 0) = :api_key_id AND idempotency_key = :key",
                                  {"api_key_id": api_key_id or 0, "key": key})

    def find_by_content(self, content_sha256: str) -> Activity | None:
        return self._one_activity("content_sha256 = :sha", {"sha": content_sha256})

    def rows(self, activity_id: str, status: str | None, after_row_number: int, limit: int) -> list[dict[str, Any]]:
        result = self.connection.execute(_ROWS, {"activity_id": activity_id, "status": status,
                                                 "after": after_row_number, "limit": limit})
        return [dict(row) for row in result.mappings()]
