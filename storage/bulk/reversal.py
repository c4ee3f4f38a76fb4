"""Reversing a bulk credit's rows in PostgreSQL: the reversal's rows copied from the credit's,
their claims, and a chunk that takes its rows' money back, with a constant number of
statements.

Lock order in a reversal chunk, the same as a credit chunk's: the chunk row, the users'
wallets in ascending id order, then the funding account's wallets (where a credit chunk
locks its reservation shard), then the activity row last. The chunks of one reversal take
turns at the funding account's wallet of a currency: a reversal is rare next to payouts,
and a funding account is not a wallet many movements share at once.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import text

from pipeline.bulk.ports import Activity, Chunk
from pipeline.bulk.status import Counters

#: Why a row cannot be reversed (status INVALID in the reversal).
NOT_REVERSIBLE = "not_reversible"
#: Why a reversal row failed: its wallet holds less than the row's credit now (retryable).
INSUFFICIENT_FUNDS = "insufficient_funds"

_ADD_REVERSAL = text("""
INSERT INTO bulk_activities (id, status, kind, reverses_activity_id, api_key_id, file_name, funding_account)
VALUES (:id, 'UPLOADED', 'reversal', :credit_id, :api_key_id, left(:file_name, 200), :funding_account)
""")

# Row numbers and references named that no row of the credit has.
_UNKNOWN_ROW_NUMBERS = text("""
SELECT n FROM unnest(CAST(:row_numbers AS integer[])) n
 WHERE NOT EXISTS (SELECT 1 FROM bulk_rows r WHERE r.activity_id = :credit_id AND r.row_number = n)
 ORDER BY n LIMIT :limit
""")
_UNKNOWN_REFERENCES = text("""
SELECT ref FROM unnest(CAST(:references AS text[])) ref
 WHERE ref NOT IN (SELECT r.reference FROM bulk_rows r
                    WHERE r.activity_id = :credit_id AND r.reference = ANY(CAST(:references AS text[])))
 ORDER BY ref LIMIT :limit
""")

# One reversal row per credit row named (or per SUCCESS row when none is named), under the
# same row number. A row is reversible when it was credited (SUCCESS) and no reversal holds
# it; the others are INVALID `not_reversible`, saying why. The reversible rows are numbered
# into chunks in row order. Run under `serialize_reversals`, so two reversals of one credit
# judge its claims one after the other.
_COPY_ROWS = text("""
WITH named AS (
    SELECT r.id, r.row_number, r.user_id, r.amount_minor, r.currency, r.reference, r.status,
           c.reversal_activity_id AS claimed_by, claimer.row_number AS claimed_row
      FROM bulk_rows r
      LEFT JOIN bulk_reversal_claims c ON c.credit_row_id = r.id
      LEFT JOIN bulk_rows claimer ON claimer.id = c.reversal_row_id
     WHERE r.activity_id = :credit_id
       AND ((CAST(:every AS boolean) AND r.status = 'SUCCESS')
            OR r.row_number = ANY(CAST(:row_numbers AS integer[]))
            OR r.reference = ANY(CAST(:references AS text[])))
), judged AS (
    SELECT n.*, n.status = 'SUCCESS' AND n.claimed_by IS NULL AS reversible FROM named n
), numbered AS (
    SELECT j.*, CASE WHEN j.reversible
                     THEN (row_number() OVER (PARTITION BY j.reversible ORDER BY j.row_number) - 1) / :chunk_rows
                END AS chunk_number
      FROM judged j
), copied AS (
    INSERT INTO bulk_rows (activity_id, row_number, chunk_number, user_id, amount_minor, currency, reference,
                           status, error_code, error_message, reverses_row_id)
    SELECT CAST(:reversal_id AS uuid), n.row_number, n.chunk_number, n.user_id, n.amount_minor, n.currency,
           n.reference, CASE WHEN n.reversible THEN 'PENDING' ELSE 'INVALID' END,
           CASE WHEN NOT n.reversible THEN :not_reversible END,
           CASE WHEN n.reversible THEN NULL
                WHEN n.claimed_by IS NOT NULL
                THEN 'row ' || n.row_number || ' is already reversed by activity ' || n.claimed_by
                     || ' row ' || n.claimed_row
                ELSE 'row ' || n.row_number || ' is ' || n.status || ': only a credited (SUCCESS) row can be reversed'
           END,
           n.id
      FROM numbered n
     ORDER BY n.row_number
    RETURNING status
)
SELECT count(*) FILTER (WHERE status = 'PENDING'), count(*) FILTER (WHERE status = 'INVALID') FROM copied
""")

# In credit row order, so that two transactions claiming the same rows would wait for each
# other in one order; the primary key refuses a row claimed already, by any reversal.
_CLAIM = text("""
INSERT INTO bulk_reversal_claims (credit_row_id, reversal_row_id, reversal_activity_id)
SELECT reverses_row_id, id, activity_id FROM bulk_rows
 WHERE activity_id = :reversal_id AND status = 'PENDING'
 ORDER BY reverses_row_id
