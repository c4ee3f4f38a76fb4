"""What the bulk-credit use cases need from storage (`uow.bulk`) and from the queue."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Protocol

from pipeline.audit import SCHEDULER, WORKER, Actor  # noqa: F401 (re-exported)
from pipeline.bulk.rows import Row
from pipeline.bulk.status import Counters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurrencyTotal:
    """An activity's money in one currency, in minor units: the valid rows' total and how
    much of it is credited, failed and cancelled (the rest is pending)."""

    currency: str
    valid: int
    credited: int
    failed: int
    cancelled: int


@dataclass(frozen=True)
class Activity:
    id: str
    status: str
    counters: Counters
    content_sha256: str | None
    created_at: datetime
    started_at: datetime | None
    #: Set when the activity became final (see pipeline/bulk/status.py); the database
    #: checks it is set exactly when the status is settled and nothing is pending or due.
    completed_at: datetime | None
    #: When the next automatic retry of a FAILED row is due; None when none is.
    next_retry_at: datetime | None = None
    #: Chunks given up on after CHUNK_ERRORS_MAX errors or CHUNK_STARTS_MAX unfinished starts.
    failed_chunks: int = 0
    last_chunk_error: str | None = None
    funding_account: str = "default"
    #: Set when the activity was released: its reservation's shards (pipeline/bulk/release.py).
    reservation_shards: int | None = None
    #: True from the first step of a cancel on: no chunk starts, nothing is released.
    cancel_requested: bool = False
    uploaded_by: int | None = None  #: the uploading API key's id (None: the command line)
    approved_by: int | None = None  #: the approving API key's id
    execute_at: datetime | None = None
    file_name: str | None = None
    #: Per currency, ordered by currency code (kept by the database: migration 0017).
    totals: tuple[CurrencyTotal, ...] = ()
    #: 'credit' (an uploaded file) or 'reversal' (pipeline/bulk/reversal.py), and for a
    #: reversal the credit activity whose rows it takes back.
    kind: str = "credit"
    reverses: str | None = None

    @property
    def final(self) -> bool:
        return self.completed_at is not None




@dataclass(frozen=True)
class Chunk:
    """Valid rows `first_row_id..last_row_id` of one activity with this `number`."""

    id: int
    activity_id: str
    number: int
    first_row_id: int
    last_row_id: int
    state: str
    attempts: int
    error_count: int = 0
    sent_count: int = 0
    #: The activity's reservation shards; the chunk draws from shard number % this.
    reservation_shards: int = 1
    #: The activity is being cancelled: the chunk is skipped.
    cancel_requested: bool = False
    #: The activity's kind: a 'reversal' chunk takes its rows' money back to `funding_account`.
    kind: str = "credit"
    funding_account: str = "default"


@dataclass(frozen=True)
class Applied:
    """What one chunk transaction did; `skipped` when the chunk was already DONE."""

    chunk_id: int
    credited: int = 0
    failed: int = 0
    skipped: bool = False
    status: str | None = None
    #: Rows that failed for the last time their attempts allow (code retries_exhausted).
    exhausted: int = 0
    #: True when this call gave up on the chunk (CHUNK_ERRORS_MAX reached).
    gave_up: bool = False
    #: The money this transaction credited to user wallets: ((currency, minor units), ...).
    credited_minor: tuple[tuple[str, int], ...] = ()


class RowsRefused(Exception):
    """PostgreSQL refused to credit a set of rows for a reason that is not transient (a
    constraint, a value out of range); the message names the error class, never data."""


@dataclass(frozen=True)
class UploadIdentity:
    """What makes a request the same upload as an activity's (for an Idempotency-Key replay)."""

    funding_account: str
    #: SHA-256 of the file's bytes, and of its rows (pipeline/bulk/content.py).
    file_sha256: str | None
    content_sha256: str | None


class DuplicateContent(Exception):
    """Another activity already holds this content hash; the upload is rolled back."""


class DuplicateKey(Exception):
    """Another activity already holds this Idempotency-Key; the upload is rolled back."""


