"""Every bulk-credit row keeps its original cells (`raw`), and each activity its header.

Revision ID: 0007

`bulk_rows.raw` is a JSON array of the row's cells exactly as the file had them, in the
file's column order (`bulk_activities.columns`, the header's names in lower case). It is
NULL when the cells are exactly the row's values written plainly (lower-case uuid, amount
with the currency's digits, ...; `pipeline.bulk.rows.canonical_cells`), which is the case
for most rows of a large file, so those store nothing twice and the cells are rebuilt on
read. INVALID rows now also keep the `currency` and `reference` that could be read.

`raw_user_id` and `raw_amount` (the stripped uuid and amount of invalid rows, cut to 100
characters) are replaced by `raw`: rows stored before this revision keep those two cells
in `raw`; their other cells were never stored. Activities stored before it have no
recorded header (`columns` NULL): their rows are read with all four columns.
"""
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.execute("""
        ALTER TABLE bulk_activities ADD COLUMN columns text[];
        ALTER TABLE bulk_rows ADD COLUMN raw json;
        UPDATE bulk_rows SET raw = json_build_array(coalesce(raw_user_id, ''), coalesce(raw_amount, ''))
         WHERE raw_user_id IS NOT NULL OR raw_amount IS NOT NULL;
        ALTER TABLE bulk_rows DROP COLUMN raw_user_id, DROP COLUMN raw_amount;
    """)


def downgrade() -> None:
    op.execute("""
        ALTER TABLE bulk_rows ADD COLUMN raw_user_id text, ADD COLUMN raw_amount text;
        UPDATE bulk_rows SET raw_user_id = left(btrim(raw ->> 0), 100), raw_amount = left(btrim(raw ->> 1), 100)
         WHERE status = 'INVALID' AND user_id IS NULL AND raw IS NOT NULL;
        ALTER TABLE bulk_rows DROP COLUMN raw;
        ALTER TABLE bulk_activities DROP COLUMN columns;
    """)
