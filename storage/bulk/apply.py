"""Applying one chunk, or a range of its rows, with a constant number of statements.

Lock order, the same in every chunk transaction so that chunks never deadlock each other:
the chunk row, then the users' wallets in ascending id order, then the activity's
reservation shard the chunk draws from (storage/funding.py), then the activity row (last, so the hot activity row is held only
for the moment before commit; storage/bulk/outcomes.py).

A database error that is not transient while crediting leaves as
`pipeline.bulk.ports.RowsRefused`, so the use case can find the rows behind it
(pipeline/bulk/isolation.py) without knowing the driver's exception types.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from pipeline.bulk.ports import Chunk, RowsRefused
from pipeline.bulk.status import (AMOUNT_OUT_OF_RANGE, FAILURE_MESSAGES, INJECTED_FAULT, RETRIES_EXHAUSTED, USER_CLOSED,
                                  USER_NOT_FOUND, WALLET_FROZEN)
from pipeline.money import BALANCE_MINOR_MAX
from storage.faults import is_transient

# The PENDING rows of one chunk: a range of the primary key, so no extra index is needed.
# `activity_id` is compared as text on purpose, so that it can only filter: right after a
# large COPY the statistics do not know the new activity, and the planner would otherwise
# walk the activity's whole index (every row of the file) in each statement of each chunk.
PENDING = """r.id BETWEEN :first_row_id AND :last_row_id AND r.activity_id::text = CAST(:activity_id AS text)
   AND r.chunk_number = :number AND r.status = 'PENDING'"""

# The activity is read, not locked: it is locked last, for the moment before commit.
_LOCK_CHUNK = text("""
SELECT c.id, c.activity_id::text, c.number, c.first_row_id, c.last_row_id, c.state, c.attempts, c.error_count,
       c.sent_count, coalesce(a.reservation_shards, 1), a.cancel_requested_at IS NOT NULL, a.kind,
       a.funding_account
  FROM bulk_chunks c JOIN bulk_activities a ON a.id = c.activity_id
 WHERE c.id = :id FOR UPDATE OF c
""")

# Rows that fail for the last time their attempts allow leave the retry index at once
# (next_attempt_at NULL): their activity can be final without waiting for another sweep.
_FAIL = text(f"""
WITH failing AS (
    SELECT r.id, r.attempts + 1 >= :attempts_max AS last_attempt,
           CASE WHEN r.user_id = ANY(CAST(:fail_user_ids AS uuid[])) THEN :injected ELSE :not_found END AS code,
           CASE WHEN r.user_id = ANY(CAST(:fail_user_ids AS uuid[])) THEN :injected_message
                ELSE :not_found_message END AS message
      FROM bulk_rows r
     WHERE {PENDING}
       AND (r.user_id = ANY(CAST(:fail_user_ids AS uuid[]))
            OR NOT EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id))
)
UPDATE bulk_rows r
   SET status = 'FAILED', attempts = r.attempts + 1, updated_at = now(),
       error_code = CASE WHEN f.last_attempt THEN :exhausted ELSE f.code END,
       error_message = CASE WHEN f.last_attempt THEN 'failed ' || r.attempts + 1 || ' times: ' || f.message
                            ELSE f.message END,
       next_attempt_at = CASE WHEN NOT f.last_attempt
                              THEN now() + make_interval(secs => :base_delay_s * power(2, least(r.attempts, 16))) END
  FROM failing f
 WHERE r.id = f.id
RETURNING f.last_attempt
""")

# A credit that would take a wallet past bigint fails alone, before any write could
# overflow: from the first row of that wallet in the chunk whose running total passes the
# limit (the sums are numeric, which cannot overflow). Wallets this chunk created start at
# zero and cannot get there: a chunk's rows add up to far less than the limit. The rows are
# found by the statement that locks the wallets (below), from the balances it locked: a
# statement of their own read every row and its wallet again (about 4 buffer reads a row).
_FAIL_OUT_OF_RANGE = text(f"""
UPDATE bulk_rows r
   SET status = 'FAILED', attempts = r.attempts + 1, updated_at = now(), next_attempt_at = NULL,
       error_code = :code, error_message = :message
 WHERE {PENDING} AND r.id = ANY(CAST(:row_ids AS bigint[]))