class BulkCredits(Protocol):
    def find_by_idempotency_key(self, api_key_id: int | None, key: str) -> Activity | None: ...
    def find_by_content(self, content_sha256: str) -> Activity | None: ...
    def find_by_file(self, file_sha256: str) -> Activity | None: ...
    def upload_identity(self, activity_id: str) -> UploadIdentity: ...
    def add_activity(self, activity_id: str, api_key_id: int | None, key: str | None, file_name: str | None,
                     columns: tuple[str, ...] = (), *, funding_account: str = "default",
                     allow_duplicate_content: bool = False) -> None: ...
    def copy_rows(self, activity_id: str, rows: Iterable[tuple[Row, int | None]]) -> None: ...
    def invalidate_unknown_users(self, activity_id: str, message: str) -> int: ...
    def claim_references(self, activity_id: str, funding_account: str, rows_with_reference: int) -> int: ...
    def plan_chunks(self, activity_id: str, lease_s: int) -> tuple[list[int], int]: ...
    def finish_upload(self, activity_id: str, content_sha256: str, size_bytes: int, counters: Counters,
                      status: str, *, file_sha256: str | None = None) -> None: ...
    def lock_chunk(self, chunk_id: int) -> Chunk | None: ...
    def fail_unapplicable(self, chunk: Chunk, fail_user_ids: list[str], messages: dict[str, str],
                          retry_base_delay_s: float, attempts_max: int) -> tuple[int, int]: ...
    def settle_already_posted(self, chunk: Chunk) -> int: ...
    def create_empty_wallets(self, chunk: Chunk) -> int: ...
    def pending_row_ids(self, chunk: Chunk, first_row_id: int, last_row_id: int) -> list[int]: ...
    def credit_pending(self, chunk: Chunk, funding_shard: int, first_row_id: int | None = None,
                       last_row_id: int | None = None) -> tuple[int, int]: ...
    def credited_in_transaction(self, activity_id: str) -> dict[str, int]: ...
    # Outcomes and status (storage/bulk/outcomes.py).
    def fail_rows(self, chunk: Chunk, first_row_id: int, last_row_id: int, code: str, message: str) -> int: ...
    def finish_chunk(self, chunk: Chunk, state: str = "DONE") -> None: ...
    def note_chunk_start(self, chunk_id: int) -> int | None: ...
    def note_chunk_error(self, chunk_id: int, error: str) -> int | None: ...
    def next_retry_at(self, activity_id: str) -> datetime | None: ...
    def save_outcome(self, activity_id: str, from_status: str, status: str, counters: Counters,
                     next_retry_at: datetime | None, final: bool, actor: Actor | None, reason: str | None = None,
                     failed_chunks: int = 0, chunk_error: str | None = None,
                     reset_chunks: bool = False) -> Activity: ...
    def add_history(self, activity_id: str, from_status: str | None, status: str, final: bool, actor: Actor,
                    reason: str | None = None) -> None: ...
    def history(self, activity_id: str, after_id: int, limit: int) -> list[dict[str, Any]]: ...
    def lock_activity(self, activity_id: str) -> Activity | None: ...
    def reopen_failed_rows(self, activity_id: str, lease_s: int) -> tuple[int, list[int]]: ...
    def activity(self, activity_id: str) -> Activity | None: ...
    def list_activities(self, filters: dict[str, Any], before_seq: int | None,
                        limit: int) -> list[tuple[int, Activity]]: ...
    def row_columns(self, activity_id: str) -> list[str] | None: ...
    def rows(self, activity_id: str, status: str | None, after_row_number: int, limit: int) -> list[dict[str, Any]]: ...
    def copy_users(self, users: Iterable[tuple[str, str, str]]) -> None: ...
    # The scheduler's sweeps (pipeline/bulk/recovery.py).
    def activities_with_due_rows(self, limit: int) -> list[str]: ...
    def reopen_due_rows(self, activity_id: str, lease_s: int) -> tuple[int, list[int]]: ...
    def renew_expired_leases(self, lease_s: int, limit: int) -> list[int]: ...
    # Release, cancel and preview (storage/bulk/release.py, storage/bulk/preview.py).
    def pending_totals(self, activity_id: str, shards_max: int) -> tuple[int, list[tuple[str, int, int]]]: ...
    def mark_released(self, activity_id: str, shards: int) -> None: ...
    def awaiting_funds(self, limit: int) -> list[str]: ...
    def due_scheduled(self, limit: int) -> list[str]: ...
    def request_cancel(self, activity_id: str, reason: str) -> None: ...
    def cancel_rows(self, activity_id: str, shards: int, reason: str, code: str = "cancelled") -> list[tuple[str, int, int]]: ...
    def valid_totals(self, activity_id: str) -> list[tuple[str, int, int]]: ...
    def first_errors(self, activity_id: str, limit: int) -> list[tuple[int, str, str]]: ...
    # Reversals (storage/bulk/reversal.py).
    def serialize_reversals(self, credit_id: str) -> None: ...
    def unknown_rows(self, credit_id: str, row_numbers: list[int], references: list[str],
                     limit: int) -> tuple[list[int], list[str]]: ...
    def add_reversal(self, reversal_id: str, credit: Activity, api_key_id: int | None) -> None: ...
    def copy_reversal_rows(self, reversal_id: str, credit_id: str, row_numbers: list[int] | None,
                           references: list[str] | None, chunk_rows: int) -> tuple[int, int]: ...
    def claim_reversals(self, reversal_id: str) -> int: ...
    def release_reversal_claims(self, reversal_id: str) -> int: ...
    def finish_reversal(self, reversal_id: str, counters: Counters, status: str, final: bool) -> None: ...


def send_after_commit(queue: "ChunkQueue", chunk_ids: list[int]) -> None:
    """Sends the chunks' messages once their transaction has committed; a failed send is
    logged, and the chunks' leases expire and the scheduler sends them again (the database,
    not the queue, says what is left to do)."""
    try:
        queue.send(chunk_ids)
    except Exception:
        log.exception("could not send %d chunk messages; they will be sent again when their lease expires",
                      len(chunk_ids))


class ChunkQueue(Protocol):
    """Sends one message per chunk id; called only after the transaction that made them commits."""

    def send(self, chunk_ids: list[int]) -> None: ...
