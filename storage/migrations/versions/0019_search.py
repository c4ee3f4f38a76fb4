"""Finding users and transactions without their ids (issue 11, item 1).

Revision ID: 0019

`users.seq` numbers users in the order they were stored; the user list pages newest first
by it, and finds users by email and external_id through their UNIQUE indexes.
Journal entries are listed newest first by (created_at, id), the order of one index that
also answers a date range exactly, and of a partial index per selective filter (reference,
activity) that ends with the same two columns. No new column on this hot table: three
index entries per movement. A kind is not selective enough to be worth an index of its
own: the newest entries of a kind are found scanning the time index backwards. A user's
entries come from the postings on the user's wallets (their own index).
"""
from alembic import op

revision = "0019"
down_revision = "0018"


def upgrade() -> None:
    op.execute("""
        ALTER TABLE users ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
        CREATE UNIQUE INDEX users_by_seq ON users (seq);
        CREATE INDEX journal_entries_newest ON journal_entries (created_at, id);
        CREATE INDEX journal_entries_by_reference ON journal_entries (reference, created_at, id)
            WHERE reference IS NOT NULL;
        CREATE INDEX journal_entries_by_activity ON journal_entries (activity_id, created_at, id)
            WHERE activity_id IS NOT NULL;
    """)


def downgrade() -> None:
    op.execute("""
        DROP INDEX journal_entries_newest, journal_entries_by_reference, journal_entries_by_activity;
        ALTER TABLE users DROP COLUMN seq;
    """)
