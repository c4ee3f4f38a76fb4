"""The reconciliation checks as set-based SQL over one REPEATABLE READ snapshot.

An incremental run looks at journal entries whose writing transaction is not older than
the horizon of the last clean run (the oldest transaction still running when it took its
snapshot), so an entry that committed late is never skipped; it also looks at every
wallet whose row was updated since that run started, which catches a balance changed
without a posting.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from pipeline.reconciliation import Evidence

# {scope} is every wallet on a full run, or the wallets touched since the horizon.
_WALLETS = """
WITH scope AS ({scope}),
sums AS (
    SELECT p.wallet_id, sum(p.amount) AS total, max(p.id) AS last_posting_id
      FROM postings p JOIN scope ON scope.id = p.wallet_id
     GROUP BY p.wallet_id
), checked AS (
    SELECT w.id, w.currency, w.balance, coalesce(s.total, 0) AS total, coalesce(last.balance_after, 0) AS last_balance_after
      FROM wallets w
      JOIN scope ON scope.id = w.id
      LEFT JOIN sums s ON s.wallet_id = w.id
      LEFT JOIN postings last ON last.id = s.last_posting_id
)
SELECT (SELECT count(*) FROM scope), id, currency, balance, total, last_balance_after FROM checked
 WHERE balance <> total OR balance <> last_balance_after
 UNION ALL SELECT (SELECT count(*) FROM scope), NULL, NULL, NULL, NULL, NULL
"""
_ALL_WALLETS = "SELECT id FROM wallets"
_TOUCHED_WALLETS = """
    SELECT id FROM wallets WHERE updated_at >= :since_time
    UNION
    SELECT p.wallet_id FROM journal_entries j JOIN postings p ON p.journal_entry_id = j.id
     WHERE j.transaction_id >= :since
"""

_UNBALANCED_ENTRIES = """
SELECT j.id::text, p.currency, sum(p.amount) AS total
  FROM journal_entries j LEFT JOIN postings p ON p.journal_entry_id = j.id
 {where}
 GROUP BY j.id, p.currency
HAVING coalesce(sum(p.amount), 1) <> 0
 LIMIT 1000
"""

# {scope} limits checks (d) and (e) to the activities that changed since the horizon.
_ACTIVITY_SCOPE_ALL = "SELECT id FROM bulk_activities"
_ACTIVITY_SCOPE_CHANGED = "SELECT id FROM bulk_activities WHERE updated_at >= :since_time OR status IN ('UPLOADED', 'PROCESSING')"

_ACTIVITY_COUNTERS = """
WITH scope AS ({scope}), counted AS (
    SELECT r.activity_id,
           count(*) AS total_records,
           count(*) FILTER (WHERE r.status <> 'INVALID') AS valid_records,
           count(*) FILTER (WHERE r.status = 'INVALID') AS invalid_records,
           count(*) FILTER (WHERE r.status = 'SUCCESS') AS successful_records,
           count(*) FILTER (WHERE r.status = 'FAILED') AS failed_records,
           count(*) FILTER (WHERE r.status = 'PENDING') AS pending_records,
           count(*) FILTER (WHERE r.status = 'CANCELLED') AS cancelled_records
      FROM bulk_rows r JOIN scope ON scope.id = r.activity_id
     GROUP BY r.activity_id
)
SELECT a.id::text, c.counter, c.expected, c.actual
  FROM bulk_activities a JOIN scope ON scope.id = a.id
  LEFT JOIN counted r ON r.activity_id = a.id
 CROSS JOIN LATERAL (VALUES
     ('total_records', coalesce(r.total_records, 0), a.total_records),
     ('valid_records', coalesce(r.valid_records, 0), a.valid_records),
     ('invalid_records', coalesce(r.invalid_records, 0), a.invalid_records),
     ('successful_records', coalesce(r.successful_records, 0), a.successful_records),
     ('failed_records', coalesce(r.failed_records, 0), a.failed_records),
     ('pending_records', coalesce(r.pending_records, 0), a.pending_records),
     ('cancelled_records', coalesce(r.cancelled_records, 0), a.cancelled_records)
 ) AS c(counter, expected, actual)
 WHERE c.expected <> c.actual AND a.status <> 'UPLOADED'
 LIMIT 1000
