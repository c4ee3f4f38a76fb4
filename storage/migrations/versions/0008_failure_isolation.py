"""Failure isolation and final activities: chunk errors, `next_retry_at`, status history.

Revision ID: 0008

- `bulk_chunks.error_count` / `last_error`: a chunk whose transaction fails for a reason
  that is not transient is counted; past CHUNK_ERRORS_MAX its rows fail with
  `chunk_failed` and the chunk ends in state FAILED instead of being sent again forever.
- `bulk_chunks.started_count`: how often a worker began the chunk, committed before the
  work; a chunk begun more than CHUNK_STARTS_MAX times without finishing (it kills its
  worker) is given up on the same way. A message merely waiting in the queue counts nothing.
- `bulk_activities.next_retry_at`: when the next automatic retry of a FAILED row is due.
  An activity is final (`completed_at` set) once no row is pending and none is due for an
  automatic retry; the CHECK below holds the database to that, on top of pipeline/bulk/status.py.
- `bulk_activities.failed_chunks` / `last_chunk_error`: what the dashboard and the API show.
- `bulk_activity_history`: every status change, and the moment an activity became final,
  with who made it (an API key, the worker, the scheduler or the command line).
"""
from alembic import op

revision = "0008"
down_revision = "0007"

TERMINAL = "('COMPLETED', 'PARTIALLY_COMPLETED', 'FAILED')"


def upgrade() -> None:
    op.execute(f"""
        ALTER TABLE bulk_chunks
            ADD COLUMN error_count integer NOT NULL DEFAULT 0,
            ADD COLUMN last_error text,
            ADD COLUMN started_count integer NOT NULL DEFAULT 0,
            DROP CONSTRAINT bulk_chunks_state_check,
            ADD CONSTRAINT bulk_chunks_state_check CHECK (state IN ('PENDING', 'DONE', 'FAILED'));
        ALTER TABLE bulk_activities
            ADD COLUMN next_retry_at timestamptz,
            ADD COLUMN failed_chunks integer NOT NULL DEFAULT 0,
            ADD COLUMN last_chunk_error text;
        -- Activities finished before this migration may still have rows waiting for the old,
        -- lazy exhaustion sweep; they keep their completed_at (NOT VALID checks new writes only).
        ALTER TABLE bulk_activities
            ADD CONSTRAINT bulk_activities_final_is_settled CHECK (
                (completed_at IS NOT NULL) = (status IN {TERMINAL} AND pending_records = 0 AND next_retry_at IS NULL))
            NOT VALID,
            ADD CONSTRAINT bulk_activities_retry_only_when_settled CHECK (
                next_retry_at IS NULL OR status IN {TERMINAL}) NOT VALID;
        -- The old sweep gave up on a row only after its last backoff; now the chunk that fails
        -- a row for the last time does. Rows waiting for that sweep are given up on here.
        UPDATE bulk_rows SET error_code = 'retries_exhausted', next_attempt_at = NULL, updated_at = now(),
               error_message = 'failed ' || attempts || ' times: ' || coalesce(error_message, error_code)
         WHERE next_attempt_at IS NOT NULL AND attempts >= 5;
        CREATE TABLE bulk_activity_history (
            id bigserial PRIMARY KEY,
            activity_id uuid NOT NULL REFERENCES bulk_activities (id),
            at timestamptz NOT NULL DEFAULT now(),
            from_status text,
            to_status text NOT NULL,
            final boolean NOT NULL,
            -- Who made the change: an API key (its id), the worker, the scheduler or the command line.
            actor_type text NOT NULL CHECK (actor_type IN ('api_key', 'worker', 'scheduler', 'command_line')),
            api_key_id bigint CHECK ((actor_type = 'api_key') = (api_key_id IS NOT NULL)),
            reason text CHECK (length(reason) <= 500)
        );
        CREATE INDEX bulk_activity_history_by_activity ON bulk_activity_history (activity_id, id);
    """)


def downgrade() -> None:
    op.execute("""
        DROP TABLE bulk_activity_history;
        ALTER TABLE bulk_activities DROP CONSTRAINT bulk_activities_final_is_settled,
            DROP CONSTRAINT bulk_activities_retry_only_when_settled,
            DROP COLUMN next_retry_at, DROP COLUMN failed_chunks, DROP COLUMN last_chunk_error;
        UPDATE bulk_chunks SET state = 'DONE' WHERE state = 'FAILED';
        ALTER TABLE bulk_chunks DROP COLUMN error_count, DROP COLUMN last_error, DROP COLUMN started_count,
            DROP CONSTRAINT bulk_chunks_state_check,
            ADD CONSTRAINT bulk_chunks_state_check CHECK (state IN ('PENDING', 'DONE'));
    """)
