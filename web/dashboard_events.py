"""Live progress of one activity as Server-Sent Events, read from PostgreSQL.

The stream polls the activity's counters every POLL_INTERVAL_S, each time in its own
short transaction, so no database connection is held between polls, and sends a
`progress` event only when something changed. It ends with an `end` event once the
activity is final, or silently after STREAM_DURATION_S, when the browser's EventSource
reconnects on its own. Under gunicorn's gthread workers a stream holds one thread for
its whole life, so each takes a slot of the process's stream budget (web/stream_slots.py,
shared with `GET /api/v1/events`); with every slot taken the answer is `busy_events` at
once: a `busy` event and a longer reconnection delay, rather than a 503, after which a
browser's EventSource would never reconnect.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Iterator


#: How often the stream reads the counters, in seconds.
POLL_INTERVAL_S = 0.5
#: The longest one stream lasts, in seconds; the browser then reconnects.
STREAM_DURATION_S = 120
#: A comment this often when nothing changes, so that a closed tab is noticed and proxies keep
#: the connection open, in seconds.
HEARTBEAT_INTERVAL_S = 5
#: How long the browser waits before it reconnects, in milliseconds.
RECONNECT_MS = 1_000
#: How long it waits when every stream slot was taken, in milliseconds.
BUSY_RECONNECT_MS = 5_000


def event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def busy_events(streams_max: int) -> Iterator[str]:
    """The whole answer when every stream slot is taken: try again later, and why."""
    yield f"retry: {BUSY_RECONNECT_MS}\n\n"
    yield event("busy", {"streams_max": streams_max})


def progress_events(read_activity: Callable[[], dict], clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep,
                    annotate: Callable[[dict], dict] = dict) -> Iterator[str]:
    """Yields `progress` events while the activity changes.

    `read_activity` returns the activity as the API renders it; it must open and close its
    own transaction. `annotate` returns what a `progress` event sends for it (the page adds its
    pace): it runs only when the activity changed, so a pace that moves with the clock alone
    sends nothing. The caller holds a stream slot for as long as this runs.
    """
    yield f"retry: {RECONNECT_MS}\n\n"
    deadline = clock() + STREAM_DURATION_S
    last, last_sent = None, clock()
    while True:
        current = read_activity()
        if current != last:
            yield event("progress", annotate(current))
            last, last_sent = current, clock()
        if current["final"]:
            yield event("end", {"status": current["status"]})
            return
        if clock() >= deadline:
            return
        if clock() - last_sent >= HEARTBEAT_INTERVAL_S:
            yield ": still here\n\n"
            last_sent = clock()
        sleep(POLL_INTERVAL_S)
