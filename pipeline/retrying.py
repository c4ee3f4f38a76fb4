"""Runs a unit of work again when PostgreSQL reports a transient fault."""
from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from pipeline.errors import TransientFault, Unavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

#: The first pause after a transient fault; it doubles on each further attempt.
BACKOFF_BASE_MS = 5


def with_retries(attempts_max: int, work: Callable[[], T]) -> T:
    """Calls `work` until it does not raise TransientFault, at most `attempts_max` times."""
    assert attempts_max >= 1
    for attempt in range(1, attempts_max + 1):
        try:
            return work()
        except TransientFault as fault:
            log.warning("transient fault, attempt %d of %d: %s", attempt, attempts_max, fault)
            if attempt == attempts_max:
                raise Unavailable("the database is busy: try again shortly") from fault
            pause_ms = BACKOFF_BASE_MS * 2 ** attempt * (0.5 + random.random())
            time.sleep(pause_ms / 1000)
    raise AssertionError("unreachable")


def committed(uow_factory: Callable, attempts_max: int, act: Callable) -> T:
    """Runs `act(uow)` in one unit of work and commits it, again on a transient fault; returns
    what `act` returned. A refusal `act` raises rolls everything back."""
    def attempt():
        uow = uow_factory()
        with uow:
            result = act(uow)
            uow.commit()
        return result

    return with_retries(attempts_max, attempt)
