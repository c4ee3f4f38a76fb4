"""The scheduler's bulk-credit jobs: they look at the database and send chunk messages."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from pipeline.bulk import recovery
from telemetry.metrics import BULK_CHUNKS_FAILED, BULK_CHUNKS_RESENT, BULK_ROW_RETRIES

log = logging.getLogger(__name__)


def _queue():
    from actors import broker
    from actors.bulk_credit import ChunkMessages

    return ChunkMessages(broker)


def retry_due_rows(services) -> None:
    sweep = recovery.retry_due_rows(services.uow, _queue(), services.settings)
    BULK_ROW_RETRIES.labels("scheduler").inc(sweep.retried_rows)
    if sweep.activities:
        log.info("retry sweep: %d rows retried in %d activities", sweep.retried_rows, sweep.activities)


def resend_lost_chunks(services) -> None:
    sweep = recovery.resend_lost_chunks(services.uow, _queue(), services.settings)
    BULK_CHUNKS_RESENT.inc(sweep.resent_chunks)
    BULK_CHUNKS_FAILED.labels("never_finished").inc(sweep.abandoned_chunks)
    if sweep.resent_chunks:
        log.warning("lost-chunk sweep: %d chunks had an expired lease and were sent again", sweep.resent_chunks)
    if sweep.abandoned_chunks:
        log.error("lost-chunk sweep: gave up on %d chunks sent %d times that never finished; their rows failed"
                  " with chunk_failed", sweep.abandoned_chunks, recovery.CHUNK_SENDS_MAX)


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable
    interval_s: Callable  #: settings -> seconds


JOBS = (
    Job("retry_due_rows", retry_due_rows, lambda settings: settings.scheduler_sweep_interval_s),
    Job("resend_lost_chunks", resend_lost_chunks, lambda settings: settings.scheduler_sweep_interval_s),
)
