"""A user is deleted, re-keyed or truncated only in a READ COMMITTED transaction.

Revision ID: 0032

`users_keep_their_wallets` (0031) looks for the user's wallets with its transaction's
snapshot. In READ COMMITTED that snapshot is taken after the user's row is locked, so it sees
every wallet committed for the user. In REPEATABLE READ or SERIALIZABLE it is the snapshot
of the transaction's first statement: a wallet committed since was invisible, and a delete
left it without its user (found by a break-it pass: a deleter that read anything first, then
deleted the user after another session created the user's wallet). The foreign key this
replaced checked against the newest committed rows. Deleting a user is a hand-made repair
(the service closes users), so it is refused in the other isolation levels rather than
checked differently there.
"""
from alembic import op

revision = "0032"
down_revision = "0031"

FUNCTION = """
CREATE OR REPLACE FUNCTION users_keep_their_wallets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- This snapshot may predate a wallet of the user committed since (0032).
        RAISE EXCEPTION 'users are deleted, re-keyed or truncated only in a READ COMMITTED transaction'
            USING ERRCODE = 'serialization_failure';
    END IF;
    -- A row trigger runs once the user's row is locked: a transaction that inserted a wallet
    -- for this user holds it FOR KEY SHARE until it ends, so the check below sees its wallet.
    IF TG_OP = 'TRUNCATE' THEN
        IF EXISTS (SELECT 1 FROM wallets WHERE user_id IS NOT NULL) THEN
            RAISE EXCEPTION 'users with wallets cannot be truncated' USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM wallets w WHERE w.user_id = OLD.id) THEN
        RAISE EXCEPTION 'user % has wallets: a user with wallets is closed, never deleted or re-keyed', OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(FUNCTION.replace("""    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- This snapshot may predate a wallet of the user committed since (0032).
        RAISE EXCEPTION 'users are deleted, re-keyed or truncated only in a READ COMMITTED transaction'
            USING ERRCODE = 'serialization_failure';
    END IF;
""", ""))
