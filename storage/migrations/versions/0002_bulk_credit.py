"""Bulk credit: activities (one uploaded file), their rows, and the chunks workers apply.

Revision ID: 0002

The rows table is written with COPY, up to millions of rows per file, so it carries only
the indexes the pipeline reads by: the primary key (chunks are id ranges, postings point
at it) and (activity_id, row_number) for listing. It has no foreign key to its activity
(a per-row trigger would slow COPY by a third); the activity is written first in the same
database transaction. `postings.bulk_row_id` stays UNIQUE without a foreign key, for the
same reason: the uniqueness, not the reference, is what makes a row's credit exactly-once.

Counters are checked by the database as well as by Python: valid + invalid = total and
successful + failed + pending = valid, at every commit.
"""
from alembic import op

revision = "0002"
down_revision = "0001"

SCHEMA = """
CREATE TABLE bulk_activities (
    id uuid PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('UPLOADED', 'PROCESSING', 'COMPLETED', 'PARTIALLY_COMPLETED', 'FAILED')),
    -- Set once every row is stored: the same content uploaded again finds this activity.
    content_sha256 text UNIQUE,
    api_key_id bigint,
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    file_name text,
    size_bytes bigint NOT NULL DEFAULT 0,
    total_records integer NOT NULL DEFAULT 0,
    valid_records integer NOT NULL DEFAULT 0,
    invalid_records integer NOT NULL DEFAULT 0,
    successful_records integer NOT NULL DEFAULT 0,
    failed_records integer NOT NULL DEFAULT 0,
    pending_records integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bulk_activities_counters_add_up CHECK (
        valid_records + invalid_records = total_records
        AND successful_records + failed_records + pending_records = valid_records
        AND least(valid_records, invalid_records, successful_records, failed_records, pending_records) >= 0)
);
-- The key is scoped to the API key that sent it (0 for the command line).
CREATE UNIQUE INDEX bulk_activities_idempotency_key
    ON bulk_activities (coalesce(api_key_id, 0), idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX bulk_activities_unfinished ON bulk_activities (created_at)
    WHERE status IN ('UPLOADED', 'PROCESSING');

-- One chunk is applied in one database transaction by one worker at a time (row lock).
-- `leased_until` is when a message sent for it may be presumed lost and sent again.
CREATE TABLE bulk_chunks (
    id bigserial PRIMARY KEY,
    activity_id uuid NOT NULL REFERENCES bulk_activities (id),
    number integer NOT NULL CHECK (number >= 0),
    first_row_id bigint NOT NULL,
    last_row_id bigint NOT NULL,
    row_count integer NOT NULL CHECK (row_count > 0),
    state text NOT NULL DEFAULT 'PENDING' CHECK (state IN ('PENDING', 'DONE')),
    attempts integer NOT NULL DEFAULT 0,
    sent_count integer NOT NULL DEFAULT 0,
    leased_until timestamptz,
    heartbeat_at timestamptz,
    applied_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (activity_id, number),
    CHECK (first_row_id <= last_row_id)
);
CREATE INDEX bulk_chunks_pending ON bulk_chunks (leased_until) WHERE state = 'PENDING';

CREATE TABLE bulk_rows (
    id bigserial PRIMARY KEY,
    activity_id uuid NOT NULL,
    row_number integer NOT NULL CHECK (row_number >= 2),
    -- The chunk a valid row belongs to; NULL for rows invalid at upload.
    chunk_number integer,
    user_id uuid,
    amount_minor bigint CHECK (amount_minor > 0),
    currency char(3),
    reference text,
    -- What the file said, for invalid rows' reports (cut to 100 characters).
    raw_user_id text,
    raw_amount text,
    status text NOT NULL CHECK (status IN ('PENDING', 'SUCCESS', 'FAILED', 'INVALID')),
    error_code text,
    error_message text,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    journal_entry_id uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bulk_rows_valid_rows_are_complete CHECK (
        status = 'INVALID' OR (user_id IS NOT NULL AND amount_minor IS NOT NULL AND currency IS NOT NULL)),
    CONSTRAINT bulk_rows_success_has_entry CHECK ((status = 'SUCCESS') = (journal_entry_id IS NOT NULL))
) WITH (fillfactor = 85);  -- room for HOT updates of each row's status
CREATE UNIQUE INDEX bulk_rows_by_activity ON bulk_rows (activity_id, row_number);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TABLE bulk_rows, bulk_chunks, bulk_activities")
