"""The bulk-credit actor: one message per chunk, carrying only the chunk's id.

A chunk that is already DONE makes the message a no-op, so delivering it twice, or
sending it again after a lost message, never credits anything twice.
"""
from __future__ import annotations

import logging
import time

import dramatiq

from bootstrap import process_services as services
from pipeline.bulk import chunks
from pipeline.errors import NotFound
from telemetry.metrics import BULK_CHUNK_DURATION, BULK_CHUNKS_FAILED, BULK_ROWS_EXHAUSTED, count_credited, count_rows

log = logging.getLogger(__name__)

QUEUE_NAME = "bulk_credit"
ACTOR_NAME = "apply_bulk_chunk"
#: Retries of a message whose chunk kept hitting transient faults (each try already ran
#: the chunk's transaction up to TRANSACTION_ATTEMPTS_MAX times); past this, the lease expires
#: and the scheduler sends the chunk again. An error that is not transient is counted on the
#: chunk, and at pipeline.bulk.chunks.CHUNK_ERRORS_MAX (below this) its rows fail instead.
MAX_RETRIES = 5
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 60_000
#: A chunk of at most 50,000 rows takes seconds; this is a bound on a stuck one, in milliseconds.
TIME_LIMIT_MS = 300_000


@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=QUEUE_NAME, max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS,
                max_backoff=MAX_BACKOFF_MS, time_limit=TIME_LIMIT_MS, throws=(NotFound,))
def apply_bulk_chunk(chunk_id: int) -> None:
    started_s = time.perf_counter()
    try:
        applied = chunks.apply_chunk(services().uow, services().settings, int(chunk_id))
    except BaseException:
        BULK_CHUNK_DURATION.labels("error").observe(time.perf_counter() - started_s)
        raise
    BULK_CHUNK_DURATION.labels("skipped" if applied.skipped else "applied").observe(time.perf_counter() - started_s)
    count_rows("SUCCESS", applied.credited)
    count_rows("FAILED", applied.failed)
    count_credited(dict(applied.credited_minor))
    BULK_ROWS_EXHAUSTED.inc(applied.exhausted)
    BULK_CHUNKS_FAILED.inc(applied.gave_up)
    log.info("chunk %d: %s", chunk_id, "already done" if applied.skipped else
             f"{applied.credited} credited, {applied.failed} failed, activity {applied.status}")


class ChunkMessages:
    """`pipeline.bulk.ports.ChunkQueue` over a Dramatiq broker: one message per chunk id."""

    def __init__(self, broker: dramatiq.Broker):
        self.broker = broker

    def send(self, chunk_ids: list[int]) -> None:
        for chunk_id in chunk_ids:
            self.broker.enqueue(dramatiq.Message(queue_name=QUEUE_NAME, actor_name=ACTOR_NAME, args=(chunk_id,),
                                                 kwargs={}, options={}))
