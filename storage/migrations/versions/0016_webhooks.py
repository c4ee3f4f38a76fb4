"""Signed webhooks: subscriptions, an event outbox, and one delivery per event and subscription.

Revision ID: 0016

- `webhook_subscriptions`: a URL, the event types it wants, and the secret that signs its
  deliveries (the API shows it once; it is kept here because signing needs it). Deleting a
  subscription sets `deleted_at`: its deliveries stay readable in the database as history.
- `webhook_events`: the outbox. `webhook_emit(type, object_id, ordering_key, payload)` writes
  the event and, in the same statement's transaction, one `webhook_deliveries` row per live
  subscription to its type, so an event exists exactly when the change it reports committed.
  Every emitter goes through that one function: Python (`pipeline.webhooks.emit`) and the
  trigger below.
- The activity events come from `bulk_activity_history`, which every status change of an
  activity already writes in its own transaction: a row trigger turns a change into
  `activity.<status>` (the settled statuses once the activity is final, the others when the
  status changes) and, for an activity of kind `reversal` that became final, into
  `reversal.completed`. The activity row is read as JSON (`kind` and `reverses_activity_id`
  came with migration 0014; an activity without them reads as a credit).
- `webhook_deliveries`: one per (event, subscription), with its state (pipeline/webhooks/__init__.py),
  attempts, the next attempt's time, and `dispatch`, the number of the queue message that
  may attempt it now (older messages are no-ops). `ordering_key` (the activity for activity
  events) orders a subscription's deliveries: the oldest PENDING one of a key goes first.
- `webhook_attempts`: every attempt, with its HTTP status or the error.
"""
from alembic import op

revision = "0016"
down_revision = "0014"  # chained after main's latest (0014, reversals) on rebase; the lead re-chains at merge

SCHEMA = r"""
CREATE TABLE webhook_subscriptions (
    id uuid PRIMARY KEY,
    url text NOT NULL CHECK (length(url) <= 2000),
    events text[] NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 32),
    description text CHECK (length(description) <= 500),
    secret text NOT NULL,
    created_by bigint REFERENCES api_keys (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE INDEX webhook_subscriptions_live ON webhook_subscriptions (created_at, id) WHERE deleted_at IS NULL;

CREATE TABLE webhook_events (
    id bigserial PRIMARY KEY,
    type text NOT NULL CHECK (type ~ '^[a-z_]+\.[a-z_]+$'),
    object_id text NOT NULL,
    ordering_key text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES webhook_subscriptions (id),
    event_id bigint NOT NULL REFERENCES webhook_events (id),
    ordering_key text NOT NULL,
    status text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Failed attempts since the delivery was created or last replayed: what the pauses grow with.
    failures integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_status_code integer,
    last_error text CHECK (length(last_error) <= 500),
    next_attempt_at timestamptz,
    dispatch integer NOT NULL DEFAULT 0,
    -- A message or an attempt holds the delivery until then; past it, the dispatcher sends it again.
    leased_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, subscription_id),
    CHECK ((status = 'PENDING') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX webhook_deliveries_lane ON webhook_deliveries (subscription_id, ordering_key, id)
    WHERE status = 'PENDING';
CREATE INDEX webhook_deliveries_by_subscription ON webhook_deliveries (subscription_id, id);

CREATE TABLE webhook_attempts (
    id bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id),
    at timestamptz NOT NULL DEFAULT now(),
    status_code integer,
    error text CHECK (length(error) <= 500),
    duration_ms integer NOT NULL CHECK (duration_ms >= 0)
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);

CREATE FUNCTION webhook_emit(emitted_type text, emitted_object_id text, emitted_ordering_key text,
                             emitted_payload jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    emitted_id bigint;
BEGIN
    INSERT INTO webhook_events (type, object_id, ordering_key, payload)
    VALUES (emitted_type, emitted_object_id, emitted_ordering_key, emitted_payload) RETURNING id INTO emitted_id;
    INSERT INTO webhook_deliveries (subscription_id, event_id, ordering_key, next_attempt_at)
    SELECT s.id, emitted_id, emitted_ordering_key, now() FROM webhook_subscriptions s
     WHERE s.deleted_at IS NULL AND emitted_type = ANY (s.events)
     ORDER BY s.id;
    RETURN emitted_id;
END $$;

CREATE FUNCTION bulk_activity_history_to_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    activity jsonb;
    kind text;
    payload jsonb;
BEGIN
    IF NEW.to_status IN ('COMPLETED', 'PARTIALLY_COMPLETED', 'FAILED') THEN
        IF NOT NEW.final THEN
            RETURN NULL;  -- an automatic retry is still due: the outcome is not known yet
        END IF;
    ELSIF NEW.to_status IN ('AWAITING_APPROVAL', 'AWAITING_FUNDS', 'REJECTED', 'CANCELLED') THEN
        IF NEW.from_status IS NOT DISTINCT FROM NEW.to_status THEN
            RETURN NULL;
        END IF;
    ELSE
        RETURN NULL;
    END IF;
    -- As JSON, so that columns added later (`kind`) are read when they exist.
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
    PERFORM webhook_emit('activity.' || lower(NEW.to_status), NEW.activity_id::text, NEW.activity_id::text,
                         payload);
    IF kind = 'reversal' AND NEW.final AND NEW.to_status IN ('COMPLETED', 'PARTIALLY_COMPLETED', 'FAILED') THEN
        PERFORM webhook_emit('reversal.completed', NEW.activity_id::text, NEW.activity_id::text, payload);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER bulk_activity_history_webhooks AFTER INSERT ON bulk_activity_history
    FOR EACH ROW EXECUTE FUNCTION bulk_activity_history_to_webhooks();
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("""
        DROP TRIGGER bulk_activity_history_webhooks ON bulk_activity_history;
        DROP FUNCTION bulk_activity_history_to_webhooks(); DROP FUNCTION webhook_emit(text, text, text, jsonb);
        DROP TABLE webhook_attempts, webhook_deliveries, webhook_events, webhook_subscriptions;
    """)
