"""API keys get a label, an expiry, a last-used time and a revocation (issue 11, item 4).

Revision ID: 0018

A key is never deleted: audit events, activities (`api_key_id`, `approved_by`) and stored
idempotent answers refer to it. A revoked or expired key stops authenticating; its row
stays. `last_used_at` is written when a process looks the key up, at most once a minute
per process (web/auth.py caches keys for TOKEN_CACHE_S), so it is exact to about a minute
and costs no write per request.
"""
from alembic import op

revision = "0018"
down_revision = "0017"


def upgrade() -> None:
    op.execute("""
        ALTER TABLE api_keys
            ADD COLUMN label text CHECK (length(label) BETWEEN 1 AND 200),
            ADD COLUMN expires_at timestamptz,
            ADD COLUMN last_used_at timestamptz,
            ADD COLUMN revoked_at timestamptz,
            ADD CONSTRAINT api_keys_expire_after_creation CHECK (expires_at > created_at);
    """)


def downgrade() -> None:
    op.execute("""
        ALTER TABLE api_keys DROP COLUMN label, DROP COLUMN expires_at, DROP COLUMN last_used_at,
            DROP COLUMN revoked_at;
    """)