""")

# A row for a frozen wallet or a closed user fails alone, after the chunk has locked the
# wallets (a freeze or a close in flight has committed by then, and is seen here). No
# automatic retry: an operator retries once the wallet is unfrozen. A closed user has no
# wallet created for them (migration 0015), so the user's row is asked too. Each row asks the
# partial indexes of closed users and inactive wallets (migration 0026), which hold only
# those few: a page read a row, where a join with `users` and `wallets` read about 12.
_CLOSED_USER = "EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id AND u.closed_at IS NOT NULL)"
_FAIL_INACTIVE = text(f"""
UPDATE bulk_rows r
   SET status = 'FAILED', attempts = r.attempts + 1, updated_at = now(), next_attempt_at = NULL,
       error_code = CASE WHEN s.closed THEN :closed_code ELSE :frozen_code END,
       error_message = CASE WHEN s.closed THEN :closed_message ELSE :frozen_message END
  FROM (SELECT r.id, {_CLOSED_USER} OR EXISTS (SELECT 1 FROM wallets w WHERE w.user_id = r.user_id
                                                   AND w.currency = r.currency AND w.status = 'closed') AS closed
          FROM bulk_rows r
         WHERE {PENDING}
           AND ({_CLOSED_USER} OR EXISTS (SELECT 1 FROM wallets w WHERE w.user_id = r.user_id
                                                 AND w.currency = r.currency AND w.status <> 'active'))) s
 WHERE r.id = s.id
""")

# Never expected to match: postings and row statuses commit together. It keeps a chunk
# idempotent even if they ever disagreed, instead of failing on the UNIQUE key forever.
_SETTLE_POSTED = text(f"""
UPDATE bulk_rows r
   SET status = 'SUCCESS', journal_entry_id = p.journal_entry_id, error_code = NULL, error_message = NULL,
       next_attempt_at = NULL, updated_at = now()
  FROM postings p
 WHERE p.bulk_row_id = r.id AND {PENDING}
""")

_TOTALS = text(f"SELECT r.currency, count(*), sum(r.amount_minor) FROM bulk_rows r WHERE {PENDING} GROUP BY r.currency")

# A closed user has no wallet created (migration 0015 refuses it): their rows fail after the lock.
_NOT_CLOSED = f"NOT {_CLOSED_USER}"

# A wallet a chunk creates starts with its credits already in its balance: one write per
# new wallet instead of an insert and then an update (most rows of a first bulk credit).
_CREATE_WALLETS = text(f"""
INSERT INTO wallets (user_id, currency, balance, version)
SELECT r.user_id, r.currency, sum(r.amount_minor), 1 FROM bulk_rows r
 WHERE {PENDING} AND {_NOT_CLOSED}
   AND NOT EXISTS (SELECT 1 FROM wallets w WHERE w.user_id = r.user_id AND w.currency = r.currency)
 GROUP BY r.user_id, r.currency
 ORDER BY r.user_id, r.currency
ON CONFLICT DO NOTHING
RETURNING id
""")

# Isolation creates the chunk's missing wallets empty, once, before its savepoints: wallets
# made and rolled back in every try would leave dead index entries that each later try's
# probes walk, as long as the transaction lasts (seconds per statement after hundreds of tries).
_CREATE_EMPTY_WALLETS = text(f"""
INSERT INTO wallets (user_id, currency)
SELECT DISTINCT r.user_id, r.currency FROM bulk_rows r
 WHERE {PENDING} AND {_NOT_CLOSED}
   AND NOT EXISTS (SELECT 1 FROM wallets w WHERE w.user_id = r.user_id AND w.currency = r.currency)
 ORDER BY 1, 2