""")

# A cancelled reversal row no longer holds its credit row: a later reversal may take it.
_RELEASE_CLAIMS = text("""
DELETE FROM bulk_reversal_claims c USING bulk_rows r
 WHERE c.reversal_activity_id = :reversal_id AND r.id = c.reversal_row_id AND r.status = 'CANCELLED'
""")

_FINISH = text("""
UPDATE bulk_activities
   SET status = :status, total_records = :total, valid_records = :valid, invalid_records = :invalid,
       pending_records = :pending, completed_at = CASE WHEN :final THEN now() END, updated_at = now()
 WHERE id = :id
""")

_PENDING = """r.id BETWEEN :first_row_id AND :last_row_id AND r.activity_id::text = CAST(:activity_id AS text)
   AND r.chunk_number = :number AND r.status = 'PENDING'"""

_LOCK_USER_WALLETS = text(f"""
SELECT count(*) FROM (
    SELECT w.id FROM wallets w
     WHERE w.id IN (SELECT w2.id FROM bulk_rows r JOIN wallets w2 ON w2.user_id = r.user_id
                                                              AND w2.currency = r.currency WHERE {_PENDING})
     ORDER BY w.id FOR UPDATE) locked
""")

# With the wallets locked: the rows of a wallet fail from the first one whose running total
# passes what the wallet holds now and no hold reserves (its available balance, migration
# 0015), so that no balance goes below zero or below its held money. Not retried on a
# timer: the payee must first be paid again, so an operator retries when it makes sense.
_FAIL_INSUFFICIENT = text(f"""
UPDATE bulk_rows r
   SET status = 'FAILED', attempts = r.attempts + 1, updated_at = now(), next_attempt_at = NULL,
       error_code = :code, error_message = :message
  FROM (SELECT r.id, coalesce(w.balance - w.held, 0)
                     - sum(r.amount_minor) OVER (PARTITION BY r.user_id, r.currency ORDER BY r.id) AS after
          FROM bulk_rows r LEFT JOIN wallets w ON w.user_id = r.user_id AND w.currency = r.currency
         WHERE {_PENDING}) s
 WHERE r.id = s.id AND s.after < 0
""")

_TOTALS = text(f"SELECT r.currency, count(*) FROM bulk_rows r WHERE {_PENDING} GROUP BY r.currency")

_CREATE_FUNDING = text("""
INSERT INTO wallets (system_name, funding_account, currency)
SELECT 'funding', :account, c FROM unnest(CAST(:currencies AS char(3)[])) c
ON CONFLICT DO NOTHING
""")

_LOCK_FUNDING = text("""
SELECT count(*) FROM (
    SELECT id FROM wallets WHERE system_name = 'funding' AND funding_account = :account
       AND currency = ANY(CAST(:currencies AS char(3)[])) ORDER BY id FOR UPDATE) locked
""")

_ENTRIES = text(f"""
INSERT INTO journal_entries (id, kind, idempotency_key, currency, amount, activity_id, funding_account, metadata)
SELECT gen_random_uuid(), 'bulk_reversal',
       'bulk_reversal_chunk:' || :chunk_id || ':' || :attempt || ':' || :first_row_id || ':' || r.currency,
       r.currency, sum(r.amount_minor), CAST(CAST(:activity_id AS text) AS uuid), :account,
       jsonb_build_object('chunk_id', :chunk_id, 'rows', count(*))
  FROM bulk_rows r WHERE {_PENDING}
 GROUP BY r.currency
RETURNING id::text, currency, amount
""")

# One statement, as a credit chunk's: a debit per row, one credit of the funding account per
# currency, the balances they move and the rows they settle, all from one snapshot.
_POST = text(f"""
WITH entry (id, currency, amount) AS (
    SELECT * FROM unnest(CAST(:entry_ids AS uuid[]), CAST(:entry_currencies AS char(3)[]),
                         CAST(:entry_amounts AS bigint[]))
), posted AS (
    INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after, bulk_row_id)
    SELECT e.id, w.id, r.currency, -r.amount_minor,
           w.balance - sum(r.amount_minor) OVER (PARTITION BY w.id ORDER BY r.id), r.id
      FROM bulk_rows r
      JOIN wallets w ON w.user_id = r.user_id AND w.currency = r.currency
      JOIN entry e ON e.currency = r.currency
     WHERE {_PENDING}
    UNION ALL
    SELECT e.id, w.id, e.currency, e.amount, w.balance + e.amount, NULL
      FROM entry e
      JOIN wallets w ON w.system_name = 'funding' AND w.funding_account = :account AND w.currency = e.currency
    RETURNING journal_entry_id, wallet_id, amount, balance_after, bulk_row_id
), moved AS (
    UPDATE wallets w SET balance = w.balance + d.delta, version = w.version + 1, updated_at = now()
      FROM (SELECT wallet_id, sum(amount) AS delta FROM posted GROUP BY wallet_id) d
     WHERE w.id = d.wallet_id
    RETURNING w.id
), settled AS (
    UPDATE bulk_rows r
       SET status = 'SUCCESS', journal_entry_id = p.journal_entry_id, attempts = r.attempts + 1,
           error_code = NULL, error_message = NULL, next_attempt_at = NULL, updated_at = now()
      FROM posted p
     WHERE p.bulk_row_id = r.id
    RETURNING r.id
)
SELECT (SELECT count(*) FROM settled), (SELECT count(*) FROM posted WHERE bulk_row_id IS NULL),
       (SELECT count(*) FROM moved), (SELECT count(DISTINCT wallet_id) FROM posted),
       (SELECT min(balance_after) FROM posted WHERE bulk_row_id IS NOT NULL)
