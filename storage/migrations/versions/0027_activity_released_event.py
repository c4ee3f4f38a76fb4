"""The `activity.released` webhook event (issue 9, item 2: "the scheduler releases it once the
account is topped up, and an event fires").

Revision ID: 0027

An activity that waited in AWAITING_FUNDS goes back to UPLOADED in the transaction that
reserves its total (pipeline/bulk/release.py, reason "funds reserved"). The history trigger of
migration 0016 turned only the waiting into an event (`activity.awaiting_funds`), so a
subscriber learnt that a payout was stuck but never that it moved again. This replaces the
trigger function with one that also turns that release into `activity.released`, with the
same payload as every activity event. Other moves to UPLOADED (an approval, `execute_at`
reached) are not events: they may turn into AWAITING_FUNDS in the same transaction, and an
approval is the subscriber's own action.
"""
from alembic import op

revision = "0027"
down_revision = "0015"

#: The branch this migration adds; the downgrade is the same function without it.
RELEASED = """
    ELSIF NEW.from_status = 'AWAITING_FUNDS' AND NEW.to_status = 'UPLOADED' THEN
        event_type := 'activity.released';"""

FUNCTION = r"""
CREATE OR REPLACE FUNCTION bulk_activity_history_to_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    activity jsonb;
    kind text;
    payload jsonb;
    event_type text := 'activity.' || lower(NEW.to_status);
BEGIN
    IF NEW.to_status IN ('COMPLETED', 'PARTIALLY_COMPLETED', 'FAILED') THEN
        IF NOT NEW.final THEN
            RETURN NULL;  -- an automatic retry is still due: the outcome is not known yet
        END IF;
    ELSIF NEW.to_status IN ('AWAITING_APPROVAL', 'AWAITING_FUNDS', 'REJECTED', 'CANCELLED') THEN
        IF NEW.from_status IS NOT DISTINCT FROM NEW.to_status THEN
            RETURN NULL;
        END IF;{released}
    ELSE
        RETURN NULL;
    END IF;
    -- As JSON, so that columns added later are read when they exist.
    SELECT to_jsonb(a) INTO activity FROM bulk_activities a WHERE a.id = NEW.activity_id;
    kind := coalesce(activity ->> 'kind', 'credit');
    payload := jsonb_build_object(
        'activity_id', NEW.activity_id, 'kind', kind, 'reverses', activity -> 'reverses_activity_id',
        'status', NEW.to_status,
        'previous_status', NEW.from_status, 'final', NEW.final, 'reason', NEW.reason,
        'file_name', activity -> 'file_name', 'funding_account', activity -> 'funding_account',
        'total_records', activity -> 'total_records', 'valid_records', activity -> 'valid_records',
        'invalid_records', activity -> 'invalid_records', 'successful_records', activity -> 'successful_records',
        'failed_records', activity -> 'failed_records', 'pending_records', activity -> 'pending_records',
        'cancelled_records', activity -> 'cancelled_records',
        'changed_at', to_char(NEW.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
    PERFORM webhook_emit(event_type, NEW.activity_id::text, NEW.activity_id::text, payload);
    IF kind = 'reversal' AND NEW.final AND NEW.to_status IN ('COMPLETED', 'PARTIALLY_COMPLETED', 'FAILED') THEN
        PERFORM webhook_emit('reversal.completed', NEW.activity_id::text, NEW.activity_id::text, payload);
    END IF;
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.execute(FUNCTION.replace("{released}", RELEASED))


def downgrade() -> None:
    op.execute(FUNCTION.replace("{released}", ""))
