"""An index for the scheduler's retry sweep over FAILED rows.

Revision ID: 0004
"""
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute("CREATE INDEX bulk_rows_retry_due ON bulk_rows (next_attempt_at) WHERE status = 'FAILED'")


def downgrade() -> None:
    op.execute("DROP INDEX bulk_rows_retry_due")