""")


class ReversalSql:
    connection: Any

    def unknown_rows(self, credit_id: str, row_numbers: list[int], references: list[str],
                     limit: int) -> tuple[list[int], list[str]]:
        """The first `limit` row numbers and references named that no row of the credit has."""
        params = {"credit_id": credit_id, "limit": limit}
        numbers = self.connection.execute(_UNKNOWN_ROW_NUMBERS, {**params, "row_numbers": row_numbers}).scalars()
        names = self.connection.execute(_UNKNOWN_REFERENCES, {**params, "references": references}).scalars()
        return list(numbers), list(names)

    def serialize_reversals(self, credit_id: str) -> None:
        """Two reversals of one credit take turns until commit: a transaction-scoped advisory lock
        on its id, rather than the credit's row, which its chunks still being applied need."""
        self.connection.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:id, 14))"), {"id": credit_id})

    def add_reversal(self, reversal_id: str, credit: Activity, api_key_id: int | None) -> None:
        self.connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        self.connection.execute(_ADD_REVERSAL, {
            "id": reversal_id, "credit_id": credit.id, "api_key_id": api_key_id,
            "file_name": f"reversal of {credit.file_name or credit.id}", "funding_account": credit.funding_account})

    def copy_reversal_rows(self, reversal_id: str, credit_id: str, row_numbers: list[int] | None,
                           references: list[str] | None, chunk_rows: int) -> tuple[int, int]:
        """Writes the reversal's rows: every SUCCESS row of the credit when nothing is named.
        Returns (reversible rows, PENDING; not reversible rows, INVALID)."""
        every = row_numbers is None and references is None
        valid, invalid = self.connection.execute(_COPY_ROWS, {
            "reversal_id": reversal_id, "credit_id": credit_id, "every": every,
            "row_numbers": row_numbers or [], "references": references or [], "chunk_rows": chunk_rows,
            "not_reversible": NOT_REVERSIBLE}).one()
        return valid, invalid

    def claim_reversals(self, reversal_id: str) -> int:
        return self.connection.execute(_CLAIM, {"reversal_id": reversal_id}).rowcount

    def release_reversal_claims(self, reversal_id: str) -> int:
        return self.connection.execute(_RELEASE_CLAIMS, {"reversal_id": reversal_id}).rowcount

    def finish_reversal(self, reversal_id: str, counters: Counters, status: str, final: bool) -> None:
        self.connection.execute(_FINISH, {"id": reversal_id, "status": status, "total": counters.total,
                                          "valid": counters.valid, "invalid": counters.invalid,
                                          "pending": counters.pending, "final": final})

    def _reverse(self, chunk: Chunk, pending: dict[str, Any]) -> tuple[int, int]:
        """Takes the money of the chunk's PENDING rows back to the funding account; returns
        (rows reversed, rows failed with insufficient_funds, wallet_frozen or user_closed)."""
        self.connection.execute(_LOCK_USER_WALLETS, pending)
        # A frozen wallet or a closed user's gives no money back either (storage/bulk/apply.py).
        short = self._fail_inactive(pending) + self.connection.execute(_FAIL_INSUFFICIENT, {
            **pending, "code": INSUFFICIENT_FUNDS,
            "message": "the wallet no longer holds this row's money; retry once it does"}).rowcount
        totals = self.connection.execute(_TOTALS, pending).all()
        if not totals:
            return 0, short
        account = {"account": chunk.funding_account, "currencies": [currency for currency, _ in totals]}
        self.connection.execute(_CREATE_FUNDING, account)
        locked = self.connection.execute(_LOCK_FUNDING, account).scalar_one()
        assert locked == len(totals), f"chunk {chunk.id}: {locked} funding wallets for {account}"
        entries = self.connection.execute(_ENTRIES, {
            **pending, "chunk_id": chunk.id, "attempt": chunk.attempts, "account": chunk.funding_account}).all()
        reversed_rows, credits, moved, wallets, lowest = self.connection.execute(_POST, {
            **pending, "account": chunk.funding_account,
            "entry_ids": [entry_id for entry_id, _, _ in entries],
            "entry_currencies": [currency for _, currency, _ in entries],
            "entry_amounts": [amount for _, _, amount in entries]}).one()
        expected = sum(count for _, count in totals)
        assert reversed_rows == expected, f"chunk {chunk.id}: {reversed_rows} rows reversed, {expected} were pending"
        assert credits == len(entries) and moved == wallets, (credits, len(entries), moved, wallets)
        # The pair of the CHECK on user wallets: a reversal takes only what a wallet holds.
        assert lowest >= 0, f"chunk {chunk.id} took a wallet below zero: {lowest}"
        return reversed_rows, short
