"""The activity's state machine and counters (see ../shared/API.md, "Bulk credit").

    UPLOADED --first chunk applied--> PROCESSING --no row pending--> COMPLETED
                                                                 +-> PARTIALLY_COMPLETED
                                                                 +-> FAILED
    PARTIALLY_COMPLETED / FAILED --operator's retry--> PROCESSING
    UPLOADED <--funding account short / topped up--> AWAITING_FUNDS
    UPLOADED --total reaches BULK_CREDIT_APPROVAL--> AWAITING_APPROVAL --approve--> UPLOADED
                                                                     +--reject--> REJECTED
    UPLOADED or AWAITING_APPROVAL --execute_at ahead--> SCHEDULED --execute_at reached--> UPLOADED
    UPLOADED, AWAITING_FUNDS, PROCESSING, PARTIALLY_COMPLETED, FAILED --operator's cancel--> CANCELLED

An activity is *final* once no row is pending and no FAILED row waits for an automatic
retry (`next_retry_at` is None); its `completed_at` is set then, and the database checks
that the two agree. A final activity changes only by an operator's action: the
scheduler's automatic retries re-run rows of an activity that is not final yet, under the
status it has (a PARTIALLY_COMPLETED activity whose retries all succeed becomes
COMPLETED), and never move it back to PROCESSING. A client that waits for `final` is
never told a different outcome afterwards, unless an operator acts.

The counters are kept by the same database transactions that change row statuses, and
the database checks that they add up (valid + invalid = total, successful + failed +
pending = valid), so they are exact at every commit, not eventually.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

UPLOADED = "UPLOADED"
AWAITING_APPROVAL = "AWAITING_APPROVAL"
SCHEDULED = "SCHEDULED"
AWAITING_FUNDS = "AWAITING_FUNDS"
REJECTED = "REJECTED"
PROCESSING = "PROCESSING"
CANCELLED = "CANCELLED"
COMPLETED = "COMPLETED"
PARTIALLY_COMPLETED = "PARTIALLY_COMPLETED"
FAILED = "FAILED"
#: Every activity status, in the order of API.md.
ACTIVITY_STATUSES = (UPLOADED, AWAITING_APPROVAL, SCHEDULED, AWAITING_FUNDS, PROCESSING, COMPLETED,
                     PARTIALLY_COMPLETED, FAILED, REJECTED, CANCELLED)
#: The statuses that say how the rows came out; the activity is final in one of them once
#: nothing is pending or due for an automatic retry.
SETTLED_STATUSES = (COMPLETED, PARTIALLY_COMPLETED, FAILED)
#: Statuses in which an activity can be final.
ENDING_STATUSES = SETTLED_STATUSES + (CANCELLED, REJECTED)
#: Statuses from which an operator may cancel (rows not yet credited remain).
CANCELLABLE_STATUSES = (UPLOADED, AWAITING_APPROVAL, SCHEDULED, AWAITING_FUNDS, PROCESSING, PARTIALLY_COMPLETED,
                        FAILED)

#: Who may move an activity from one status to another: the pipeline itself (worker,
#: scheduler, upload) or an operator. The one table every transition is checked against.
SYSTEM, OPERATOR = "system", "operator"
TRANSITIONS = {
    (UPLOADED, PROCESSING): SYSTEM,
    **{(before, after): SYSTEM for before in (UPLOADED, PROCESSING) for after in SETTLED_STATUSES},
    # Automatic retries of a settled but not yet final activity change only its outcome.
    **{(before, after): SYSTEM for before in (PARTIALLY_COMPLETED, FAILED) for after in SETTLED_STATUSES
       if before != after},
    (PARTIALLY_COMPLETED, PROCESSING): OPERATOR,
    (FAILED, PROCESSING): OPERATOR,
    # Release: the funding account holds less than the file's valid total, then enough.
    (UPLOADED, AWAITING_FUNDS): SYSTEM,
    (AWAITING_FUNDS, UPLOADED): SYSTEM,
    # Gates before the release: a second pair of eyes, then the moment asked for.
    (UPLOADED, AWAITING_APPROVAL): SYSTEM,
    (UPLOADED, SCHEDULED): SYSTEM,
    (AWAITING_APPROVAL, UPLOADED): OPERATOR,
    (AWAITING_APPROVAL, SCHEDULED): OPERATOR,
    (AWAITING_APPROVAL, REJECTED): OPERATOR,
    (SCHEDULED, UPLOADED): SYSTEM,
    **{(before, CANCELLED): OPERATOR for before in CANCELLABLE_STATUSES},
}

#: Row statuses.
ROW_PENDING = "PENDING"
ROW_SUCCESS = "SUCCESS"
ROW_FAILED = "FAILED"
ROW_INVALID = "INVALID"
ROW_CANCELLED = "CANCELLED"
ROW_STATUSES = (ROW_PENDING, ROW_SUCCESS, ROW_FAILED, ROW_INVALID, ROW_CANCELLED)

#: Codes of rows that could not be applied (status FAILED); each may succeed on a retry.
#: The first two are retried automatically with a backoff; the others wait for an operator,
#: since trying again on a timer would only fail the same way.
INJECTED_FAULT = "injected_fault"
USER_NOT_FOUND = "user_not_found"
AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
CANNOT_APPLY = "cannot_apply"
CHUNK_FAILED = "chunk_failed"
WALLET_FROZEN = "wallet_frozen"
USER_CLOSED = "user_closed"
RETRIES_EXHAUSTED = "retries_exhausted"
FAILURE_MESSAGES = {
    INJECTED_FAULT: "the user is listed in BULK_CREDIT_FAIL_USER_IDS (fault injection); retry once cleared",
    USER_NOT_FOUND: "the user was deleted after the upload",
    AMOUNT_OUT_OF_RANGE: "the credit would take the wallet's balance past the largest amount it can hold"
                         " (9223372036854775807 minor units)",
    CANNOT_APPLY: "the database refused this row",
    CHUNK_FAILED: "the chunk holding this row failed",
    WALLET_FROZEN: "the wallet is frozen; retry once an admin has unfrozen it",
    USER_CLOSED: "the user was closed after the upload: no money moves for them any more",
}
AUTOMATIC_RETRY_CODES = (INJECTED_FAULT, USER_NOT_FOUND)


@dataclass(frozen=True)
class Counters:
    total: int
    valid: int
    invalid: int
    successful: int
    failed: int
    pending: int
    cancelled: int = 0

    def __post_init__(self):
        assert self.valid + self.invalid == self.total, self
        assert self.successful + self.failed + self.pending + self.cancelled == self.valid, self
        assert min(self.total, self.valid, self.invalid, self.successful, self.failed, self.pending,
                   self.cancelled) >= 0, self


def settled_status(counters: Counters) -> str:
    """The status once no row is pending; invalid rows do not change it."""
    assert counters.pending == 0
    if counters.valid > 0 and counters.successful == counters.valid:
        return COMPLETED
    if counters.successful > 0:
        return PARTIALLY_COMPLETED
    return FAILED


def status_after_chunk(current: str, counters: Counters) -> str:
    """The status once a chunk's transaction has updated the counters."""
    if current == CANCELLED:
        return current
    if counters.pending == 0:
        return settled_status(counters)
    return current if current in SETTLED_STATUSES else PROCESSING


def status_after_upload(counters: Counters) -> str:
    """A file with no valid row is FAILED at once: there is nothing to process."""
    return UPLOADED if counters.pending > 0 else settled_status(counters)


def is_final(status: str, counters: Counters, next_retry_at: datetime | None) -> bool:
    return status in ENDING_STATUSES and counters.pending == 0 and next_retry_at is None


class TransitionRefused(AssertionError):
    """A status change the table above does not allow: a bug in the caller, never input."""


def check_transition(before: str, after: str, by: str, final_before: bool) -> None:
    """Asserts that `by` (SYSTEM or OPERATOR) may move an activity from `before` to `after`."""
    allowed = TRANSITIONS.get((before, after))
    if before == after or allowed is None or (allowed == SYSTEM and final_before) or (
            allowed == OPERATOR and by != OPERATOR):
        raise TransitionRefused(f"{by} may not move a{' final' if final_before else 'n'} activity"
                                f" from {before} to {after}")
