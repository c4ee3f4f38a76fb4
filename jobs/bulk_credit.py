"""The scheduler's bulk-credit jobs: they look at the database and send chunk messages."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from pipeline.bulk import recovery, release
from telemetry.metrics import BULK_CHUNKS_RESENT, BULK_ROW_RETRIES

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
    sent = recovery.resend_lost_chunks(services.uow, _queue(), services.settings)
    BULK_CHUNKS_RESENT.inc(sent)
    if sent:
        log.warning("lost-chunk sweep: %d chunks had an expired lease and were sent again", sent)


def release_funded(services) -> None:
    released = release.release_funded(services.uow, _queue(), services.settings)
    if released:
        log.info("funding sweep: %d activities waiting for funds were released", released)


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable
    interval_s: Callable  #: settings -> seconds


JOBS = (
    Job("retry_due_rows", retry_due_rows, lambda settings: settings.scheduler_sweep_interval_s),
    Job("resend_lost_chunks", resend_lost_chunks, lambda settings: settings.scheduler_sweep_interval_s),
    Job("release_funded", release_funded, lambda settings: settings.scheduler_sweep_interval_s),
)