"""

# postings.bulk_row_id is UNIQUE, so a row has at most one posting: only its absence from
# a SUCCESS row, or its presence on a FAILED or INVALID row, can be wrong.
_ROW_POSTINGS = """
WITH scope AS ({scope})
SELECT r.id, r.status, (p.id IS NOT NULL)::int
  FROM bulk_rows r JOIN scope ON scope.id = r.activity_id
  LEFT JOIN postings p ON p.bulk_row_id = r.id
 WHERE (r.status = 'SUCCESS' AND p.id IS NULL) OR (r.status IN ('FAILED', 'INVALID', 'CANCELLED') AND p.id IS NOT NULL)
 LIMIT 1000
"""

# (f) What a released activity's reservation still holds is exactly what its unpaid rows
# (PENDING, FAILED) are owed: reserved, less paid, less returned by cancels.
_RESERVATIONS = """
WITH scope AS ({scope}), owed AS (
    SELECT r.activity_id, r.currency, sum(r.amount_minor) AS amount
      FROM bulk_rows r JOIN scope ON scope.id = r.activity_id
     WHERE r.status IN ('PENDING', 'FAILED')
     GROUP BY r.activity_id, r.currency
), held AS (
    SELECT w.activity_id, w.currency, sum(w.balance) AS amount
      FROM wallets w JOIN scope ON scope.id = w.activity_id
     WHERE w.system_name = 'reservation'
     GROUP BY w.activity_id, w.currency
)
SELECT a.id::text, coalesce(o.currency, h.currency), coalesce(o.amount, 0), coalesce(h.amount, 0)
  FROM bulk_activities a JOIN scope ON scope.id = a.id
  JOIN (owed o FULL JOIN held h ON h.activity_id = o.activity_id AND h.currency = o.currency)
    ON a.id = coalesce(o.activity_id, h.activity_id)
 WHERE a.kind = 'credit' AND a.reservation_shards IS NOT NULL AND coalesce(o.amount, 0) <> coalesce(h.amount, 0)
 LIMIT 1000
"""

# (g) A SUCCESS reversal row took back exactly a SUCCESS row of the credit it reverses: the same
# payee, amount and currency, and it holds that row's claim. (A reversal reserves nothing: its
# money goes from the payees to the funding account, so (f) is about credits only.)
_REVERSAL_ROWS = """
WITH scope AS ({scope})
SELECT r.id
  FROM bulk_activities a JOIN scope ON scope.id = a.id
  JOIN bulk_rows r ON r.activity_id = a.id
  LEFT JOIN bulk_rows o ON o.id = r.reverses_row_id
  LEFT JOIN bulk_reversal_claims c ON c.reversal_row_id = r.id
 WHERE a.kind = 'reversal' AND r.status = 'SUCCESS'
   AND (o.id IS NULL OR o.status <> 'SUCCESS' OR o.activity_id <> a.reverses_activity_id
        OR o.user_id <> r.user_id OR o.amount_minor <> r.amount_minor OR o.currency <> r.currency
        OR c.credit_row_id IS DISTINCT FROM o.id)
 LIMIT 1000
