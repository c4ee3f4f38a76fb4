"""Funding accounts that hold real money, reservations, and cancelled rows (issue 9).

Revision ID: 0011

- `funding_accounts`: named budgets; `default` exists from here on. Each holds one wallet
  per currency (system_name 'funding'), which never goes below zero.
- A released activity reserves its valid total from its funding account into wallets of
  its own (system_name 'reservation', sharded by chunk number so that chunks of one file
  never queue behind one row); chunks credit users out of them, and cancelled rows give
  their money back. `bulk_activities.reservation_shards` is set at release.
- What becomes of `bulk_funding`: its shards keep the (negative) balances of every credit
  paid before this migration, as history; nothing draws from them any more. The unpaid rows
  of activities already released (PENDING or FAILED) are reserved here from the
  `bulk_funding` shard 0 of their currency, so that they finish, or can be retried or
  cancelled, exactly like new ones. Reconciliation holds throughout: every one of these
  moves is a balanced journal entry.
"""
from alembic import op

revision = "0011"
down_revision = "0010"

UNCAPPED = "('bank', 'fees', 'bulk_funding')"

SCHEMA = f"""
CREATE TABLE funding_accounts (
    name text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{{0,62}}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO funding_accounts (name) VALUES ('default');

ALTER TABLE wallets
    DROP CONSTRAINT wallets_system_name_check,
    ADD CONSTRAINT wallets_system_name_check
        CHECK (system_name IN ('bank', 'fees', 'bulk_funding', 'funding', 'reservation')),
    ADD COLUMN funding_account text REFERENCES funding_accounts (name),
    ADD COLUMN activity_id uuid REFERENCES bulk_activities (id),
    ADD CONSTRAINT wallets_funding_owner CHECK (
        (coalesce(system_name, '') = 'funding') = (funding_account IS NOT NULL)
        AND (coalesce(system_name, '') = 'reservation') = (activity_id IS NOT NULL)),
    DROP CONSTRAINT wallets_user_balance_not_negative,
    -- coalesce: a user wallet has no system name, and NULL IN (...) would pass any balance.
    ADD CONSTRAINT wallets_user_balance_not_negative CHECK (coalesce(system_name, '') IN {UNCAPPED} OR balance >= 0),
    DROP CONSTRAINT wallets_one_per_system_shard;
-- Not partial: the transfer path finds a bank or fees shard by (system_name, currency, shard)
-- with parameters, and a partial index whose predicate a parameter cannot prove is never used
-- (a scan of every wallet, about 100 ms a transfer at 100,000 wallets). User wallets have no
-- system name, and NULLs are distinct.
CREATE UNIQUE INDEX wallets_one_per_system_shard ON wallets (
    system_name, currency, shard, coalesce(funding_account, ''),
    coalesce(activity_id, '00000000-0000-0000-0000-000000000000'));
CREATE UNIQUE INDEX wallets_one_per_funding_account ON wallets (funding_account, currency)
    WHERE system_name = 'funding';
CREATE UNIQUE INDEX wallets_one_per_reservation_shard ON wallets (activity_id, currency, shard)
    WHERE system_name = 'reservation';

ALTER TABLE journal_entries
    DROP CONSTRAINT journal_entries_kind_check,
    ADD CONSTRAINT journal_entries_kind_check CHECK (kind IN (
        'deposit', 'withdrawal', 'transfer', 'bulk_credit', 'funding_top_up', 'reservation', 'reservation_return')),
    ADD COLUMN funding_account text;

ALTER TABLE bulk_activities
    ADD COLUMN funding_account text NOT NULL DEFAULT 'default' REFERENCES funding_accounts (name),
    ADD COLUMN reservation_shards smallint CHECK (reservation_shards BETWEEN 1 AND 64),
    ADD COLUMN cancelled_records integer NOT NULL DEFAULT 0 CHECK (cancelled_records >= 0),
    -- Set by the first step of a cancel: from then on no chunk starts and nothing is released.
    ADD COLUMN cancel_requested_at timestamptz,
    ADD COLUMN cancel_reason text CHECK (length(cancel_reason) <= 500),
    -- When a release last found the funding account short: the sweep tries the longest untried first.
    ADD COLUMN release_tried_at timestamptz,
    DROP CONSTRAINT bulk_activities_status_check,
    ADD CONSTRAINT bulk_activities_status_check CHECK (status IN (
        'UPLOADED', 'AWAITING_APPROVAL', 'SCHEDULED', 'AWAITING_FUNDS', 'PROCESSING', 'COMPLETED',
        'PARTIALLY_COMPLETED', 'FAILED', 'REJECTED', 'CANCELLED')),
    -- Maker-checker: who approved (an API key other than the uploader's) and when; when to release.
    ADD COLUMN approved_by bigint REFERENCES api_keys (id),
    ADD COLUMN approved_at timestamptz,
    ADD COLUMN execute_at timestamptz,
    ADD CONSTRAINT bulk_activities_maker_is_not_checker CHECK (approved_by IS NULL OR approved_by IS DISTINCT FROM api_key_id),
    DROP CONSTRAINT bulk_activities_counters_add_up,
    ADD CONSTRAINT bulk_activities_counters_add_up CHECK (
        valid_records + invalid_records = total_records
        AND successful_records + failed_records + pending_records + cancelled_records = valid_records
        AND least(valid_records, invalid_records, successful_records, failed_records, pending_records) >= 0),
    DROP CONSTRAINT bulk_activities_final_is_settled,
    ADD CONSTRAINT bulk_activities_final_is_settled CHECK ((completed_at IS NOT NULL) = (
        status IN ('COMPLETED', 'PARTIALLY_COMPLETED', 'FAILED', 'CANCELLED', 'REJECTED')
        AND pending_records = 0 AND next_retry_at IS NULL)) NOT VALID;
CREATE INDEX bulk_activities_awaiting_funds ON bulk_activities (release_tried_at NULLS FIRST, created_at)
    WHERE status = 'AWAITING_FUNDS';
CREATE INDEX bulk_activities_scheduled ON bulk_activities (execute_at) WHERE status = 'SCHEDULED';

ALTER TABLE api_keys
    DROP CONSTRAINT api_keys_scope_check,
    ADD CONSTRAINT api_keys_scope_check CHECK (scope IN ('admin', 'operator', 'approver') OR scope LIKE 'user:%');

ALTER TABLE bulk_rows
    DROP CONSTRAINT bulk_rows_status_check,
    ADD CONSTRAINT bulk_rows_status_check CHECK (status IN ('PENDING', 'SUCCESS', 'FAILED', 'INVALID', 'CANCELLED'));
ALTER TABLE bulk_chunks
    DROP CONSTRAINT bulk_chunks_state_check,
    ADD CONSTRAINT bulk_chunks_state_check CHECK (state IN ('PENDING', 'DONE', 'FAILED', 'CANCELLED'));
"""

