"""Holds, frozen wallets and closed users (issue 10, items 3 and 4).

Revision ID: 0015

- `wallets.held`: the money of a user wallet's open holds, reserved out of its balance, so
  `available = balance - held`. A hold is not a ledger posting: the money has not moved
  yet, and the ledger stays exactly what has moved. The CHECK below keeps every user
  wallet's held money within its balance, so no debit can take money a hold reserved.
- `holds`: one row per hold; `status` leaves `held` once (to `captured`, `voided` or
  `expired`) and a trigger refuses any later change. A deferred constraint trigger checks
  at commit that each wallet's `held` equals the sum of its open holds, whoever wrote it.
- `wallets.status` gains `closed` (every wallet of a closed user) beside `frozen`; a
  trigger refuses any change of balance of a wallet that is not `active`, and another one
  any new wallet of a closed user (after waiting for a close in flight).
- `users.closed_at`: the soft delete; history is kept.
"""
from alembic import op

revision = "0015"
down_revision = "0025"  # "0013" in the brief; main is at 0025 (via 0014, 0016) since: the lead re-chains at merge

SCHEMA = """
ALTER TABLE users ADD COLUMN closed_at timestamptz;

ALTER TABLE wallets
    ADD COLUMN held bigint NOT NULL DEFAULT 0,
    ADD COLUMN status_reason text CHECK (length(status_reason) BETWEEN 1 AND 500),
    DROP CONSTRAINT wallets_status_check,
    ADD CONSTRAINT wallets_status_check CHECK (status IN ('active', 'frozen', 'closed')),
    -- Only a user wallet holds money back; it never holds more than its balance. No
    -- arithmetic, so nothing here can overflow a bigint.
    ADD CONSTRAINT wallets_held_within_balance CHECK (
        held >= 0 AND (held = 0 OR (user_id IS NOT NULL AND held <= balance))),
    ADD CONSTRAINT wallets_closed_are_users CHECK (status <> 'closed' OR user_id IS NOT NULL);

-- The pair of pipeline.ledger.post's check: money never moves in or out of a frozen wallet or
-- a closed user's. The WHEN clause keeps the trigger off every active wallet's update.
CREATE FUNCTION wallets_refuse_inactive_movement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'wallet % is %: its balance cannot change', OLD.id, OLD.status
        USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER wallets_inactive_no_movement BEFORE UPDATE OF balance ON wallets
    FOR EACH ROW WHEN (OLD.status <> 'active' AND NEW.balance IS DISTINCT FROM OLD.balance)
    EXECUTE FUNCTION wallets_refuse_inactive_movement();

-- No wallet is created for a closed user. The statements that create wallets leave closed
-- users out; this is the pair of that check, and what closes the race with a close in flight:
-- the foreign key's row trigger takes the user's row FOR KEY SHARE, which waits for a close
-- (it locks the user FOR UPDATE first), and this statement trigger runs after the row
-- triggers, with a new snapshot, so it sees that close. One join per statement, not a
-- function call per wallet: a bulk chunk creates thousands at once.
CREATE FUNCTION wallets_not_for_closed_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted i JOIN users u ON u.id = i.user_id WHERE u.closed_at IS NOT NULL) THEN
        RAISE EXCEPTION 'no wallet is created for a closed user' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER wallets_refuse_closed_users AFTER INSERT ON wallets
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION wallets_not_for_closed_users();

CREATE TABLE holds (
    id uuid PRIMARY KEY,
    wallet_id bigint NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id),
    currency char(3) NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    status text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'captured', 'voided', 'expired')),
    reference text CHECK (length(reference) BETWEEN 1 AND 200),
    idempotency_key text UNIQUE,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    decided_at timestamptz,
    captured_amount bigint,
    to_user_id uuid REFERENCES users (id),
    journal_entry_id uuid REFERENCES journal_entries (id),
    CONSTRAINT holds_decided_once CHECK ((status = 'held') = (decided_at IS NULL)),
    CONSTRAINT holds_capture_has_entry CHECK (
        (status = 'captured') = (journal_entry_id IS NOT NULL)
        AND (status = 'captured') = (captured_amount IS NOT NULL)),
    CONSTRAINT holds_capture_within_amount CHECK (captured_amount > 0 AND captured_amount <= amount),
    FOREIGN KEY (wallet_id, currency) REFERENCES wallets (id, currency)
);
CREATE INDEX holds_due ON holds (expires_at) WHERE status = 'held';
CREATE INDEX holds_open_by_wallet ON holds (wallet_id) WHERE status = 'held';

-- A hold is decided once: after `held`, no column changes again.
CREATE FUNCTION holds_decided_are_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.status <> 'held' THEN
        RAISE EXCEPTION 'hold % is % and cannot change', OLD.id, OLD.status USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER holds_final BEFORE UPDATE OR DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION holds_decided_are_final();

-- At commit, a wallet's held money is the sum of its open holds: a hold and its wallet are
-- always written together, whichever path wrote them.
CREATE FUNCTION wallet_held_must_match_holds() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    recorded bigint;
    open_total numeric;
BEGIN
    SELECT held INTO recorded FROM wallets WHERE id = NEW.wallet_id;
    SELECT coalesce(sum(amount), 0) INTO open_total FROM holds WHERE wallet_id = NEW.wallet_id AND status = 'held';
    IF recorded <> open_total THEN
        RAISE EXCEPTION 'wallet % holds % but its open holds add up to %', NEW.wallet_id, recorded, open_total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER holds_match_wallet AFTER INSERT OR UPDATE ON holds
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION wallet_held_must_match_holds();

CREATE FUNCTION wallet_held_must_match_own_holds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.held <> (SELECT coalesce(sum(amount), 0) FROM holds WHERE wallet_id = NEW.id AND status = 'held') THEN
        RAISE EXCEPTION 'wallet % holds % but its open holds add up to something else', NEW.id, NEW.held
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER wallets_held_match_holds AFTER UPDATE OF held ON wallets
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.held IS DISTINCT FROM OLD.held)
    EXECUTE FUNCTION wallet_held_must_match_own_holds();
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("""
        DROP TABLE holds;
        DROP TRIGGER wallets_held_match_holds ON wallets;
        DROP TRIGGER wallets_refuse_closed_users ON wallets;
        DROP TRIGGER wallets_inactive_no_movement ON wallets;
        DROP FUNCTION wallet_held_must_match_holds, wallet_held_must_match_own_holds, holds_decided_are_final,
            wallets_not_for_closed_users, wallets_refuse_inactive_movement;
        UPDATE wallets SET status = 'frozen' WHERE status = 'closed';
        ALTER TABLE wallets DROP CONSTRAINT wallets_held_within_balance, DROP CONSTRAINT wallets_closed_are_users,
            DROP CONSTRAINT wallets_status_check, DROP COLUMN held, DROP COLUMN status_reason,
            ADD CONSTRAINT wallets_status_check CHECK (status IN ('active', 'frozen'));
        ALTER TABLE users DROP COLUMN closed_at;
    """)
