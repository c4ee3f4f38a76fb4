"""Applying a chunk, and retrying an activity's FAILED rows.

Exactly once, on two code paths: the chunk's row lock and state make a second delivery
(or a second worker) a no-op, and `postings.bulk_row_id` is UNIQUE, so even a bug in the
first path could not credit a row twice; it would fail the chunk's transaction instead.
A transient fault (deadlock, lost connection) rolls the whole chunk back and runs it
again, at most TRANSACTION_ATTEMPTS_MAX times with a growing pause; after that the
message fails and Dramatiq retries it with its own bounded backoff.

No row blocks the others. A row that cannot be applied fails alone with its code:
a known limit (a balance past bigint) is checked set-based before anything is written,
and any other refusal by the database is traced to its rows by bisection
(pipeline/bulk/isolation.py). An error that is none of these (a bug) is counted on the
chunk; at CHUNK_ERRORS_MAX the chunk's rows fail with `chunk_failed` instead of the
chunk being tried again forever. So do the rows of a chunk begun more than
CHUNK_STARTS_MAX times that never finished: it kills the workers that take it.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Callable

from pipeline import audit
from pipeline.bulk.isolation import credit_isolating
from pipeline.bulk.outcome import settle
from pipeline.bulk.ports import WORKER, Actor, Applied, ChunkQueue, RowsRefused, send_after_commit
from pipeline.bulk.status import CHUNK_FAILED, FAILURE_MESSAGES, PROCESSING
from pipeline.config import Settings
from pipeline.errors import FieldError, NotFound, NotRetryable, Unavailable, ValidationFailed
from pipeline.retrying import with_retries

log = logging.getLogger(__name__)

DONE = "DONE"
#: Errors (not transient, not a row's) a chunk may raise before its rows fail with
#: `chunk_failed`; below Dramatiq's retries of one message (actors/bulk_credit.py), so one
#: message's retries reach it.
CHUNK_ERRORS_MAX = 3
#: Starts of a chunk (committed before its work begins) after which it is given up on
#: instead of begun again: each start that did not finish lost its worker (kill -9, OOM).
CHUNK_STARTS_MAX = 5


@dataclass(frozen=True)
class Retried:
    activity_id: str
    status: str
    retried_records: int


def parse_activity_id(value: object) -> str:
    try:
        if isinstance(value, str):
            return str(uuid.UUID(value))
    except ValueError:
        pass
    raise ValidationFailed("activity_id is not a valid uuid", [FieldError("activity_id", "must be a uuid")])


def _fault_injected_users(settings: Settings) -> list[str]:
    users = []
    for text in sorted(settings.bulk_credit_fail_user_ids):
        try:
            users.append(str(uuid.UUID(text)))
        except ValueError:
            log.warning("BULK_CREDIT_FAIL_USER_IDS has %r, which is not a uuid; ignored", text)
    return users


def apply_chunk(uow_factory: Callable, settings: Settings, chunk_id: int) -> Applied:
    """Credits the chunk's PENDING rows in one database transaction, or does nothing if not PENDING.

    Raises NotFound for an unknown chunk, Unavailable when transient faults outlast every
    attempt, and any other error once it has been counted (the message is then retried),
    unless that count reached CHUNK_ERRORS_MAX: then the chunk's rows have failed and the
    returned Applied says `gave_up`.
    """
    fail_user_ids = _fault_injected_users(settings)

    def attempt(isolate: bool) -> Applied:
        uow = uow_factory()
        with uow:
            applied = _apply(uow, settings, chunk_id, fail_user_ids, isolate)
            uow.commit()
        return applied

    started = with_retries(settings.transaction_attempts_max, lambda: _note_start(uow_factory, chunk_id))
    if started is not None and started > CHUNK_STARTS_MAX:
        return with_retries(settings.transaction_attempts_max, lambda: _give_up(
            uow_factory, chunk_id, f"begun {started - 1} times without finishing: it may be killing its worker"))
    try:
        try:
            return with_retries(settings.transaction_attempts_max, lambda: attempt(isolate=False))
        except RowsRefused as refusal:
            log.warning("chunk %d: the database refused its rows (%s); finding the rows behind it", chunk_id, refusal)
            return with_retries(settings.transaction_attempts_max, lambda: attempt(isolate=True))
    except (NotFound, Unavailable):
        raise
    except Exception as error:
        log.exception("chunk %d failed", chunk_id)
        described = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        gave_up = with_retries(settings.transaction_attempts_max,
                               lambda: _count_error(uow_factory, chunk_id, described))
        if gave_up is None:
            raise
        return gave_up


def _apply(uow, settings: Settings, chunk_id: int, fail_user_ids: list[str], isolate: bool) -> Applied:
    chunk = uow.bulk.lock_chunk(chunk_id)
    if chunk is None:
        raise NotFound(f"no bulk-credit chunk {chunk_id}")
    if chunk.state != "PENDING" or chunk.cancel_requested:
        return Applied(chunk_id, skipped=True)  # a cancel ends its rows itself
    failed, exhausted = uow.bulk.fail_unapplicable(chunk, fail_user_ids, FAILURE_MESSAGES,
                                                   settings.retry_base_delay_s, settings.retry_max_attempts)
    repaired = uow.bulk.settle_already_posted(chunk)
    if repaired:
        log.error("chunk %d: %d PENDING rows already had postings; marked SUCCESS", chunk_id, repaired)
    # Chunks of one activity draw from different shards of its reservation, each holding
    # exactly what its chunks pay (pipeline/bulk/release.py).
    shard = chunk.number % chunk.reservation_shards
    if isolate:
        credited, refused = credit_isolating(uow, chunk, shard)
    else:
        credited, refused = uow.bulk.credit_pending(chunk, shard)
    credited, failed = credited + repaired, failed + refused
    uow.bulk.finish_chunk(chunk)
    activity = settle(uow, chunk.activity_id, WORKER, successful=credited, failed=failed,
                      pending=-(credited + failed))
    amounts = uow.bulk.credited_in_transaction(chunk.activity_id) if credited else {}
    return Applied(chunk_id, credited, failed, status=activity.status, exhausted=exhausted,
                   credited_minor=tuple(sorted(amounts.items())))


def _note_start(uow_factory: Callable, chunk_id: int) -> int | None:
    """Commits one more start of the chunk before any work; None when it is not PENDING."""
    uow = uow_factory()
    with uow:
        started = uow.bulk.note_chunk_start(chunk_id)
        uow.commit()
    return started


def _give_up(uow_factory: Callable, chunk_id: int, why: str) -> Applied:
    uow = uow_factory()
    with uow:
        applied = give_up_chunk(uow, chunk_id, why)
        uow.commit()
    return applied


def _count_error(uow_factory: Callable, chunk_id: int, error: str) -> Applied | None:
    """Counts the error on the chunk; at CHUNK_ERRORS_MAX fails its PENDING rows with
    `chunk_failed` and returns what that did, else returns None (try the message again)."""
    uow = uow_factory()
    with uow:
        errors = uow.bulk.note_chunk_error(chunk_id, error)
        if errors is None or errors < CHUNK_ERRORS_MAX:
            uow.commit()
            return None
        applied = give_up_chunk(uow, chunk_id, f"failed {errors} times, last with {error}")
        uow.commit()
    return applied


def give_up_chunk(uow, chunk_id: int, why: str) -> Applied:
    """Fails every PENDING row of the chunk with `chunk_failed` (an operator may retry them)
    and ends the chunk in state FAILED, inside the caller's transaction."""
    chunk = uow.bulk.lock_chunk(chunk_id)
    if chunk is None or chunk.state != "PENDING":
        return Applied(chunk_id, skipped=True)
    message = f"{FAILURE_MESSAGES[CHUNK_FAILED]} ({why}); see the worker log, then retry"
    failed = uow.bulk.fail_rows(chunk, chunk.first_row_id, chunk.last_row_id, CHUNK_FAILED, message[:500])
    uow.bulk.finish_chunk(chunk, state="FAILED")
    log.error("chunk %d: gave up, %d rows failed with %s: %s", chunk_id, failed, CHUNK_FAILED, why)
    activity = settle(uow, chunk.activity_id, WORKER, failed=failed, pending=-failed, failed_chunks=1,
                      chunk_error=f"chunk {chunk.number}: {why}")
    return Applied(chunk_id, 0, failed, status=activity.status, gave_up=True)


