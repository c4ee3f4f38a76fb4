"""The scheduler's event publisher: moves the outbox to the Redis Streams (`pipeline.events`).

One run drains the outbox for at most `RUN_S` seconds, batch after batch, sleeping
`EVENTS_POLL_INTERVAL_S` whenever it is empty; the scheduler starts the next run a second
later, so events reach the streams within about the poll interval. Runs the leader only,
like every job, and its transactions are fenced by the lease (`jobs/fencing.py`); the
publisher's own advisory lock keeps even a leader that is stepping down from publishing
beside its successor.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import redis
from sqlalchemy.exc import OperationalError

from pipeline import events
from pipeline.errors import TransientFault
from storage.event_streams import RedisEventLog
from telemetry import metrics

log = logging.getLogger(__name__)

#: The longest a run keeps publishing, in seconds: below the job's interval, so runs do not queue.
RUN_S = 0.9
#: How often the job starts, in seconds.
INTERVAL_S = 1.0

_event_logs: dict[int, RedisEventLog] = {}


def _event_log(services) -> RedisEventLog:
    # One Redis client per Services: its connection pool is reused from run to run.
    return _event_logs.setdefault(id(services), RedisEventLog.from_settings(services.settings))


def drain(uow_factory: Callable, event_log: events.EventLog, batch_max: int, poll_interval_s: float,
          run_s: float, clock: Callable[[], float] = time.monotonic) -> int:
    """Publishes batches until `run_s` has passed; returns how many events it published."""
    deadline = clock() + run_s
    published = 0
    while clock() < deadline:
        count = events.publish_pending(uow_factory, event_log, batch_max)
        published += count
        metrics.EVENTS_PUBLISHED.inc(count)
        if count < batch_max:
            time.sleep(max(0.0, min(poll_interval_s, deadline - clock())))
    return published


def publish_events(services) -> None:
    settings = services.settings
    try:
        published = drain(services.uow, _event_log(services), settings.events_publish_batch_max,
                          settings.events_poll_interval_s, RUN_S)
    except (redis.RedisError, TransientFault, OperationalError) as error:
        # The rows stay in the outbox and go out on a later run (OperationalError: no connection
        # to PostgreSQL at all, which the unit of work raises before it can call it transient).
        log.warning("event publisher: %s, will try again: %s", type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "")
        return
    if published:
        log.debug("event publisher: %d events published", published)
