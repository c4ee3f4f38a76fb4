"""What the scheduler does for bulk credits: automatic retries, and lost chunks.

Automatic retries. A row that fails gets `next_attempt_at` = now + RETRY_BASE_DELAY_S x
2^(attempts - 1). Once that time has passed, a sweep puts the row back to PENDING and
sends its chunk again, under the activity's row lock: the lock the retry endpoint takes
too, so the two never re-queue a row twice (and `postings.bulk_row_id` is UNIQUE, so
even then nothing could be credited twice). A row that has failed RETRY_MAX_ATTEMPTS
times stays FAILED for good with code `retries_exhausted` (set by the chunk that fails it
that last time); only an operator's explicit retry (the endpoint or the CLI) tries it
again. An automatic retry never changes the status of its activity by itself, and never
touches a final one (pipeline/bulk/status.py).

Lost chunks. Sending a chunk's message sets its lease (`leased_until`, CHUNK_LEASE_S
ahead). A chunk still PENDING when its lease has passed lost its message: Redis was
restarted without persistence, or a worker died holding it. The sweep renews the lease
and sends the chunk again. Dramatiq's own redelivery after a dead worker can take many
minutes, so we do not wait for it; if it happens as well, the second message finds the
chunk DONE and does nothing. A lease that expires while the message only waits in the
queue (workers down, a long backlog) sends it again, with no limit: that costs a duplicate
message, never a payee. A chunk that kills the workers that start it is given up on by the
worker (pipeline/bulk/chunks.py, CHUNK_STARTS_MAX).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline.bulk.outcome import settle
from pipeline.bulk.ports import SCHEDULER, ChunkQueue, send_after_commit
from pipeline.config import Settings
from pipeline.retrying import with_retries

#: Activities with rows due for a retry that one sweep handles; the next sweep takes the rest.
RETRY_ACTIVITIES_PER_SWEEP_MAX = 50
#: Chunks with an expired lease that one sweep sends again.
LOST_CHUNKS_PER_SWEEP_MAX = 500


@dataclass(frozen=True)
class RetrySweep:
    activities: int
    retried_rows: int



def retry_due_rows(uow_factory: Callable, queue: ChunkQueue, settings: Settings) -> RetrySweep:
    """Retries the FAILED rows whose backoff has passed, activity by activity."""
    with uow_factory() as uow:
        activity_ids = uow.bulk.activities_with_due_rows(RETRY_ACTIVITIES_PER_SWEEP_MAX)
    retried = 0
    for activity_id in activity_ids:
        reopened, chunk_ids = with_retries(
            settings.transaction_attempts_max, lambda: _retry_activity(uow_factory, settings, activity_id))
        send_after_commit(queue, chunk_ids)
        retried += reopened
    return RetrySweep(len(activity_ids), retried)


def _retry_activity(uow_factory: Callable, settings: Settings, activity_id: str) -> tuple[int, list[int]]:
    uow = uow_factory()
    with uow:
        activity = uow.bulk.lock_activity(activity_id)
        if activity is None or activity.cancel_requested:
            return 0, []
        reopened, chunk_ids = uow.bulk.reopen_due_rows(activity_id, settings.chunk_lease_s)
        if reopened:
            settle(uow, activity_id, SCHEDULER, failed=-reopened, pending=reopened)
        uow.commit()
    return reopened, chunk_ids


def resend_lost_chunks(uow_factory: Callable, queue: ChunkQueue, settings: Settings) -> int:
    """Sends again the PENDING chunks whose lease has expired; returns how many."""

    def renew() -> list[int]:
        uow = uow_factory()
        with uow:
            chunk_ids = uow.bulk.renew_expired_leases(settings.chunk_lease_s, LOST_CHUNKS_PER_SWEEP_MAX)
            uow.commit()
        return chunk_ids

    chunk_ids = with_retries(settings.transaction_attempts_max, renew)
    send_after_commit(queue, chunk_ids)
    return len(chunk_ids)