ON CONFLICT DO NOTHING
""")

# One index probe a row: the rows' wallets locked straight from the join, in ascending id
# order (a wallet named by several rows comes once per row, and locking it again in the same
# transaction is a no-op). It looked the ids up first, then each by id. It returns the rows
# that would take their wallet past :balance_max (see _FAIL_OUT_OF_RANGE), from the balances
# as locked: the frozen wallets' and closed users' rows among them fail as such first, and
# they are the whole of their wallet's rows, so the running sums of the others are the same.
_LOCK_USER_WALLETS = text(f"""
SELECT row_id FROM (
    SELECT row_id, balance + sum(CAST(amount_minor AS numeric)) OVER (PARTITION BY wallet_id ORDER BY row_id) AS after
      FROM (SELECT r.id AS row_id, r.amount_minor, w.id AS wallet_id, w.balance
              FROM bulk_rows r JOIN wallets w ON w.user_id = r.user_id AND w.currency = r.currency
             WHERE {PENDING} AND w.id NOT IN (SELECT unnest(CAST(:created_ids AS bigint[])))
             ORDER BY w.id FOR UPDATE OF w) locked) s
 WHERE after > :balance_max
""")

# The reservation shard this chunk draws from, made and filled when the activity was released.
_LOCK_RESERVATION = text("""
SELECT count(*) FROM (
    SELECT id FROM wallets WHERE system_name = 'reservation' AND activity_id = CAST(:activity_id AS uuid)
       AND shard = :shard AND currency = ANY(CAST(:currencies AS char(3)[])) ORDER BY id FOR UPDATE) locked
""")

_ENTRIES = text(f"""
INSERT INTO journal_entries (id, kind, idempotency_key, currency, amount, activity_id, funding_account, metadata)
SELECT gen_random_uuid(), 'bulk_credit',
       'bulk_chunk:' || :chunk_id || ':' || :attempt || ':' || :first_row_id || ':' || r.currency,
       r.currency, sum(r.amount_minor), CAST(CAST(:activity_id AS text) AS uuid),
       (SELECT a.funding_account FROM bulk_activities a WHERE a.id = CAST(CAST(:activity_id AS text) AS uuid)),
       jsonb_build_object('chunk_id', :chunk_id, 'rows', count(*), 'reservation_shard', :shard)
  FROM bulk_rows r WHERE {PENDING}
 GROUP BY r.currency
