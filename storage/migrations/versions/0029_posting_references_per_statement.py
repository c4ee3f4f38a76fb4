"""Postings' references checked once per statement, not by two foreign keys a row; wallets at 50% fill.

Revision ID: 0029

A 5,000-row bulk-credit chunk spent 6 to 8% of its time in 10,000 one-row queries: the
foreign keys postings -> journal_entries and postings -> wallets (id, currency), which
PostgreSQL checks row by row (bench/README.md, "Where a bulk-credit chunk's time goes").
Both statement triggers of `postings` already read the statement's postings from its
transition table, one of them joined with `wallets`, the other with `journal_entries`:
they now refuse what the foreign keys refused, in the same pass.

What each foreign key guaranteed, and what guarantees it now:

- *A posting names an existing journal entry.* `postings_join_new_entries_only` already
  required the entry to be one of the same transaction; it now also refuses an entry that is
  not there (SQLSTATE 23503, as the foreign key did), and looks each distinct entry up once
  (a chunk's 5,000 postings name one or two). An entry of the same transaction cannot be
  deleted or changed by anyone else, and journal entries are append-only (0001): no other
  transaction can take it away, so the foreign key's row lock (FOR KEY SHARE) guarded nothing.
- *A posting names an existing wallet of its own currency.* `postings_to_event_outbox`
  already joined every posting with its wallet to leave out system wallets; the join now
  matches on (id, currency), keeps the postings it did not match, and refuses them
  (SQLSTATE 23503). The foreign key also kept a posted wallet from being deleted or given
  another id or currency while a posting names it (its row lock made a concurrent delete
  wait for the posting's commit). Wallets are never deleted and never change either: no code
  does it, and the triggers `wallets_never_deleted` and `wallets_keep_their_key` now refuse it
  outright (a wallet without postings too, and TRUNCATE). A wallet visible to the check
  therefore stays, with its key, and no lock is needed to keep it.
- Both checks run when the INSERT statement ends, like a foreign key that is not deferred,
  and see what the statement's snapshot sees (for a posting to a wallet committed after it,
  the foreign key refused it as well).

`holds` keeps its foreign key to wallets (one row at a time, not on the bulk path).

Wallets are filled to 50% (was 85%, 0006; new pages only). A chunk updates every wallet of
its rows once, most of a page's wallets together: at 85% a page had room for the new versions
of about 10 of its 59 wallets, so about 1 balance update in 5 was HOT and the others wrote a
new entry in each of the table's four indexes that take every wallet. At 50% every one fits
(5,000 balance updates: 100% HOT; buffer reads of the posting statement 33 to 22 a row, its
backend CPU 0.56 times, in a rolled-back A/B). The cost: the table takes about 1.7 times the
pages (35 wallets a page instead of 59), about 230 MB instead of 135 MB at 1,000,000 wallets.
"""
from alembic import op

revision = "0029"
down_revision = "0026"

UPGRADE = """
ALTER TABLE postings DROP CONSTRAINT postings_journal_entry_id_fkey,
                     DROP CONSTRAINT postings_wallet_id_currency_fkey;

CREATE OR REPLACE FUNCTION postings_join_new_entries_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    refused record;
BEGIN
    -- Each distinct entry once: a chunk's postings all name one entry per currency.
    SELECT e.journal_entry_id, j.id IS NULL AS missing INTO refused
      FROM (SELECT DISTINCT journal_entry_id FROM inserted) e
      LEFT JOIN journal_entries j ON j.id = e.journal_entry_id
     WHERE j.id IS NULL OR j.transaction_id <> txid_current()
     ORDER BY j.id IS NULL DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    ELSIF refused.missing THEN
        RAISE EXCEPTION 'a posting names journal entry %, which does not exist', refused.journal_entry_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RAISE EXCEPTION 'postings may only be added to a journal entry of the same transaction'
        USING ERRCODE = 'check_violation';
END $$;

CREATE OR REPLACE FUNCTION postings_to_event_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    orphan record;
BEGIN
    -- One join of the postings with their wallets serves both: the events (system wallets
    -- such as bank, fees, funding have no user to tell) and the check that every posting's
    -- wallet exists in the posting's currency (what the foreign key checked, 0029).
    WITH matched AS (
        SELECT i.id, i.wallet_id, i.currency, w.id IS NOT NULL AS known, w.user_id IS NOT NULL AS to_user
          FROM inserted i LEFT JOIN wallets w ON w.id = i.wallet_id AND w.currency = i.currency
    ), published AS (
        INSERT INTO event_outbox (posting_id)
        SELECT id FROM matched WHERE to_user ORDER BY id
    )
    SELECT wallet_id, currency INTO orphan FROM matched WHERE NOT known LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a posting names wallet % in %, and there is no such wallet in that currency',
            orphan.wallet_id, orphan.currency USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

-- Postings name wallets without a foreign key: a wallet, once made, stays, with its id and currency.
CREATE FUNCTION wallets_are_permanent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'wallets are never deleted and keep their id and currency: % is not allowed', TG_OP
        USING ERRCODE = 'foreign_key_violation';
END $$;
CREATE TRIGGER wallets_never_deleted BEFORE DELETE ON wallets
    FOR EACH ROW EXECUTE FUNCTION wallets_are_permanent();
CREATE TRIGGER wallets_never_truncated BEFORE TRUNCATE ON wallets
    FOR EACH STATEMENT EXECUTE FUNCTION wallets_are_permanent();
CREATE TRIGGER wallets_keep_their_key BEFORE UPDATE OF id, currency ON wallets
    FOR EACH ROW WHEN (NEW.id <> OLD.id OR NEW.currency <> OLD.currency)
    EXECUTE FUNCTION wallets_are_permanent();

ALTER TABLE wallets SET (fillfactor = 50);
"""

DOWNGRADE = """
ALTER TABLE wallets SET (fillfactor = 85);
DROP TRIGGER wallets_never_deleted ON wallets;
DROP TRIGGER wallets_never_truncated ON wallets;
DROP TRIGGER wallets_keep_their_key ON wallets;
DROP FUNCTION wallets_are_permanent();

CREATE OR REPLACE FUNCTION postings_join_new_entries_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted i JOIN journal_entries j ON j.id = i.journal_entry_id
                WHERE j.transaction_id <> txid_current()) THEN
        RAISE EXCEPTION 'postings may only be added to a journal entry of the same transaction'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION postings_to_event_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- System wallets (bank, fees, bulk_funding) have no user to tell.
    INSERT INTO event_outbox (posting_id)
    SELECT i.id FROM inserted i JOIN wallets w ON w.id = i.wallet_id
     WHERE w.user_id IS NOT NULL
     ORDER BY i.id;
    RETURN NULL;
END $$;

ALTER TABLE postings ADD CONSTRAINT postings_journal_entry_id_fkey
                         FOREIGN KEY (journal_entry_id) REFERENCES journal_entries (id),
                     ADD CONSTRAINT postings_wallet_id_currency_fkey
                         FOREIGN KEY (wallet_id, currency) REFERENCES wallets (id, currency);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
