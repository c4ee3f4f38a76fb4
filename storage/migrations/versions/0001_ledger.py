"""The wallet ledger: users, wallets, journal entries, postings, API keys, idempotency keys.

Revision ID: 0001
"""
from alembic import op

revision = "0001"
down_revision = None

SCHEMA = """
CREATE TABLE users (
    id uuid PRIMARY KEY,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email text NOT NULL UNIQUE CHECK (length(email) BETWEEN 3 AND 320),
    external_id text UNIQUE CHECK (length(external_id) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One wallet per user and currency; system wallets (bank, fees, bulk_funding) have no
-- user and come in shards so that concurrent movements do not queue behind one row.
CREATE TABLE wallets (
    id bigserial PRIMARY KEY,
    user_id uuid REFERENCES users (id),
    system_name text CHECK (system_name IN ('bank', 'fees', 'bulk_funding')),
    shard smallint NOT NULL DEFAULT 0 CHECK (shard BETWEEN 0 AND 63),
    currency char(3) NOT NULL,
    balance bigint NOT NULL DEFAULT 0,
    version bigint NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT wallets_owner_is_user_or_system CHECK ((user_id IS NULL) <> (system_name IS NULL)),
    CONSTRAINT wallets_user_balance_not_negative CHECK (system_name IS NOT NULL OR balance >= 0),
    CONSTRAINT wallets_one_per_user_and_currency UNIQUE (user_id, currency),
    CONSTRAINT wallets_one_per_system_shard UNIQUE (system_name, currency, shard),
    CONSTRAINT wallets_id_currency UNIQUE (id, currency)
);

CREATE TABLE journal_entries (
    id uuid PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('deposit', 'withdrawal', 'transfer', 'bulk_credit')),
    idempotency_key text UNIQUE,
    currency char(3) NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    fee bigint NOT NULL DEFAULT 0 CHECK (fee >= 0),
    from_user_id uuid,
    to_user_id uuid,
    reference text,
    activity_id uuid,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The writing transaction, so postings can only join an entry in the same transaction.
    transaction_id bigint NOT NULL DEFAULT txid_current(),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE postings (
    id bigserial PRIMARY KEY,
    journal_entry_id uuid NOT NULL REFERENCES journal_entries (id),
    wallet_id bigint NOT NULL,
    currency char(3) NOT NULL,
    amount bigint NOT NULL CHECK (amount <> 0),
    balance_after bigint NOT NULL,
    -- A bulk-credit row is credited at most once, whatever the queue does.
    bulk_row_id bigint UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (wallet_id, currency) REFERENCES wallets (id, currency)
);
CREATE INDEX postings_by_wallet ON postings (wallet_id, id);
CREATE INDEX postings_by_journal_entry ON postings (journal_entry_id);

CREATE TABLE api_keys (
    id bigserial PRIMARY KEY,
    token_sha256 text NOT NULL UNIQUE,
    scope text NOT NULL CHECK (scope IN ('admin', 'operator') OR scope LIKE 'user:%'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Stored in the same database transaction as the money the request moves.
CREATE TABLE idempotency_keys (
    api_key_id bigint NOT NULL REFERENCES api_keys (id),
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_sha256 text NOT NULL,
    status_code smallint NOT NULL,
    response json NOT NULL,  -- json, not jsonb: a replay returns the same bytes in the same order
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, key)
);

-- Double entry, checked by the database as well as by Python: at commit, every journal
-- entry written in the transaction must sum to zero per currency.
CREATE FUNCTION journal_entry_must_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced record;
BEGIN
    SELECT currency, sum(amount) AS total, count(*) AS postings INTO unbalanced
      FROM postings WHERE journal_entry_id = NEW.id
     GROUP BY currency HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance: % postings in % sum to %',
            NEW.id, unbalanced.postings, unbalanced.currency, unbalanced.total
            USING ERRCODE = 'check_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM postings WHERE journal_entry_id = NEW.id) THEN
        RAISE EXCEPTION 'journal entry % has no postings', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER journal_entries_balance AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION journal_entry_must_balance();

-- The balance check above runs once per entry, so postings may only be added to an entry
-- written by the same database transaction.
CREATE FUNCTION postings_join_new_entries_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted i JOIN journal_entries j ON j.id = i.journal_entry_id
                WHERE j.transaction_id <> txid_current()) THEN
        RAISE EXCEPTION 'postings may only be added to a journal entry of the same transaction'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_new_entries_only AFTER INSERT ON postings
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
    EXECUTE FUNCTION postings_join_new_entries_only();

-- The ledger is append-only.
CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("""
        DROP TABLE idempotency_keys, api_keys, postings, journal_entries, wallets, users CASCADE;
        DROP FUNCTION journal_entry_must_balance, postings_join_new_entries_only, ledger_is_append_only;
    """)
