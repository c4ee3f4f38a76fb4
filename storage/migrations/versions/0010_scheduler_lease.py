"""The scheduler's leadership lease: one row, renewed by its holder, taken over when it expires.

Revision ID: 0010

`expires_at` is always computed by the database's clock (`clock_timestamp() + ttl`), so the
instances' own clocks never have to agree. `epoch` grows by one on every takeover: it is the
fencing token that the leader's jobs check in their own transactions (`jobs/leadership.py`).
"""
from alembic import op

revision = "0010"
down_revision = "0008"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE scheduler_lease (
            name text PRIMARY KEY,
            holder text NOT NULL,
            epoch bigint NOT NULL CHECK (epoch >= 0),
            expires_at timestamptz NOT NULL,
            acquired_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
    """)


def downgrade() -> None:
    op.execute("DROP TABLE scheduler_lease")
