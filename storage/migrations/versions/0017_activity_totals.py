"""Per-currency money totals of every activity, kept by the database itself; the activity list.

Revision ID: 0017

`bulk_activity_totals` holds signed deltas, never updated: a statement-level trigger on
`bulk_rows` (transition tables, so a 5,000-row chunk costs one aggregate, not 5,000 row
triggers) appends, per activity and currency, how much the statement moved into or out of
the valid, SUCCESS, FAILED and CANCELLED amounts. The activity's totals are the sums of its
deltas (a few hundred rows for a million-row file). Appending rather than updating one row
per activity means concurrent chunks never wait on each other here, and whatever statement
changes a row's status (a chunk, a retry, a cancel, a reversal) keeps the totals right
without having to remember to.

Backfill: one delta per existing activity and currency, from its rows as they are.

`bulk_activities.seq` numbers activities in the order they were stored: the activity list
(`GET /api/v1/wallet/bulk-credit`, newest first) pages by it, with an index per filter:
status, creation time, and a trigram index for a file name given in part (pg_trgm, which
PostgreSQL trusts any database owner to create).
"""
from alembic import op

revision = "0017"
down_revision = "0013"

SCHEMA = """
CREATE TABLE bulk_activity_totals (
    id bigserial PRIMARY KEY,
    activity_id uuid NOT NULL,
    currency char(3) NOT NULL,
    valid_amount numeric NOT NULL,
    credited_amount numeric NOT NULL,
    failed_amount numeric NOT NULL,
    cancelled_amount numeric NOT NULL
);
CREATE INDEX bulk_activity_totals_by_activity ON bulk_activity_totals (activity_id, currency);

CREATE FUNCTION bulk_rows_move_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO bulk_activity_totals (activity_id, currency, valid_amount, credited_amount, failed_amount,
                                          cancelled_amount)
        SELECT activity_id, currency, sum(amount_minor),
               coalesce(sum(amount_minor) FILTER (WHERE status = 'SUCCESS'), 0),
               coalesce(sum(amount_minor) FILTER (WHERE status = 'FAILED'), 0),
               coalesce(sum(amount_minor) FILTER (WHERE status = 'CANCELLED'), 0)
          FROM new_rows WHERE status <> 'INVALID'
         GROUP BY activity_id, currency;
    ELSE
        INSERT INTO bulk_activity_totals (activity_id, currency, valid_amount, credited_amount, failed_amount,
                                          cancelled_amount)
        SELECT activity_id, currency, coalesce(sum(sign * amount_minor), 0),
               coalesce(sum(sign * amount_minor) FILTER (WHERE status = 'SUCCESS'), 0) AS credited,
               coalesce(sum(sign * amount_minor) FILTER (WHERE status = 'FAILED'), 0) AS failed,
               coalesce(sum(sign * amount_minor) FILTER (WHERE status = 'CANCELLED'), 0) AS cancelled
          FROM (SELECT activity_id, currency, amount_minor, status, 1 AS sign FROM new_rows WHERE status <> 'INVALID'
                UNION ALL
                SELECT activity_id, currency, amount_minor, status, -1 FROM old_rows WHERE status <> 'INVALID') moved
         GROUP BY activity_id, currency
        HAVING sum(sign * amount_minor) <> 0
            OR coalesce(sum(sign * amount_minor) FILTER (WHERE status = 'SUCCESS'), 0) <> 0
            OR coalesce(sum(sign * amount_minor) FILTER (WHERE status = 'FAILED'), 0) <> 0
            OR coalesce(sum(sign * amount_minor) FILTER (WHERE status = 'CANCELLED'), 0) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER bulk_rows_totals_on_insert AFTER INSERT ON bulk_rows
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bulk_rows_move_totals();
CREATE TRIGGER bulk_rows_totals_on_update AFTER UPDATE ON bulk_rows
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bulk_rows_move_totals();

ALTER TABLE bulk_activities ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX bulk_activities_by_seq ON bulk_activities (seq);
CREATE INDEX bulk_activities_by_status ON bulk_activities (status, seq);
CREATE INDEX bulk_activities_by_created_at ON bulk_activities (created_at);
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX bulk_activities_by_file_name ON bulk_activities USING gin (lower(file_name) gin_trgm_ops);

INSERT INTO bulk_activity_totals (activity_id, currency, valid_amount, credited_amount, failed_amount,
                                  cancelled_amount)
SELECT activity_id, currency, sum(amount_minor),
       coalesce(sum(amount_minor) FILTER (WHERE status = 'SUCCESS'), 0),
       coalesce(sum(amount_minor) FILTER (WHERE status = 'FAILED'), 0),
       coalesce(sum(amount_minor) FILTER (WHERE status = 'CANCELLED'), 0)
  FROM bulk_rows WHERE status <> 'INVALID'
 GROUP BY activity_id, currency;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("""
        DROP TABLE bulk_activity_totals;
        DROP INDEX bulk_activities_by_status, bulk_activities_by_created_at, bulk_activities_by_file_name;
        ALTER TABLE bulk_activities DROP COLUMN seq;
        DROP FUNCTION bulk_rows_move_totals CASCADE;
    """)