def retry_failed_rows(uow_factory: Callable, queue: ChunkQueue, settings: Settings, activity_id: str,
                      actor: Actor) -> Retried:
    """Puts every FAILED row back to PENDING and sends its chunk again; an operator's action.

    The activity's row lock makes two retries at once take turns: the second finds no
    FAILED row left and is refused with NotRetryable. Raises NotFound for an unknown activity.
    """
    def attempt() -> tuple[int, list[int]]:
        uow = uow_factory()
        with uow:
            activity = uow.bulk.lock_activity(activity_id)
            if activity is None:
                raise NotFound(f"no bulk-credit activity {activity_id}")
            if activity.cancel_requested:
                raise NotRetryable("the activity is cancelled")
            reopened, chunk_ids = uow.bulk.reopen_failed_rows(activity_id, settings.chunk_lease_s)
            if reopened == 0:
                raise NotRetryable("the activity has no FAILED rows to retry")
            settle(uow, activity_id, actor, failed=-reopened, pending=reopened, status=PROCESSING,
                   reason=f"retry of {reopened} FAILED rows", reset_chunks=True)
            audit.record(uow, actor, "bulk_credit.retry", "activity", activity_id, retried_records=reopened)
            uow.commit()
        return reopened, chunk_ids

    reopened, chunk_ids = with_retries(settings.transaction_attempts_max, attempt)
    send_after_commit(queue, chunk_ids)
    return Retried(activity_id, PROCESSING, reopened)
