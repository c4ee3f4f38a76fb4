"""When each chunk became PENDING, for the age of the oldest pending chunk in /metrics.

Revision ID: 0025

`created_at` is when a chunk was planned; a retry puts a chunk that was DONE back to PENDING
(storage/bulk/outcomes.py, REOPEN) long after that, so its age would read as hours on the
first retry. `pending_since` is set when the chunk is planned (its default) and again when
it is reopened. The partial index makes the oldest one a single index probe, however many
chunks the history holds; only pending chunks are in it, and a chunk leaves it when it is
applied (its state already leaves the other partial index then, so no HOT update is lost).
Existing chunks get the time of the migration.
"""
from alembic import op

# The brief named "0019" after "0013"; main has since grown 0013 -> 0017 -> 0018 -> 0019 (search)
# -> 0014 (reversals), so this one takes a free id and follows main's newest.
revision = "0025"
down_revision = "0016"  # after webhooks; main: 0013, 0017, 0018, 0019, 0014, 0016


def upgrade() -> None:
    op.execute("""
        ALTER TABLE bulk_chunks ADD COLUMN pending_since timestamptz NOT NULL DEFAULT now();
        CREATE INDEX bulk_chunks_pending_since ON bulk_chunks (pending_since) WHERE state = 'PENDING';
    """)


def downgrade() -> None:
    op.execute("""
        DROP INDEX bulk_chunks_pending_since;
        ALTER TABLE bulk_chunks DROP COLUMN pending_since;
    """)
