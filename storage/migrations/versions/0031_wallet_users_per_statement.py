"""A wallet's user checked once per statement, not by a foreign key a row.

Revision ID: 0031

Creating the wallets of a first payout cost about 50 µs a wallet in the foreign key
wallets.user_id -> users alone (249 of 410 ms for a 5,000-wallet chunk, EXPLAIN ANALYZE;
bench/README.md, "Wallets created by a first payout"): PostgreSQL checks a foreign key row
by row, one internal query each. The statement trigger `wallets_refuse_closed_users` (0015)
already joins the statement's new wallets with `users`; it now does what the foreign key did,
for the whole statement at once: it locks the users' rows FOR KEY SHARE (one statement: about
9 ms for 5,000 users) and refuses a wallet whose user does not exist (SQLSTATE 23503, as the
foreign key did). The lock is the foreign key's own, so every race it settled is settled the
same way: a close (which locks the user FOR UPDATE) or a delete of the user waits for the
wallet's transaction or makes it wait, and whichever comes second sees what the first
committed (in REPEATABLE READ, a lock on a user deleted since the snapshot fails to serialize).

What the foreign key also refused, deleting a user who has wallets or changing their id, is
refused by `users_keep_their_wallets` (a row trigger: it runs once the user's row is locked,
so it waits for a wallet insert in flight and then sees its wallet) and `users_never_truncated`
(while wallets name users). A user without wallets may still be deleted. A wallet keeps its
user as it keeps its id and currency: `wallets_keep_their_key` (0029) now names `user_id` too.
"""
from alembic import op

revision = "0031"
down_revision = "0030"

UPGRADE = """
ALTER TABLE wallets DROP CONSTRAINT wallets_user_id_fkey;

CREATE OR REPLACE FUNCTION wallets_not_for_closed_users() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    refused record;
BEGIN
    -- The users' rows locked FOR KEY SHARE as the foreign key locked them, in one statement:
    -- a close (which locks its user FOR UPDATE) or a delete of the same user waits for this
    -- transaction, or this one for it, and the check below then sees what it committed.
    PERFORM 1 FROM users u WHERE u.id IN (SELECT user_id FROM inserted) FOR KEY SHARE;
    SELECT i.user_id, u.id IS NULL AS missing INTO refused
      FROM inserted i LEFT JOIN users u ON u.id = i.user_id
     WHERE i.user_id IS NOT NULL AND (u.id IS NULL OR u.closed_at IS NOT NULL)
     ORDER BY u.id IS NULL DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    ELSIF refused.missing THEN
        RAISE EXCEPTION 'a wallet names user %, who does not exist', refused.user_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RAISE EXCEPTION 'no wallet is created for a closed user' USING ERRCODE = 'check_violation';
END $$;

CREATE FUNCTION users_keep_their_wallets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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
CREATE TRIGGER users_keep_their_wallets BEFORE DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION users_keep_their_wallets();
CREATE TRIGGER users_keep_their_id BEFORE UPDATE OF id ON users
    FOR EACH ROW WHEN (NEW.id <> OLD.id) EXECUTE FUNCTION users_keep_their_wallets();
CREATE TRIGGER users_never_truncated BEFORE TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION users_keep_their_wallets();

DROP TRIGGER wallets_keep_their_key ON wallets;
CREATE TRIGGER wallets_keep_their_key BEFORE UPDATE OF id, currency, user_id ON wallets
    FOR EACH ROW WHEN (NEW.id <> OLD.id OR NEW.currency <> OLD.currency OR NEW.user_id IS DISTINCT FROM OLD.user_id)
    EXECUTE FUNCTION wallets_are_permanent();
"""

DOWNGRADE = """
DROP TRIGGER wallets_keep_their_key ON wallets;
CREATE TRIGGER wallets_keep_their_key BEFORE UPDATE OF id, currency ON wallets
    FOR EACH ROW WHEN (NEW.id <> OLD.id OR NEW.currency <> OLD.currency)
    EXECUTE FUNCTION wallets_are_permanent();
DROP TRIGGER users_never_truncated ON users;
DROP TRIGGER users_keep_their_id ON users;
DROP TRIGGER users_keep_their_wallets ON users;
DROP FUNCTION users_keep_their_wallets();

CREATE OR REPLACE FUNCTION wallets_not_for_closed_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted i JOIN users u ON u.id = i.user_id WHERE u.closed_at IS NOT NULL) THEN
        RAISE EXCEPTION 'no wallet is created for a closed user' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

ALTER TABLE wallets ADD CONSTRAINT wallets_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
