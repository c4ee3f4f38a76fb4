"""No double payment across files: references claimed per funding account, and the
duplicate-file check on the rows rather than the bytes (issue 9, item 6).

Revision ID: 0012

- `bulk_references`: one row per (funding account, reference) ever used by a valid row.
  Its primary key is what refuses a reference a second time, whatever the activity, and
  also when two uploads run at once (the second waits for the first to commit, then finds
  the conflict). An upload claims its references with one INSERT ... ON CONFLICT DO
  NOTHING; the rows whose reference it could not claim become INVALID
  `duplicate_reference`. (Since issue 9's break-it pass, a row that ends CANCELLED gives its claim back:
  storage/bulk/release.py.) At this revision a claim was never given back: a row that ends FAILED or CANCELLED
  still holds its reference. No foreign keys: a per-row trigger would slow a
  million-row claim, and nothing here is ever deleted.
  Backfill: every non-INVALID row that has a reference, the earliest use winning (activity
  created first, then row number). Uses repeated across activities before this migration
  stay as they are (both were already paid or are already queued).
- `bulk_activities.content_sha256` becomes a hash of the file's rows (pipeline/bulk/content.py),
  and `file_sha256` keeps the hash of its bytes, for the fast path that finds a byte-identical
  file before reading it. Activities stored before this migration have only a bytes hash:
  it is copied into `file_sha256` (so a byte-identical upload still finds them) and stays in
  `content_sha256`, where no rows hash can equal it.
- `allow_duplicate_content`: an activity uploaded with it on purpose repeats an earlier file;
  `content_sha256` is unique only among the activities that did not opt out.
"""
from alembic import op

revision = "0012"
down_revision = "0011"

SCHEMA = """
CREATE TABLE bulk_references (
    funding_account text NOT NULL,
    reference text NOT NULL,
    activity_id uuid NOT NULL,
    row_number integer NOT NULL,
    PRIMARY KEY (funding_account, reference)
);
INSERT INTO bulk_references (funding_account, reference, activity_id, row_number)
SELECT DISTINCT ON (a.funding_account, r.reference) a.funding_account, r.reference, r.activity_id, r.row_number
  FROM bulk_rows r JOIN bulk_activities a ON a.id = r.activity_id
 WHERE r.reference IS NOT NULL AND r.status <> 'INVALID'
 ORDER BY a.funding_account, r.reference, a.created_at, a.id, r.row_number;

ALTER TABLE bulk_activities
    ADD COLUMN file_sha256 text,
    ADD COLUMN allow_duplicate_content boolean NOT NULL DEFAULT false,
    DROP CONSTRAINT bulk_activities_content_sha256_key;
UPDATE bulk_activities SET file_sha256 = content_sha256 WHERE content_sha256 IS NOT NULL;
CREATE UNIQUE INDEX bulk_activities_content_sha256 ON bulk_activities (content_sha256)
    WHERE NOT allow_duplicate_content;
CREATE INDEX bulk_activities_file_sha256 ON bulk_activities (file_sha256) WHERE NOT allow_duplicate_content;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("""
    DROP INDEX bulk_activities_file_sha256;
    DROP INDEX bulk_activities_content_sha256;
    ALTER TABLE bulk_activities DROP COLUMN allow_duplicate_content, DROP COLUMN file_sha256,
        ADD CONSTRAINT bulk_activities_content_sha256_key UNIQUE (content_sha256);
    DROP TABLE bulk_references;
    """)