"""


class SqlReconciliations:
    def __init__(self, connection: Connection):
        self.connection = connection

    def create(self, reconciliation_id: str, full: bool) -> None:
        self.connection.execute(
            text("INSERT INTO reconciliations (id, full_pass, status) VALUES (:id, :full, 'queued')"),
            {"id": reconciliation_id, "full": full},
        )

    def discard(self, reconciliation_id: str) -> None:
        self.connection.execute(text("DELETE FROM reconciliations WHERE id = :id AND status = 'queued'"),
                                {"id": reconciliation_id})

    def claim(self, reconciliation_id: str) -> dict[str, Any] | None:
        # The first statement of the transaction: every check then reads one snapshot.
        self.connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # A full pass aggregates millions of postings: room to hash them in memory, for this run only.
        self.connection.exec_driver_sql(f"SET LOCAL work_mem = '{WORK_MEM_MB}MB'")
        row = self.connection.execute(
            text("UPDATE reconciliations SET status = 'running', started_at = now()"
                 " WHERE id = :id AND status IN ('queued', 'running')"
                 " RETURNING id::text, status, full_pass AS full"),
            {"id": reconciliation_id},
        ).mappings().one_or_none()
        return dict(row) if row else self.get(reconciliation_id)

    def last_clean_horizon(self) -> tuple[int, datetime] | None:
        row = self.connection.execute(text(
            "SELECT horizon_transaction_id, started_at FROM reconciliations"
            " WHERE status = 'clean' ORDER BY finished_at DESC LIMIT 1")).one_or_none()
        return (row[0], row[1]) if row else None

    def check(self, since: tuple[int, datetime] | None) -> Evidence:
        params = {"since": since[0] if since else None, "since_time": since[1] if since else None}
        horizon = self.connection.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")).scalar_one()
        query = _WALLETS.format(scope=_TOUCHED_WALLETS if since else _ALL_WALLETS)
        rows = self.connection.execute(text(query), params).all()
        entries_query = _UNBALANCED_ENTRIES.format(where="WHERE j.transaction_id >= :since" if since else "")
        return Evidence(
            horizon=horizon,
            wallets_checked=rows[-1][0],
            wallets=[tuple(row[1:]) for row in rows[:-1]],  # the last row carries only the count
            unbalanced_entries=[tuple(row) for row in self.connection.execute(text(entries_query), params)],
            currency_totals=[(code, int(total)) for code, total in self.connection.execute(
                text("SELECT currency, sum(balance) FROM wallets GROUP BY currency"))],
            activity_counters=self._rows(_ACTIVITY_COUNTERS, since, params),
            row_postings=self._rows(_ROW_POSTINGS, since, params),
            reservations=[(a, c.strip(), int(owed), int(held))
                          for a, c, owed, held in self._rows(_RESERVATIONS, since, params)],
            reversal_rows=[row_id for (row_id,) in self._rows(_REVERSAL_ROWS, since, params)],
        )

    def _rows(self, query: str, since, params) -> list[tuple]:
        scope = _ACTIVITY_SCOPE_CHANGED if since else _ACTIVITY_SCOPE_ALL
        return [tuple(row) for row in self.connection.execute(text(query.format(scope=scope)), params)]

    def finish(self, reconciliation_id: str, status: str, wallets_checked: int, mismatches: list[dict],
               mismatch_count: int, horizon: int) -> None:
        self.connection.execute(
            text("UPDATE reconciliations SET status = :status, finished_at = clock_timestamp(),"
                 " wallets_checked = :checked, mismatches = CAST(:mismatches AS jsonb),"
                 " mismatch_count = :count, horizon_transaction_id = :horizon WHERE id = :id"),
            {"id": reconciliation_id, "status": status, "checked": wallets_checked,
             "mismatches": json.dumps(mismatches), "count": mismatch_count, "horizon": horizon},
        )

    def get(self, reconciliation_id: str) -> dict[str, Any] | None:
        row = self.connection.execute(
            text(f"SELECT {_COLUMNS} FROM reconciliations WHERE id = :id"), {"id": reconciliation_id}
        ).mappings().one_or_none()
        return dict(row) if row else None

    def recent(self, limit: int, offset: int) -> list[dict[str, Any]]:
        rows = self.connection.execute(
            text(f"SELECT {_COLUMNS} FROM reconciliations ORDER BY created_at DESC, id LIMIT :limit OFFSET :offset"),
            {"limit": limit, "offset": offset},
        ).mappings()
        return [dict(row) for row in rows]


#: Memory for the checks' hash joins and aggregates, per operation, in megabytes.
WORK_MEM_MB = 256

_COLUMNS = ("id::text, status, full_pass AS full, created_at, started_at, finished_at, wallets_checked,"
            " mismatch_count, mismatches")
