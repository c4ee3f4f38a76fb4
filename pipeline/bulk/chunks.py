"""Applying a chunk, and retrying an activity's FAILED rows.

Exactly once, on two code paths: the chunk's row lock and state make a second delivery
(or a second worker) a no-op, and `postings.bulk_row_id` is UNIQUE, so even a bug in the
first path could not credit a row twice; it would fail the chunk's transaction instead.
A transient fault (deadlock, lost connection) rolls the whole chunk back and runs it
again, at most TRANSACTION_ATTEMPTS_MAX times with a growing pause; after that the
message fails and Dramatiq retries it with its own bounded backoff.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Callable

from pipeline.bulk.ports import Applied, ChunkQueue
from pipeline.bulk.status import FAILURE_MESSAGES, PROCESSING, status_after_chunk
from pipeline.bulk.upload import send_after_commit
from pipeline.config import Settings
from pipeline.errors import FieldError, NotFound, NotRetryable, ValidationFailed
from pipeline.retrying import with_retries

log = logging.getLogger(__name__)

DONE = "DONE"


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
    """Credits the chunk's PENDING rows in one database transaction, or does nothing if DONE."""
    fail_user_ids = _fault_injected_users(settings)

    def attempt() -> Applied:
        uow = uow_factory()
        with uow:
            chunk = uow.bulk.lock_chunk(chunk_id)
            if chunk is None:
                raise NotFound(f"no bulk-credit chunk {chunk_id}")
            if chunk.state == DONE:
                return Applied(chunk_id, skipped=True)
            failed = uow.bulk.fail_unapplicable(chunk, fail_user_ids, FAILURE_MESSAGES, settings.retry_base_delay_s)
            repaired = uow.bulk.settle_already_posted(chunk)
            if repaired:
                log.error("chunk %d: %d PENDING rows already had postings; marked SUCCESS", chunk_id, repaired)
            # Chunk ids are consecutive, so concurrent chunks debit different funding shards.
            credited = repaired + uow.bulk.credit_pending(chunk, chunk.id % settings.system_wallet_shards)
            uow.bulk.finish_chunk(chunk, credited, failed)
            activity = uow.bulk.add_outcomes(chunk.activity_id, credited, failed, -(credited + failed))
            status = status_after_chunk(activity.counters)
            if status != activity.status:
                uow.bulk.set_status(chunk.activity_id, status)
            uow.commit()
        return Applied(chunk_id, credited, failed, status=status)

    return with_retries(settings.transaction_attempts_max, attempt)


def retry_failed_rows(uow_factory: Callable, queue: ChunkQueue, settings: Settings, activity_id: str) -> Retried:
    """Puts every FAILED row back to PENDING and sends its chunk again.

    The activity's row lock makes two retries at once take turns: the second finds no
    FAILED row left and is refused with NotRetryable.
    """
    def attempt() -> tuple[int, list[int]]:
        uow = uow_factory()
        with uow:
            if uow.bulk.lock_activity(activity_id) is None:
                raise NotFound(f"no bulk-credit activity {activity_id}")
            reopened, chunk_ids = uow.bulk.reopen_failed_rows(activity_id, settings.chunk_lease_s)
            if reopened == 0:
                raise NotRetryable("the activity has no FAILED rows to retry")
            uow.bulk.add_outcomes(activity_id, 0, -reopened, reopened)
            uow.bulk.set_status(activity_id, PROCESSING)
            uow.commit()
        return reopened, chunk_ids

    reopened, chunk_ids = with_retries(settings.transaction_attempts_max, attempt)
    send_after_commit(queue, chunk_ids)
    return Retried(activity_id, PROCESSING, reopened)
