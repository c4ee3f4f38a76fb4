"""The reversal key indexes only reversals.

Revision ID: 0030

`journal_entries.reverses_entry_id` was UNIQUE (0014): a btree that also holds the NULL of every
other entry, so every transfer, deposit and bulk chunk wrote one index entry there for nothing
(bench/README.md, "Where a transfer's time goes"). The same rule, a movement reversed at most
once, now lives in a unique index of the reversals alone. Its name is the constraint's, so a
second reversal still fails naming `reverses_entry_id` (storage/ledger.py turns that into
AlreadyReversed). Lookups by `reverses_entry_id = x` imply `IS NOT NULL` and so use it, in
generic plans too (tests/test_ledger_constraints.py checks the plan).
"""
from alembic import op

revision = "0030"
down_revision = "0029"


def upgrade() -> None:
    op.execute("""
        ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_reverses_entry_id_key;
        CREATE UNIQUE INDEX journal_entries_reverses_entry_id_key ON journal_entries (reverses_entry_id)
            WHERE reverses_entry_id IS NOT NULL;
    """)


def downgrade() -> None:
    op.execute("""
        DROP INDEX journal_entries_reverses_entry_id_key;
        ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_reverses_entry_id_key UNIQUE (reverses_entry_id);
    """)
