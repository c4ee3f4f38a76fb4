"""The system's state for /metrics, read from PostgreSQL in one short read-only transaction.

Each statement is an index probe or a bounded scan, so a scrape stays cheap however large
the history grows:
- oldest pending chunk: `bulk_chunks_pending_since` (migration 0025);
- oldest due retry: `bulk_rows_retry_due` on next_attempt_at (migrations 0004, 0006);
- last clean reconciliation: `reconciliations_newest`, newest first;
- outbox backlog: counted up to OUTBOX_ROWS_COUNTED_MAX, so a huge backlog cannot make the
  scrape slow (the metric says "at least" then);
- scheduler leader: the one `scheduler_lease` row;
- funding balances: the funding wallets, at most FUNDING_WALLETS_READ_MAX of them;
- open activities per status: `bulk_activities_by_status`, only the statuses before settlement.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

#: Outbox rows counted at most; a larger backlog reads as this many.
OUTBOX_ROWS_COUNTED_MAX = 100_000
#: Funding wallets (account x currency) read at most; a label set per wallet.
FUNDING_WALLETS_READ_MAX = 1_000
#: The longest the whole read may take on the server, in milliseconds.
STATE_STATEMENT_TIMEOUT_MS = 2_000
#: The longest a scrape waits to connect, in seconds.
STATE_CONNECT_TIMEOUT_S = 2
#: Activity statuses before the rows settle: an activity in one of them still has all its work ahead.
OPEN_STATUSES = ("UPLOADED", "AWAITING_APPROVAL", "SCHEDULED", "AWAITING_FUNDS", "PROCESSING")
#: The name of the scheduler's lease row (jobs/leadership.py LEASE_NAME).
SCHEDULER_LEASE_NAME = "scheduler"

_AGES_AND_COUNTS = text("""
SELECT
  (SELECT extract(epoch FROM clock_timestamp() - min(pending_since)) FROM bulk_chunks WHERE state = 'PENDING'),
  (SELECT extract(epoch FROM clock_timestamp() - min(next_attempt_at)) FROM bulk_rows
    WHERE next_attempt_at IS NOT NULL AND status = 'FAILED' AND next_attempt_at <= clock_timestamp()),
  (SELECT extract(epoch FROM clock_timestamp() - finished_at) FROM reconciliations
    WHERE status = 'clean' ORDER BY created_at DESC LIMIT 1),
  (SELECT count(*) FROM (SELECT 1 FROM event_outbox LIMIT :outbox_max) backlog),
  (SELECT count(*) FROM scheduler_lease WHERE name = :lease_name AND expires_at > clock_timestamp())
""")

_FUNDING = text("""
SELECT funding_account, currency, balance FROM wallets
 WHERE system_name = 'funding' ORDER BY funding_account, currency LIMIT :limit
""")

_OPEN_ACTIVITIES = text("""
SELECT status, count(*) FROM bulk_activities WHERE status = ANY(CAST(:statuses AS text[])) GROUP BY status
""")


@dataclass(frozen=True)
class State:
    """Ages in seconds (0 when there is nothing of the kind), money in minor units."""

    oldest_pending_chunk_age_s: float
    oldest_due_retry_age_s: float
    #: None when no reconciliation has ever been clean.
    last_clean_reconciliation_age_s: float | None
    outbox_rows: int
    leader_present: bool
    #: ((funding account, currency, balance in minor units), ...)
    funding_balances: tuple[tuple[str, str, int], ...] = ()
    #: {status: activities}, every status of OPEN_STATUSES present
    open_activities: dict[str, int] = field(default_factory=dict)


def make_state_engine(database_url: str) -> Engine:
    """An engine apart from the app's pool, with no pool of its own: each scrape (every 15 s
    or so) opens one connection and closes it, so a busy app cannot make a scrape wait, a slow
    scrape cannot take a connection from the app, and an idle web holds no extra connection."""
    return create_engine(database_url, poolclass=NullPool, connect_args={
        "connect_timeout": STATE_CONNECT_TIMEOUT_S, "application_name": "wallet-metrics",
        "options": f"-c statement_timeout={STATE_STATEMENT_TIMEOUT_MS} -c default_transaction_read_only=on"})


def read_state(engine: Engine) -> State:
    """The state as of now. Raises sqlalchemy.exc.SQLAlchemyError when PostgreSQL cannot answer
    within STATE_STATEMENT_TIMEOUT_MS (or cannot be reached)."""
    with engine.connect() as connection:
        chunk_age, retry_age, clean_age, outbox, leaders = connection.execute(_AGES_AND_COUNTS, {
            "outbox_max": OUTBOX_ROWS_COUNTED_MAX, "lease_name": SCHEDULER_LEASE_NAME}).one()
        funding = connection.execute(_FUNDING, {"limit": FUNDING_WALLETS_READ_MAX}).all()
        open_activities = dict(connection.execute(_OPEN_ACTIVITIES, {"statuses": list(OPEN_STATUSES)}).all())
        connection.rollback()
    return State(
        oldest_pending_chunk_age_s=max(0.0, float(chunk_age or 0)),
        oldest_due_retry_age_s=max(0.0, float(retry_age or 0)),
        last_clean_reconciliation_age_s=None if clean_age is None else max(0.0, float(clean_age)),
        outbox_rows=int(outbox), leader_present=leaders > 0,
        funding_balances=tuple((account, currency, int(balance)) for account, currency, balance in funding),
        open_activities={status: int(open_activities.get(status, 0)) for status in OPEN_STATUSES})