RETURNING id::text, currency, amount
""")

# One statement: the postings (one per row, one debit per currency on the reservation shard),
# the balances they move, and the rows they settle. Every part reads the same snapshot,
# so balance_after is computed from the balances before this statement's update. The wallets
# this chunk created are asked with IN, which PostgreSQL answers from a hash of them: as a
# LEFT JOIN, a chunk whose rows the planner guessed at one (a new file's statistics) was
# planned as a nested loop over them, 5,000 x 5,000 comparisons: 4 s instead of 0.2.
_POST = text(f"""
WITH entry (id, currency, amount) AS (
    SELECT * FROM unnest(CAST(:entry_ids AS uuid[]), CAST(:entry_currencies AS char(3)[]),
                         CAST(:entry_amounts AS bigint[]))
), created (id) AS (
    SELECT unnest(CAST(:created_ids AS bigint[]))
), posted AS (
    INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after, bulk_row_id)
    SELECT e.id, w.id, r.currency, r.amount_minor,
           CASE WHEN w.id IN (SELECT id FROM created) THEN 0 ELSE w.balance END
           + sum(r.amount_minor) OVER (PARTITION BY w.id ORDER BY r.id), r.id
      FROM bulk_rows r
      JOIN wallets w ON w.user_id = r.user_id AND w.currency = r.currency
      JOIN entry e ON e.currency = r.currency
     WHERE {PENDING}
    UNION ALL
    SELECT e.id, w.id, e.currency, -e.amount, w.balance - e.amount, NULL
      FROM entry e
      JOIN wallets w ON w.system_name = 'reservation' AND w.activity_id = CAST(:activity_id AS uuid)
                    AND w.shard = :shard AND w.currency = e.currency
    RETURNING journal_entry_id, wallet_id, amount, balance_after, bulk_row_id
), moved AS (
    UPDATE wallets w SET balance = w.balance + d.delta, version = w.version + 1, updated_at = now()
      FROM (SELECT wallet_id, sum(amount) AS delta FROM posted
             WHERE wallet_id NOT IN (SELECT id FROM created) GROUP BY wallet_id) d
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
       (SELECT min(balance_after) FROM posted WHERE bulk_row_id IS NULL)
""")

# The money this transaction's bulk-credit entries moved, per currency: `transaction_id`
# defaults to txid_current() (the top-level transaction, savepoints included), and an
# entry of a rolled-back savepoint is gone. For wallet_bulk_credited_minor_units.
_CREDITED_IN_TRANSACTION = text("""
SELECT currency, sum(amount) FROM journal_entries
 WHERE transaction_id = txid_current() AND kind = 'bulk_credit' AND activity_id = CAST(:activity_id AS uuid)
 GROUP BY currency
""")


class ChunkSql:
    connection: Any

    def credited_in_transaction(self, activity_id: str) -> dict[str, int]:
        """{currency: minor units} credited by this transaction's entries for the activity."""
        return {currency: int(total) for currency, total in
                self.connection.execute(_CREDITED_IN_TRANSACTION, {"activity_id": activity_id}).all()}

    def lock_chunk(self, chunk_id: int) -> Chunk | None:
        # psycopg prepares a statement run 5 times on a connection, and PostgreSQL may then
        # cache a generic plan; for a chunk's row ranges a plan made for its own parameters
        # is what keeps every statement on the indexes. Planning costs about a millisecond.
        self.connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        row = self.connection.execute(_LOCK_CHUNK, {"id": chunk_id}).one_or_none()
        return Chunk(*row) if row else None

    @staticmethod
    def _pending(chunk: Chunk, first_row_id: int | None = None, last_row_id: int | None = None) -> dict[str, Any]:
        return {"first_row_id": chunk.first_row_id if first_row_id is None else first_row_id,
                "last_row_id": chunk.last_row_id if last_row_id is None else last_row_id,
                "activity_id": chunk.activity_id, "number": chunk.number}

    def fail_unapplicable(self, chunk: Chunk, fail_user_ids: list[str], messages: dict[str, str],
                          retry_base_delay_s: float, attempts_max: int) -> tuple[int, int]:
        """Fails the rows of users in `fail_user_ids` or deleted; returns (failed, of which exhausted)."""
        last_attempts = self.connection.execute(_FAIL, {
            **self._pending(chunk), "fail_user_ids": fail_user_ids, "base_delay_s": retry_base_delay_s,
            "attempts_max": attempts_max, "exhausted": RETRIES_EXHAUSTED,
            "injected": INJECTED_FAULT, "injected_message": messages[INJECTED_FAULT],
            "not_found": USER_NOT_FOUND, "not_found_message": messages[USER_NOT_FOUND]}).scalars().all()
        return len(last_attempts), sum(last_attempts)

    def settle_already_posted(self, chunk: Chunk) -> int:
        return self.connection.execute(_SETTLE_POSTED, self._pending(chunk)).rowcount

    def create_empty_wallets(self, chunk: Chunk) -> int:
        return self.connection.execute(_CREATE_EMPTY_WALLETS, self._pending(chunk)).rowcount

    def pending_row_ids(self, chunk: Chunk, first_row_id: int, last_row_id: int) -> list[int]:
        return self.connection.execute(text(f"SELECT r.id FROM bulk_rows r WHERE {PENDING} ORDER BY r.id"),
                                       self._pending(chunk, first_row_id, last_row_id)).scalars().all()

    def credit_pending(self, chunk: Chunk, funding_shard: int, first_row_id: int | None = None,
                       last_row_id: int | None = None) -> tuple[int, int]:
        """Credits the PENDING rows of the chunk (or of its rows first_row_id..last_row_id); of a
        reversal's chunk, takes their money back to the funding account instead.

        Returns (rows credited, rows failed with amount_out_of_range, wallet_frozen or
        user_closed), or for a reversal (rows reversed, rows failed with insufficient_funds).
        Raises RowsRefused
        when PostgreSQL refuses the statements for a reason that is not transient.
        """
        pending = self._pending(chunk, first_row_id, last_row_id)
        try:
            if chunk.kind == "reversal":  # storage/bulk/reversal.py: the money goes back, same pipeline
                return self._reverse(chunk, pending)
            return self._credit(chunk, funding_shard, pending)
        except DBAPIError as error:
            if is_transient(error):
                raise
            raise RowsRefused(type(error.orig).__name__ + ": " + str(error.orig).splitlines()[0][:300]) from error

    def _fail_inactive(self, pending: dict[str, Any]) -> int:
        """Fails the pending rows of frozen wallets and closed users, once their wallets are
        locked (a credit's or a reversal's chunk); returns how many."""
        return self.connection.execute(_FAIL_INACTIVE, {
            **pending, "closed_code": USER_CLOSED, "closed_message": FAILURE_MESSAGES[USER_CLOSED],
            "frozen_code": WALLET_FROZEN, "frozen_message": FAILURE_MESSAGES[WALLET_FROZEN]}).rowcount

    def _credit(self, chunk: Chunk, funding_shard: int, pending: dict[str, Any]) -> tuple[int, int]:
        created_ids = self.connection.execute(_CREATE_WALLETS, pending).scalars().all()
        out_of_range = self.connection.execute(_LOCK_USER_WALLETS, {
            **pending, "created_ids": created_ids, "balance_max": BALANCE_MINOR_MAX}).scalars().all()
        refused = self._fail_inactive(pending)
        if out_of_range:
            refused += self.connection.execute(_FAIL_OUT_OF_RANGE, {
                **pending, "row_ids": out_of_range, "code": AMOUNT_OUT_OF_RANGE,
                "message": FAILURE_MESSAGES[AMOUNT_OUT_OF_RANGE]}).rowcount
        totals = self.connection.execute(_TOTALS, pending).all()
        if not totals:
            return 0, refused
        currencies = [currency for currency, _, _ in totals]
        shard = {"shard": funding_shard, "currencies": currencies}
        locked = self.connection.execute(_LOCK_RESERVATION, {**shard, "activity_id": chunk.activity_id}).scalar_one()
        assert locked == len(currencies), f"chunk {chunk.id}: {locked} reservation wallets for {currencies}"
        entries = self.connection.execute(_ENTRIES, {
            **pending, "chunk_id": chunk.id, "attempt": chunk.attempts, "shard": funding_shard}).all()
        credited, debits, moved, wallets, reserve_after = self.connection.execute(_POST, {
            **pending, "shard": funding_shard, "created_ids": created_ids,
            "entry_ids": [entry_id for entry_id, _, _ in entries],
            "entry_currencies": [currency for _, currency, _ in entries],
            "entry_amounts": [amount for _, _, amount in entries]}).one()
        expected = sum(count for _, count, _ in totals)
        assert credited == expected, f"chunk {chunk.id}: {credited} rows credited, {expected} were pending"
        assert debits == len(entries) and moved + len(created_ids) == wallets, (debits, moved, created_ids, wallets)
        # The pair of the CHECK on funded wallets: a chunk pays only what was reserved for it.
        assert reserve_after >= 0, f"chunk {chunk.id} overdrew its reservation: {reserve_after}"
        return credited, refused
