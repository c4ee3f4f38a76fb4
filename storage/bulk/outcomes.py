"""Row and chunk outcomes, the activity's counters and status, and its history.

Every change of an activity's counters goes through `save_outcome`, one statement that
also writes the history row when the status or finality changes: the history cannot miss
a transition the counters saw.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text

from pipeline.bulk.ports import Activity, Actor, Chunk
from pipeline.bulk.status import Counters
from storage.bulk.apply import PENDING
from storage.bulk.reads import ACTIVITY_COLUMNS, activity_from

#: The longest chunk error kept, in characters; the whole traceback is in the worker's log.
CHUNK_ERROR_LENGTH_MAX = 500

_FAIL_ROWS = text(f"""
UPDATE bulk_rows r
   SET status = 'FAILED', attempts = r.attempts + 1, updated_at = now(), next_attempt_at = NULL,
       error_code = :code, error_message = :message
 WHERE {PENDING}
""")

_FINISH_CHUNK = text("""
UPDATE bulk_chunks SET state = :state, attempts = attempts + 1, applied_at = now(), heartbeat_at = now(),
       leased_until = NULL
 WHERE id = :id
""")

_NOTE_CHUNK_ERROR = text("""
UPDATE bulk_chunks SET error_count = error_count + 1, last_error = left(:error, :length_max)
 WHERE id = :id AND state = 'PENDING'
RETURNING error_count
""")

_NOTE_CHUNK_START = text("""
UPDATE bulk_chunks SET started_count = started_count + 1 WHERE id = :id AND state = 'PENDING'
RETURNING started_count
""")

_NEXT_RETRY_AT = text("""
SELECT min(next_attempt_at) FROM bulk_rows WHERE activity_id = :activity_id AND next_attempt_at IS NOT NULL
""")

_SAVE_OUTCOME = text(f"""
WITH saved AS (
    UPDATE bulk_activities
       SET status = :status, successful_records = :successful, failed_records = :failed,
           pending_records = :pending, cancelled_records = :cancelled, next_retry_at = :next_retry_at,
           completed_at = CASE WHEN :final THEN coalesce(completed_at, now()) END,
           started_at = CASE WHEN :status IN ('PROCESSING', 'COMPLETED', 'PARTIALLY_COMPLETED', 'FAILED')
                             THEN coalesce(started_at, now()) ELSE started_at END,
           failed_chunks = CASE WHEN :reset_chunks THEN 0 ELSE failed_chunks END + :failed_chunks,
           last_chunk_error = CASE WHEN :reset_chunks THEN NULL
                                   ELSE coalesce(left(:chunk_error, :length_max), last_chunk_error) END,
           updated_at = now()
     WHERE id = :activity_id
    RETURNING {ACTIVITY_COLUMNS}
), logged AS (
    INSERT INTO bulk_activity_history (activity_id, from_status, to_status, final, actor_type, api_key_id, reason)
    SELECT CAST(:activity_id AS uuid), :from_status, :status, :final, :actor_type, :api_key_id, left(:reason, 500)
     WHERE CAST(:log AS boolean)
)
SELECT * FROM saved
""")

_HISTORY = text("""
SELECT h.id, h.at, h.from_status, h.to_status, h.final, h.actor_type, h.api_key_id, h.reason
  FROM bulk_activity_history h
 WHERE h.activity_id = :activity_id AND h.id > :after
 ORDER BY h.id
 LIMIT :limit
