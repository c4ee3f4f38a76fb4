"""One budget of long-lived responses per web process, shared by every kind of stream.

Under gunicorn's threaded worker a streamed response (`GET /api/v1/events`, the dashboard's
live progress of an activity) holds one of the process's WEB_THREADS threads for its whole
life. Every kind of stream draws on one budget of STREAMS_PER_PROCESS_MAX slots, and
gunicorn.conf.py refuses to start a worker whose budget is more than half its threads, so
ordinary requests (`/healthz`, transfers) always keep the other half. A stream that finds
every slot taken is answered at once instead (503, or a `busy` event for a browser), so it
holds a thread for no longer than any other request.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterator

from flask import current_app

_EXTENSION = "wallet.stream_slots"


class StreamSlots:
    def __init__(self, capacity: int):
        assert capacity >= 1
        self.capacity = capacity
        self._free = threading.BoundedSemaphore(capacity)

    def take(self) -> Callable[[], None] | None:
        """A slot's release function (calling it twice releases once), or None when all are taken."""
        if not self._free.acquire(blocking=False):
            return None
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self._free.release()

        return release


def slots() -> StreamSlots:
    """The current app's budget, made on first use from STREAMS_PER_PROCESS_MAX."""
    extensions = current_app.extensions
    if _EXTENSION not in extensions:
        # A race here makes a spare budget once; setdefault keeps exactly one.
        extensions.setdefault(_EXTENSION, StreamSlots(extensions["wallet"].settings.streams_per_process_max))
    return extensions[_EXTENSION]


class SlotBody:
    """A response body that gives its slot back when the server closes it, even if the body
    was never iterated (a client gone before the first byte): a generator's own `finally`
    would not run then."""

    def __init__(self, chunks: Iterator[str], release: Callable[[], None]):
        self.chunks = chunks
        self.release = release

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self.chunks)

    def close(self) -> None:
        try:
            close = getattr(self.chunks, "close", None)
            if close is not None:
                close()
        finally:
            self.release()
