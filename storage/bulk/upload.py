"""Storing an upload: the activity, its rows by COPY, the checks that need the whole file
or the database (unknown users, references claimed across files), and the chunk plan."""
from __future__ import annotations

import json
from typing import Any, Iterable

import psycopg.errors
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from pipeline.bulk.ports import Activity, DuplicateContent, DuplicateKey, UploadIdentity
from pipeline.bulk.rows import DUPLICATE_REFERENCE, UNKNOWN_USER, USER_CLOSED, USER_CLOSED_MESSAGE, Row
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

# Unknown users, and closed ones (a closed user never reopens: pipeline/lifecycle.py).
_UNKNOWN_USERS = text("""
UPDATE bulk_rows r
   SET status = 'INVALID', chunk_number = NULL,
       error_code = CASE WHEN EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id) THEN :closed_code ELSE :code END,
       error_message = CASE WHEN EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id) THEN :closed_message
                            ELSE :message END
 WHERE r.activity_id = :activity_id AND r.status = 'PENDING'
   AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id AND u.closed_at IS NULL)
""")

# The references of the file's valid rows claimed in the funding account (the primary key of
# bulk_references refuses one claimed before, by any activity). In reference order, so that
# two uploads claiming the same references at once wait for each other in one order and
# never deadlock (the second finds the first's claims once it commits), then row order, so
# that within a file the first row keeps a reference. Tried first without ON CONFLICT, which
# fails at a reference used twice: its speculative insertion costs about twice as much per
# row (measured: 2.1 s against 1.1 s for 100,000 references), and a file reusing none of
# its references is the common case. The order is bytewise (COLLATE "C"): any one total order
# keeps claims deadlock-free, and sorting 1,000,000 references this way took about 4.0 s
# against 5.0 to 6.4 s in the database's collation (C.UTF-8, compared by strcoll).
_CLAIM_REFERENCES = """
INSERT INTO bulk_references (funding_account, reference, activity_id, row_number)
SELECT :funding_account, reference, :activity_id, row_number
  FROM bulk_rows
 WHERE activity_id = :activity_id AND reference IS NOT NULL AND status = 'PENDING'
 ORDER BY reference COLLATE "C", row_number
"""
_CLAIM_ALL = text(_CLAIM_REFERENCES)
_CLAIM_UNUSED = text(_CLAIM_REFERENCES + "ON CONFLICT DO NOTHING")

# Rows whose reference is held by another row: an earlier row of this file, or a row of an
# earlier activity of the same funding account. Run only when some claim failed.
_DUPLICATE_REFERENCES = text("""
UPDATE bulk_rows r
   SET status = 'INVALID', error_code = :code, chunk_number = NULL,
       error_message = 'reference ' || left(r.reference, 40) || CASE WHEN b.activity_id = r.activity_id
           THEN ' is already used on row ' || b.row_number
           ELSE ' was already used in activity ' || b.activity_id || ' row ' || b.row_number END
  FROM bulk_references b
 WHERE r.activity_id = :activity_id AND r.reference IS NOT NULL AND r.status = 'PENDING'
   AND b.funding_account = :funding_account AND b.reference = r.reference
   AND (b.activity_id <> r.activity_id OR b.row_number <> r.row_number)
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
   SET content_sha256 = :content_sha256, file_sha256 = :file_sha256, size_bytes = :size_bytes, status = :status,
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

    def find_by_file(self, file_sha256: str) -> Activity | None:
        """The earliest activity (that did not opt out of the duplicate check) of these exact bytes."""
        return self._one_activity("file_sha256 = :sha AND NOT allow_duplicate_content"
                                  " AND content_sha256 IS NOT NULL ORDER BY created_at, id LIMIT 1",
                                  {"sha": file_sha256})

    def upload_identity(self, activity_id: str) -> UploadIdentity:
        return UploadIdentity(*self.connection.execute(
            text("SELECT funding_account, file_sha256, content_sha256 FROM bulk_activities WHERE id = :id"),
            {"id": activity_id}).one())

    def add_activity(self, activity_id: str, api_key_id: int | None, key: str | None, file_name: str | None,
                     columns: tuple[str, ...] = (), *, funding_account: str = "default",
                     allow_duplicate_content: bool = False) -> None:
        self.connection.exec_driver_sql(f"SET LOCAL lock_timeout = {DUPLICATE_WAIT_MS}")
        # Plans for this file's own parameters, never a cached generic one (see storage/bulk/apply.py).
        self.connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        try:
            with self.connection.begin_nested():
                self.connection.execute(
                    text("INSERT INTO bulk_activities (id, status, api_key_id, idempotency_key, file_name, columns,"
                         " funding_account, allow_duplicate_content) VALUES (:id, 'UPLOADED', :api_key_id, :key,"
                         " left(:file_name, 200), :columns, :funding_account, :allow_duplicate_content)"),
                    {"id": activity_id, "api_key_id": api_key_id, "key": key, "file_name": file_name,
                     "columns": list(columns) or None, "funding_account": funding_account,
                     "allow_duplicate_content": allow_duplicate_content},
                )
        except IntegrityError as error:
            if not isinstance(error.orig, psycopg.errors.UniqueViolation):
                raise  # a broken CHECK is a bug to see, not another upload of the same key
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
            _UNKNOWN_USERS, {"activity_id": activity_id, "code": UNKNOWN_USER, "message": message,
                             "closed_code": USER_CLOSED, "closed_message": USER_CLOSED_MESSAGE}).rowcount

    def claim_references(self, activity_id: str, funding_account: str, rows_with_reference: int) -> int:
        """Claims the references of the activity's PENDING rows in `funding_account`; the rows
        whose reference another row holds become INVALID `duplicate_reference`. Returns how many.

        `rows_with_reference` is how many valid rows had a reference as read (rows invalidated
        since, as unknown users, count too): when every one was claimed, none is a duplicate and
        the second statement is skipped. Raises IdempotencyKeyInProgress when an upload claiming
        the same references does not finish within DUPLICATE_WAIT_MS.
        """
        params = {"activity_id": activity_id, "funding_account": funding_account}
        try:
            try:
                with self.connection.begin_nested():
                    claimed = self.connection.execute(_CLAIM_ALL, params).rowcount
            except IntegrityError as error:
                if not isinstance(error.orig, psycopg.errors.UniqueViolation):
                    raise
                claimed = self.connection.execute(_CLAIM_UNUSED, params).rowcount
        except DBAPIError as error:
            if isinstance(error.orig, psycopg.errors.LockNotAvailable):
                raise IdempotencyKeyInProgress("another upload using the same references is still running; "
                                               "try again shortly") from error
            raise
        if claimed == rows_with_reference:
            return 0
        return self.connection.execute(_DUPLICATE_REFERENCES, {**params, "code": DUPLICATE_REFERENCE}).rowcount

    def plan_chunks(self, activity_id: str, lease_s: int) -> tuple[list[int], int]:
        planned = self.connection.execute(_PLAN_CHUNKS, {"activity_id": activity_id, "lease_s": lease_s,
                                                         "allowance_s": CHUNK_QUEUE_ALLOWANCE_S}).all()
        return sorted(chunk_id for chunk_id, _ in planned), sum(rows for _, rows in planned)

    def finish_upload(self, activity_id: str, content_sha256: str, size_bytes: int, counters: Counters,
                      status: str, *, file_sha256: str | None = None) -> None:
        try:
            with self.connection.begin_nested():
                self.connection.execute(_FINISH, {
                    "activity_id": activity_id, "content_sha256": content_sha256, "file_sha256": file_sha256,
                    "size_bytes": size_bytes,
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
