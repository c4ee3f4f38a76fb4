"""Closed users and inactive wallets in small partial indexes.

Revision ID: 0026

A bulk-credit chunk fails the rows of closed users and of frozen or closed wallets
(storage/bulk/apply.py). Asked of every row, that was a lookup in `users` and one in
`wallets` per row, about 12 buffer reads, plus one more `users` lookup per row before
creating wallets: about a sixth of a 5,000-row chunk's buffer reads (bench/README.md).
Closed users and inactive wallets are few: these indexes hold only those rows, and each
row's question is a probe of one small index (or one hashed pass over it), a page read or
none, where it was 12. Neither key is changed by a credit, so the wallets' balance updates stay HOT.

`bulk_rows` pages are filled to 70% (was 85%; new pages only), which makes some of the chunk's
status updates HOT. Half-filled pages made 9 in 10 HOT and a 100,000-row file 2.6% slower than
before issue 9 instead of 12.5%, but doubled the table: at 1,000,000 rows it outgrew the shared
buffers, 11.4% slower against 3.4% at 85%. At 70%, in one run of both sizes on a quiet machine:
+6.8% and +0.2% (bench/README.md, the quiet-machine runs of 2026-11-30).
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
        ALTER TABLE bulk_rows SET (fillfactor = 70);
    """)


def downgrade() -> None:
    op.execute("""
        DROP INDEX users_closed, wallets_inactive;
        ALTER TABLE bulk_rows SET (fillfactor = 85);
    """)
