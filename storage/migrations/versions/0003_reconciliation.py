"""Reconciliation runs, and what incremental runs need to find what changed.

Revision ID: 0003
"""
from alembic import op

revision = "0003"
down_revision = "0002"

SCHEMA = """
CREATE TABLE reconciliations (
    id uuid PRIMARY KEY,
    full_pass boolean NOT NULL,
    status text NOT NULL CHECK (status IN ('queued', 'running', 'clean', 'mismatched')),
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    wallets_checked bigint,
    mismatch_count bigint,
    mismatches jsonb,
    -- The oldest transaction running at the run's snapshot: the next incremental run starts there.
    horizon_transaction_id bigint
);
CREATE INDEX reconciliations_newest ON reconciliations (created_at DESC);
CREATE INDEX journal_entries_by_transaction ON journal_entries (transaction_id);

-- Every change to a wallet row, even one made by hand in SQL, moves updated_at, so an
-- incremental reconciliation sees it.
CREATE FUNCTION wallets_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END $$;
CREATE TRIGGER wallets_touch BEFORE UPDATE ON wallets FOR EACH ROW EXECUTE FUNCTION wallets_touch();
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("""
        DROP TRIGGER wallets_touch ON wallets; DROP FUNCTION wallets_touch();
        DROP INDEX journal_entries_by_transaction; DROP TABLE reconciliations;
    """)
