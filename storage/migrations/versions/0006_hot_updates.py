"""Let the bulk-credit hot path update rows in place (HOT updates).

Revision ID: 0006

PostgreSQL can update a row without touching any index (a HOT update) only when no
indexed column changes, and the columns of a partial index's WHERE clause count as
indexed. `bulk_rows_retry_due` named `status`, so every PENDING -> SUCCESS update of a
bulk-credit row also wrote new entries into every index of `bulk_rows`. The same index on
`next_attempt_at IS NOT NULL` holds the same rows (only FAILED rows waiting for a retry
have a `next_attempt_at`) and still serves `status = 'FAILED' AND next_attempt_at <= now()`.

Wallets are filled to 85% so that a balance update finds room on its own page, which it
needs for a HOT update; rows written before this migration keep their pages as they are.
"""
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.execute("""
        DROP INDEX bulk_rows_retry_due;
        CREATE INDEX bulk_rows_retry_due ON bulk_rows (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
        ALTER TABLE wallets SET (fillfactor = 85);
    """)


def downgrade() -> None:
    op.execute("""
        DROP INDEX bulk_rows_retry_due;
        CREATE INDEX bulk_rows_retry_due ON bulk_rows (next_attempt_at) WHERE status = 'FAILED';
        ALTER TABLE wallets RESET (fillfactor);
    """)
