"""Closed users and inactive wallets in small partial indexes; room on `bulk_rows` pages.

Revision ID: 0026

A bulk-credit chunk fails the rows of closed users and of frozen or closed wallets
(storage/bulk/apply.py). Asked of every row, that was a lookup in `users` and one in
`wallets` per row, about 12 buffer reads, plus one more `users` lookup per row before
creating wallets: about a sixth of a 5,000-row chunk's buffer reads (bench/README.md).
Closed users and inactive wallets are few: these indexes hold only those rows, and each
row's question is a probe of one small index (or one hashed pass over it), a page read or
none, where it was 12. Neither key is changed by a credit, so the wallets' balance updates stay HOT.

`bulk_rows` pages are filled to half (was 85%), for new pages only (existing ones stay as
they are): the chunk's one update of each row, to SUCCESS, then fits on the row's own page
as a HOT update, with no new entry in the row's two indexes (about 9 rows in 10: the new
version is a little wider; at 85%, about 1 in 6). Measured on a 100,000-row file
(bench/README.md): 7 fewer buffer reads and about 250 fewer WAL bytes a row, for twice the
table's size on disk (about 240 bytes a row become about 480).
"""
from alembic import op

# The brief named down_revision "0015"; main has since grown 0015 -> 0027 -> 0028, so this one
# follows main's newest (one head), as 0025 did.
revision = "0026"
down_revision = "0028"


def upgrade() -> None:
    op.execute("""
        CREATE INDEX users_closed ON users (id) WHERE closed_at IS NOT NULL;
        CREATE INDEX wallets_inactive ON wallets (user_id, currency) WHERE status <> 'active';
        ALTER TABLE bulk_rows SET (fillfactor = 50);
    """)


def downgrade() -> None:
    op.execute("""
        DROP INDEX users_closed, wallets_inactive;
        ALTER TABLE bulk_rows SET (fillfactor = 85);
    """)
