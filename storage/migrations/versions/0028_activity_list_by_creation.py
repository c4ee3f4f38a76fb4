"""The activity list pages by creation time, so a time range reads one index range.

Revision ID: 0028

The list was ordered by `seq` alone, with `created_at` in an index of its own. On
1,000,000 activities (bench/search_plans.py) a one-day range 150 days back took 400 ms:
PostgreSQL walked `seq` backwards from the newest activity, filtering 750,000 rows, because it
cannot know that `seq` and `created_at` grow together. Ordered by (created_at, seq), newest
first, each filter has an index in that order: the time range and no filter read
`bulk_activities_by_created_at` (created_at, seq), the status filter
`bulk_activities_by_status` (status, created_at, seq). The cursor stays the last activity's
`seq`; its creation time is read back from `bulk_activities_by_seq`.
"""
from alembic import op

revision = "0028"
down_revision = "0027"


def upgrade() -> None:
    op.execute("""
        DROP INDEX bulk_activities_by_status, bulk_activities_by_created_at;
        CREATE INDEX bulk_activities_by_status ON bulk_activities (status, created_at, seq);
        CREATE INDEX bulk_activities_by_created_at ON bulk_activities (created_at, seq);
    """)


def downgrade() -> None:
    op.execute("""
        DROP INDEX bulk_activities_by_status, bulk_activities_by_created_at;
        CREATE INDEX bulk_activities_by_status ON bulk_activities (status, seq);
        CREATE INDEX bulk_activities_by_created_at ON bulk_activities (created_at);
    """)
