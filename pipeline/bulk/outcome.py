"""Moving an activity's counters, status and finality together, with its history.

Every use case that changes row outcomes ends here, holding the activity's row lock,
so the status is always computed from the counters of the same transaction and every
transition is checked against the one table in pipeline/bulk/status.py.
"""
from __future__ import annotations

from pipeline.bulk.ports import Activity, Actor
from pipeline.bulk.status import (OPERATOR, SETTLED_STATUSES, SYSTEM, Counters, check_transition, is_final,
                                  status_after_chunk)
from pipeline.errors import NotFound


def settle(uow, activity_id: str, actor: Actor, *, successful: int = 0, failed: int = 0, pending: int = 0,
           cancelled: int = 0, status: str | None = None, by: str = OPERATOR, reason: str | None = None,
           failed_chunks: int = 0, chunk_error: str | None = None, reset_chunks: bool = False) -> Activity:
    """Adds the row deltas to the activity's counters and moves its status accordingly.

    `status` is given for an action, `by` an operator (a retry, a cancel) unless said
    otherwise (a release is the pipeline's); without it the status follows from the
    counters. Returns the activity as saved.
    Raises NotFound for an unknown activity, and TransitionRefused (a bug, never
    input) for a change the state table does not allow, such as the pipeline itself
    changing a final activity.
    """
    before = uow.bulk.lock_activity(activity_id)
    if before is None:
        raise NotFound(f"no bulk-credit activity {activity_id}")
    old = before.counters
    counters = Counters(old.total, old.valid, old.invalid, old.successful + successful, old.failed + failed,
                        old.pending + pending, old.cancelled + cancelled)
    by = by if status is not None else SYSTEM
    status = status or status_after_chunk(before.status, counters)
    settled = counters.pending == 0 and status in SETTLED_STATUSES
    next_retry_at = uow.bulk.next_retry_at(activity_id) if settled else None
    final = is_final(status, counters, next_retry_at)
    if status != before.status:
        check_transition(before.status, status, by, before.final)
    elif before.final and by == SYSTEM:
        assert counters == old and final, f"the pipeline changed final activity {activity_id}"
    logged = status != before.status or final != before.final
    saved = uow.bulk.save_outcome(activity_id, before.status, status, counters, next_retry_at, final,
                                  actor if logged else None, reason, failed_chunks, chunk_error, reset_chunks)
    assert saved.final == final and saved.counters == counters, (saved, final, counters)
    return saved
