"""Reversals: of a bulk credit's rows (a reversal activity), and of a single movement (issue 10).

Revision ID: 0014

- `bulk_activities.kind`: 'credit' (an uploaded file) or 'reversal' (rows taking the money of
  an earlier credit's SUCCESS rows back to its funding account); `reverses_activity_id` names
  that credit, exactly for reversals.
- `bulk_rows.reverses_row_id`: the credit row a reversal row reverses. Not indexed, and never
  updated, so it costs a credit row nothing and keeps every row update HOT.
- `bulk_reversal_claims`: one row per credit row a reversal holds (PENDING, SUCCESS or FAILED
  there). Its primary key is what refuses a second reversal of a row, whatever the activity and
  also when two run at once; a cancel of the reversal gives the claims of its cancelled rows
  back. A separate table rather than a partial unique index on `bulk_rows`: an index whose
  predicate names `status` would make every status update of every row a non-HOT update
  (see 0006).
- `journal_entries.kind` gains 'bulk_reversal' (one entry per chunk and currency of a reversal)
  and 'reversal' (a single movement undone); `reverses_entry_id` is UNIQUE: a movement is
  reversed at most once, whatever the requests racing to do it.
"""
from alembic import op

revision = "0014"
down_revision = "0019"  # "0013" in the brief; main has 0013 -> 0017 -> 0018 -> 0019 since

KINDS = ("'deposit', 'withdrawal', 'transfer', 'bulk_credit', 'funding_top_up', 'reservation', "
         "'reservation_return'")

SCHEMA = f"""
ALTER TABLE bulk_activities
    ADD COLUMN kind text NOT NULL DEFAULT 'credit' CHECK (kind IN ('credit', 'reversal')),
    ADD COLUMN reverses_activity_id uuid REFERENCES bulk_activities (id),
    ADD CONSTRAINT bulk_activities_reversal_names_its_credit
        CHECK ((kind = 'reversal') = (reverses_activity_id IS NOT NULL));
CREATE INDEX bulk_activities_reversals ON bulk_activities (reverses_activity_id)
    WHERE reverses_activity_id IS NOT NULL;

ALTER TABLE bulk_rows ADD COLUMN reverses_row_id bigint;

CREATE TABLE bulk_reversal_claims (
    credit_row_id bigint PRIMARY KEY,
    reversal_row_id bigint NOT NULL UNIQUE,
    reversal_activity_id uuid NOT NULL REFERENCES bulk_activities (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE journal_entries
    DROP CONSTRAINT journal_entries_kind_check,
    ADD CONSTRAINT journal_entries_kind_check CHECK (kind IN ({KINDS}, 'bulk_reversal', 'reversal')),
    ADD COLUMN reverses_entry_id uuid UNIQUE REFERENCES journal_entries (id),
    ADD CONSTRAINT journal_entries_reversal_names_its_entry
        CHECK ((kind = 'reversal') = (reverses_entry_id IS NOT NULL));
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute(f"""
    ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_reversal_names_its_entry,
        DROP COLUMN reverses_entry_id, DROP CONSTRAINT journal_entries_kind_check,
        ADD CONSTRAINT journal_entries_kind_check CHECK (kind IN ({KINDS}));
    DROP TABLE bulk_reversal_claims;
    ALTER TABLE bulk_rows DROP COLUMN reverses_row_id;
    DROP INDEX bulk_activities_reversals;
    ALTER TABLE bulk_activities DROP CONSTRAINT bulk_activities_reversal_names_its_credit,
        DROP COLUMN reverses_activity_id, DROP COLUMN kind;
    """)
