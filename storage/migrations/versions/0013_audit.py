"""The audit trail: one row per operator or admin action, in the action's own transaction.

Revision ID: 0013

`audit_events` is append-only (the ledger's trigger refuses UPDATE, DELETE and TRUNCATE):
an action that happened cannot be unwritten, only followed by another. `api_key_id` is the
acting key when the action came through the API; `actor_type` says who acted otherwise
(the command line, the scheduler, a worker). Indexes serve the three filters of
`GET /api/v1/audit-events` (actor, action, object), each newest first by id.
"""
from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE audit_events (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT clock_timestamp(),
            actor_type text NOT NULL CHECK (actor_type IN ('api_key', 'worker', 'scheduler', 'command_line')),
            api_key_id bigint REFERENCES api_keys (id),
            action text NOT NULL CHECK (action ~ '^[a-z_]+(\\.[a-z_]+)*$'),
            object_type text NOT NULL,
            object_id text NOT NULL,
            detail jsonb NOT NULL DEFAULT '{}'::jsonb,
            CHECK ((actor_type = 'api_key') = (api_key_id IS NOT NULL))
        );
        CREATE INDEX audit_events_by_key ON audit_events (api_key_id, id);
        CREATE INDEX audit_events_by_action ON audit_events (action, id);
        CREATE INDEX audit_events_by_object ON audit_events (object_id, id);
        CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_events
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
    """)


def downgrade() -> None:
    op.execute("DROP TABLE audit_events")
