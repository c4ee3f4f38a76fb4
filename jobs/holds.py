"""The scheduler's hold job: holds past `expires_at` become `expired` and their money is released."""
from __future__ import annotations

import logging

from pipeline import holds

log = logging.getLogger(__name__)


def expire_holds(services) -> None:
    """One sweep, in fenced transactions of the leader (jobs/fencing.py)."""
    expired = holds.expire_due(services.uow)
    if expired:
        log.info("hold sweep: %d holds expired and released", expired)
