"""Activities and row outcomes, read by primary key or by keyset over (activity_id, row_number)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import text

from pipeline.bulk.ports import Activity, CurrencyTotal
from pipeline.bulk.status import Counters

ACTIVITY_COLUMNS = """id::text, status, content_sha256, created_at, started_at, completed_at, next_retry_at,
    failed_chunks, last_chunk_error, funding_account, reservation_shards, cancel_requested_at IS NOT NULL,
    api_key_id, approved_by, execute_at, file_name, (
        SELECT json_agg(json_build_array(currency, valid, credited, failed, cancelled) ORDER BY currency)
          FROM (SELECT t.currency, sum(t.valid_amount) AS valid, sum(t.credited_amount) AS credited,
                       sum(t.failed_amount) AS failed, sum(t.cancelled_amount) AS cancelled
                  FROM bulk_activity_totals t WHERE t.activity_id = bulk_activities.id
                 GROUP BY t.currency) per_currency),
    kind, reverses_activity_id::text,
    total_records, valid_records, invalid_records, successful_records, failed_records, pending_records,
    cancelled_records"""

# The posting of a SUCCESS row: postings.bulk_row_id is UNIQUE, so the join is one index probe
# per row read and never multiplies rows.
_ROWS = text("""
SELECT r.row_number, r.user_id::text AS user_id, r.amount_minor, r.currency, r.reference, r.raw, r.status,
       r.error_code, r.error_message, r.attempts, r.journal_entry_id::text AS transaction_id, p.id AS posting_id,
       c.reversal_activity_id::text AS reversed_by_activity_id, reverser.row_number AS reversed_by_row_number,
       reverser.status AS reversed_by_status
  FROM bulk_rows r
  LEFT JOIN postings p ON p.bulk_row_id = r.id
  -- The reversal row holding this credit row, if any (primary key probes, as the posting's).
  LEFT JOIN bulk_reversal_claims c ON c.credit_row_id = r.id
  LEFT JOIN bulk_rows reverser ON reverser.id = c.reversal_row_id
 WHERE r.activity_id = :activity_id AND r.row_number > :after
   AND (CAST(:status AS text) IS NULL OR r.status = :status)
 ORDER BY r.row_number
 LIMIT :limit
""")


def activity_from(row) -> Activity:
    (activity_id, status, content_sha256, created_at, started_at, completed_at, next_retry_at, failed_chunks,
     last_chunk_error, funding_account, reservation_shards, cancel_requested, uploaded_by, approved_by, execute_at,
     file_name, totals, kind, reverses, *counts) = row
    return Activity(activity_id, status, Counters(*counts), content_sha256, created_at, started_at, completed_at,
                    next_retry_at, failed_chunks, last_chunk_error, funding_account, reservation_shards,
                    cancel_requested, uploaded_by, approved_by, execute_at, file_name,
                    tuple(CurrencyTotal(currency.strip(), *map(int, amounts)) for currency, *amounts in totals or ()),
                    kind, reverses)


#: The filters of the activity list, each a fragment over parameters of the same name.
_LIST_FILTERS = {
    "statuses": "status = ANY(:statuses)",
    # Both sides lower-cased by PostgreSQL: Python's lower() differs for some letters (İ).
    "file_name": "lower(file_name) LIKE '%' || lower(:file_name) || '%' ESCAPE '\\'",
    "created_after": "created_at >= :created_after",
    "created_before": "created_at < :created_before",
}


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

    def list_activities(self, filters: dict[str, Any], before_seq: int | None,
                        limit: int) -> list[tuple[int, Activity]]:
        """Activities newest first (by creation time, then `seq`), with only the filters given: a
        statement per combination, so that each plan uses the index its filter has (migrations
        0017, 0028). `before_seq` is the last activity of the previous page.
        `filters["file_name"]` is a part of the name in any case, LIKE's wildcards escaped."""
        where = [_LIST_FILTERS[name] for name in _LIST_FILTERS if filters.get(name) is not None]
        if before_seq is not None:
            where.append("(created_at, seq) < (SELECT c.created_at, c.seq FROM bulk_activities c"
                         " WHERE c.seq = :before_seq)")
        rows = self.connection.execute(text(
            f"SELECT seq, {ACTIVITY_COLUMNS} FROM bulk_activities"
            f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY created_at DESC, seq DESC LIMIT :limit"),
            {**filters, "before_seq": before_seq, "limit": limit}).all()
        return [(row[0], activity_from(row[1:])) for row in rows]

    def lock_activity(self, activity_id: str) -> Activity | None:
        return self._one_activity("id = :id", {"id": activity_id}, lock=True)

    def find_by_idempotency_key(self, api_key_id: int | None, key: str) -> Activity | None:
        return self._one_activity("coalesce(api_key_id, 0) = :api_key_id AND idempotency_key = :key",
                                  {"api_key_id": api_key_id or 0, "key": key})

    def find_by_content(self, content_sha256: str) -> Activity | None:
        return self._one_activity("content_sha256 = :sha AND NOT allow_duplicate_content", {"sha": content_sha256})

    def row_columns(self, activity_id: str) -> list[str] | None:
        """The activity's header columns ([] if stored before they were), or None when there is no such activity."""
        row = self.connection.execute(text("SELECT coalesce(columns, '{}') FROM bulk_activities WHERE id = :id"),
                                      {"id": activity_id}).one_or_none()
        return None if row is None else list(row[0])

    def rows(self, activity_id: str, status: str | None, after_row_number: int, limit: int) -> list[dict[str, Any]]:
        result = self.connection.execute(_ROWS, {"activity_id": activity_id, "status": status,
                                                 "after": after_row_number, "limit": limit})
        return [dict(row) for row in result.mappings()]