# Reserves the unpaid rows of every activity released before this migration, one balanced
# journal entry per activity and currency, from bulk_funding shard 0 (which may go negative).
LEGACY_RESERVATIONS = """
DO $$
DECLARE
    unpaid record;
    entry uuid;
    funding_id bigint;
    funding_balance bigint;
    reservation_id bigint;
BEGIN
    UPDATE bulk_activities SET reservation_shards = 1;
    FOR unpaid IN SELECT activity_id, currency, sum(amount_minor) AS amount FROM bulk_rows
                   WHERE status IN ('PENDING', 'FAILED') GROUP BY activity_id, currency LOOP
        INSERT INTO wallets (system_name, shard, currency) VALUES ('bulk_funding', 0, unpaid.currency)
            ON CONFLICT DO NOTHING;
        SELECT id, balance INTO funding_id, funding_balance FROM wallets
         WHERE system_name = 'bulk_funding' AND shard = 0 AND currency = unpaid.currency FOR UPDATE;
        INSERT INTO wallets (system_name, activity_id, shard, currency)
            VALUES ('reservation', unpaid.activity_id, 0, unpaid.currency) RETURNING id INTO reservation_id;
        entry := gen_random_uuid();
        INSERT INTO journal_entries (id, kind, currency, amount, activity_id, funding_account, metadata)
            VALUES (entry, 'reservation', unpaid.currency, unpaid.amount, unpaid.activity_id, NULL,
                    jsonb_build_object('migration', '0011', 'from', 'bulk_funding'));
        INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after) VALUES
            (entry, funding_id, unpaid.currency, -unpaid.amount, funding_balance - unpaid.amount),
            (entry, reservation_id, unpaid.currency, unpaid.amount, unpaid.amount);
        UPDATE wallets SET balance = balance - unpaid.amount, updated_at = now() WHERE id = funding_id;
        UPDATE wallets SET balance = unpaid.amount, updated_at = now() WHERE id = reservation_id;
    END LOOP;
END $$;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(LEGACY_RESERVATIONS)


def downgrade() -> None:
    raise NotImplementedError("0011 moves money into reservations; restore a backup to go back")
