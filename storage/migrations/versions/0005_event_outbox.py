"""The event outbox: one row per posting to a user wallet, written by the transaction that posts it.

Revision ID: 0005

A statement trigger on `postings` writes the rows, so every path that moves money (the
transfer path, a bulk-credit chunk, a hand-written INSERT) emits its events in its own
transaction with no code of its own and no statement per row: one INSERT ... SELECT over
the statement's transition table, which PostgreSQL already builds for
`postings_new_entries_only`. A rolled-back movement leaves no outbox row.

A row holds only the posting's id: postings and journal entries are append-only, so the
publisher reads the event's facts from them when it publishes. The publisher deletes the
rows it has published, so the table holds only what is still to publish.

Order per wallet: a movement posts to a wallet only while it holds the wallet's row lock,
and the lock is released at commit, so for one wallet a smaller outbox id always commits
first. Publishing in id order therefore publishes each wallet's events in ledger order.
"""
from alembic import op

revision = "0005"
down_revision = "0004"

SCHEMA = """
CREATE TABLE event_outbox (
    id bigserial PRIMARY KEY,
    posting_id bigint NOT NULL
);

CREATE FUNCTION postings_to_event_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- System wallets (bank, fees, bulk_funding) have no user to tell.
    INSERT INTO event_outbox (posting_id)
    SELECT i.id FROM inserted i JOIN wallets w ON w.id = i.wallet_id
     WHERE w.user_id IS NOT NULL
     ORDER BY i.id;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_event_outbox AFTER INSERT ON postings
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
    EXECUTE FUNCTION postings_to_event_outbox();
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("""
        DROP TRIGGER postings_event_outbox ON postings; DROP FUNCTION postings_to_event_outbox();
        DROP TABLE event_outbox;
    """)