""")

# The operator's retry reopens every FAILED row; the scheduler's (`due_only`) only those
# whose backoff has passed (a row has a `next_attempt_at` only while attempts are left: the
# chunk that fails it decides, so the scheduler's settings cannot disagree). A reopened
# chunk starts a new round: its starts and errors are counted afresh against their limits.
REOPEN = text("""
WITH reopened AS (
    UPDATE bulk_rows SET status = 'PENDING', error_code = NULL, error_message = NULL, next_attempt_at = NULL,
           updated_at = now()
     WHERE activity_id = :activity_id AND status = 'FAILED'
       AND (NOT CAST(:due_only AS boolean) OR next_attempt_at <= now())
    RETURNING chunk_number
), chunks AS (
    UPDATE bulk_chunks c SET state = 'PENDING', leased_until = now() + make_interval(secs => :lease_s),
           pending_since = now(), sent_count = 1, error_count = 0, last_error = NULL, started_count = 0
     WHERE c.activity_id = :activity_id AND c.number IN (SELECT chunk_number FROM reopened)
    RETURNING c.id
)
SELECT (SELECT count(*) FROM reopened), (SELECT array_agg(id ORDER BY id) FROM chunks)
""")


class OutcomeSql:
    connection: Any

    def fail_rows(self, chunk: Chunk, first_row_id: int, last_row_id: int, code: str, message: str) -> int:
        """Fails the PENDING rows of `chunk` in first_row_id..last_row_id, with no automatic retry."""
        return self.connection.execute(_FAIL_ROWS, {
            "first_row_id": first_row_id, "last_row_id": last_row_id, "activity_id": chunk.activity_id,
            "number": chunk.number, "code": code, "message": message}).rowcount

    def finish_chunk(self, chunk: Chunk, state: str = "DONE") -> None:
        assert self.connection.execute(_FINISH_CHUNK, {"id": chunk.id, "state": state}).rowcount == 1

    def note_chunk_error(self, chunk_id: int, error: str) -> int | None:
        """Counts one more error of a PENDING chunk; its error count, or None if not PENDING."""
        return self.connection.execute(_NOTE_CHUNK_ERROR, {
            "id": chunk_id, "error": error, "length_max": CHUNK_ERROR_LENGTH_MAX}).scalar_one_or_none()

    def note_chunk_start(self, chunk_id: int) -> int | None:
        """Counts one more start of a PENDING chunk; how many so far, or None if not PENDING."""
        return self.connection.execute(_NOTE_CHUNK_START, {"id": chunk_id}).scalar_one_or_none()

    def next_retry_at(self, activity_id: str) -> datetime | None:
        return self.connection.execute(_NEXT_RETRY_AT, {"activity_id": activity_id}).scalar_one()

    def save_outcome(self, activity_id: str, from_status: str, status: str, counters: Counters,
                     next_retry_at: datetime | None, final: bool, actor: Actor | None, reason: str | None = None,
                     failed_chunks: int = 0, chunk_error: str | None = None,
                     reset_chunks: bool = False) -> Activity:
        """Writes the counters and status; with an `actor`, also a history row. `reset_chunks`
        forgets the chunks given up on (an operator's retry reopens them)."""
        return activity_from(self.connection.execute(_SAVE_OUTCOME, {
            "activity_id": activity_id, "status": status, "successful": counters.successful,
            "failed": counters.failed, "pending": counters.pending, "cancelled": counters.cancelled,
            "next_retry_at": next_retry_at,
            "final": final, "failed_chunks": failed_chunks, "chunk_error": chunk_error, "reset_chunks": reset_chunks,
            "length_max": CHUNK_ERROR_LENGTH_MAX, "log": actor is not None, "from_status": from_status,
            "actor_type": actor.type if actor else None, "api_key_id": actor.api_key_id if actor else None,
            "reason": reason}).one())

    def add_history(self, activity_id: str, from_status: str | None, status: str, final: bool, actor: Actor,
                    reason: str | None = None) -> None:
        self.connection.execute(text(
            "INSERT INTO bulk_activity_history (activity_id, from_status, to_status, final, actor_type, api_key_id,"
            " reason) VALUES (:activity_id, :from_status, :status, :final, :actor_type, :api_key_id, left(:reason, 500))"), {
            "activity_id": activity_id, "from_status": from_status, "status": status, "final": final,
            "actor_type": actor.type, "api_key_id": actor.api_key_id, "reason": reason})

    def history(self, activity_id: str, after_id: int, limit: int) -> list[dict[str, Any]]:
        rows = self.connection.execute(_HISTORY, {"activity_id": activity_id, "after": after_id, "limit": limit})
        return [dict(row) for row in rows.mappings()]

    def reopen_failed_rows(self, activity_id: str, lease_s: int) -> tuple[int, list[int]]:
        reopened, chunk_ids = self.connection.execute(REOPEN, {
            "activity_id": activity_id, "lease_s": lease_s, "due_only": False}).one()
        return reopened, list(chunk_ids or [])
