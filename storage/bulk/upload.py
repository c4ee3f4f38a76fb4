"""Storing an upload: the activity, its rows by COPY, the checks that need the whole file,
and the chunk plan."""
from __future__ import annotations

import json
from typing import Any, Iterable

import psycopg.errors
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from pipeline.bulk.ports import DuplicateContent, DuplicateKey
from pipeline.bulk.rows import DUPLICATE_REFERENCE, UNKNOWN_USER, Row
from pipeline.bulk.status import SETTLED_STATUSES, ROW_INVALID, ROW_PENDING, Counters
from pipeline.errors import IdempotencyKeyInProgress

#: How long an upload waits for a concurrent upload of the same file or key to finish.
DUPLICATE_WAIT_MS = 120_000
#: How much later each chunk's lease ends than the one before, in seconds: the messages of a
#: large file wait in the queue behind each other, and a chunk still waiting its turn is not
#: lost. One second per chunk is about 4 times the time a chunk takes on this 2-core machine.
CHUNK_QUEUE_ALLOWANCE_S = 1.0

_COPY_ROWS = """COPY bulk_rows (activity_id, row_number, chunk_number, user_id, amount_minor, currency,
    reference, raw, status, error_code, error_message) FROM STDIN"""

_UNKNOWN_USERS = text("""
UPDATE bulk_rows r
   SET status = 'INVALID', error_code = :code, error_message = :message, chunk_number = NULL
 WHERE r.activity_id = :activity_id AND r.status = 'PENDING'
   AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id)
""")

# The first row with a reference keeps it; every later one is invalid and names that row.
_DUPLICATE_REFERENCES = text("""
UPDATE bulk_rows r
   SET status = 'INVALID', error_code = :code, chunk_number = NULL,
       error_message = 'reference ' || left(r.reference, 40) || ' is already used on row ' || d.first_row
  FROM (SELECT id, first_value(row_number) OVER same AS first_row, row_number() OVER same AS position
          FROM bulk_rows
         WHERE activity_id = :activity_id AND reference IS NOT NULL AND status <> 'INVALID'
        WINDOW same AS (PARTITION BY reference ORDER BY row_number)) d
 WHERE r.id = d.id AND d.position > 1
""")

_PLAN_CHUNKS = text("""
INSERT INTO bulk_chunks (activity_id, number, first_row_id, last_row_id, row_count, leased_until, sent_count)
SELECT :activity_id, chunk_number, min(id), max(id), count(*),
       now() + make_interval(secs => :lease_s + chunk_number * :allowance_s), 1
  FROM bulk_rows
 WHERE activity_id = :activity_id AND status = 'PENDING'
 GROUP BY chunk_number
RETURNING id, row_count
""")

_FINISH = text("""
UPDATE bulk_activities
   SET content_sha256 = :content_sha256, size_bytes = :size_bytes, status = :status,
       total_records = :total, valid_records = :valid, invalid_records = :invalid,
       successful_records = :successful, failed_records = :failed, pending_records = :pending,
       completed_at = CASE WHEN :final THEN now() END, updated_at = now()
 WHERE id = :activity_id
""")


def _copy_tuple(activity_id: str, row: Row, chunk_number: int | None) -> tuple:
    # The cells as a JSON array of strings; ensure_ascii=False since csv_records refused every
    # character PostgreSQL cannot store (NUL, lone surrogates) before this point.
    raw = None if row.cells is None else json.dumps(row.cells, ensure_ascii=False, separators=(",", ":"))
    if row.error_code is None:
        return (activity_id, row.row_number, chunk_number, row.user_id, row.amount_minor, row.currency,
                row.reference, raw, ROW_PENDING, None, None)
    return (activity_id, row.row_number, None, None, None, row.currency, row.reference, raw,
            ROW_INVALID, row.error_code, row.error_message)


class UploadSql:
    connection: Any

    def add_activity(self, activity_id: str, api_key_id: int | None, key: str | None, file_name: str | None,
                     columns: tuple[str, ...] = ()) -> None:
        self.connection.exec_driver_sql(f"SET LOCAL lock_timeout = {DUPLICATE_WAIT_MS}")
        # Plans for this file's own parameters, never a cached generic one (see storage/bulk/apply.py).
        self.connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        try:
            with self.connection.begin_nested():
                self.connection.execute(
                    text("INSERT INTO bulk_activities (id, status, api_key_id, idempotency_key, file_name, columns)"
                         " VALUES (:id, 'UPLOADED', :api_key_id, :key, left(:file_name, 200), :columns)"),
                    {"id": activity_id, "api_key_id": api_key_id, "key": key, "file_name": file_name,
                     "columns": list(columns) or None},
                )
        except IntegrityError as error:
            raise DuplicateKey(key) from error
        except DBAPIError as error:
            if isinstance(error.orig, psycopg.errors.LockNotAvailable):
                raise IdempotencyKeyInProgress("an upload with this Idempotency-Key is still running") from error
            raise

    def copy_rows(self, activity_id: str, rows: Iterable[tuple[Row, int | None]]) -> None:
        driver = self.connection.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(_COPY_ROWS) as copy:
            for row, chunk_number in rows:
                copy.write_row(_copy_tuple(activity_id, row, chunk_number))

    def invalidate_unknown_users(self, activity_id: str, message: str) -> int:
        return self.connection.execute(
            _UNKNOWN_USERS, {"activity_id": activity_id, "code": UNKNOWN_USER, "message": message}).rowcount

    def invalidate_duplicate_references(self, activity_id: str) -> int:
        return self.connection.execute(
            _DUPLICATE_REFERENCES, {"activity_id": activity_id, "code": DUPLICATE_REFERENCE}).rowcount

    def plan_chunks(self, activity_id: str, lease_s: int) -> tuple[list[int], int]:
        planned = self.connection.execute(_PLAN_CHUNKS, {"activity_id": activity_id, "lease_s": lease_s,
                                                         "allowance_s": CHUNK_QUEUE_ALLOWANCE_S}).all()
        return sorted(chunk_id for chunk_id, _ in planned), sum(rows for _, rows in planned)

    def finish_upload(self, activity_id: str, content_sha256: str, size_bytes: int, counters: Counters,
                      status: str) -> None:
        try:
            with self.connection.begin_nested():
                self.connection.execute(_FINISH, {
                    "activity_id": activity_id, "content_sha256": content_sha256, "size_bytes": size_bytes,
                    "status": status, "final": status in SETTLED_STATUSES, **vars(counters)})
        except IntegrityError as error:
            if "content_sha256" not in str(error.orig):
                raise
            raise DuplicateContent(content_sha256) from error
        except DBAPIError as error:
            if isinstance(error.orig, psycopg.errors.LockNotAvailable):
                raise IdempotencyKeyInProgress("the same file is being uploaded right now; try again shortly") from error
            raise

    def copy_users(self, users: Iterable[tuple[str, str, str]]) -> None:
        driver = self.connection.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy("COPY users (id, name, email) FROM STDIN") as copy:
            for user in users:
                copy.write_row(user)
