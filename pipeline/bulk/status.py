"""The activity's state machine and counters (see ../shared/API.md, "Bulk credit").

    UPLOADED --first chunk applied--> PROCESSING --no row pending--> COMPLETED
                                                                 +-> PARTIALLY_COMPLETED
                                                                 +-> FAILED
    COMPLETED is final; PARTIALLY_COMPLETED and FAILED go back to PROCESSING on a retry.

The counters are kept by the same database transactions that change row statuses, and
the database checks that they add up (valid + invalid = total, successful + failed +
pending = valid), so they are exact at every commit, not eventually.
"""
from __future__ import annotations

from dataclasses import dataclass

UPLOADED = "UPLOADED"
PROCESSING = "PROCESSING"
COMPLETED = "COMPLETED"
PARTIALLY_COMPLETED = "PARTIALLY_COMPLETED"
FAILED = "FAILED"
FINAL_STATUSES = (COMPLETED, PARTIALLY_COMPLETED, FAILED)

#: Row statuses.
ROW_PENDING = "PENDING"
ROW_SUCCESS = "SUCCESS"
ROW_FAILED = "FAILED"
ROW_INVALID = "INVALID"
ROW_STATUSES = (ROW_PENDING, ROW_SUCCESS, ROW_FAILED, ROW_INVALID)

#: Codes of rows that could not be applied; they may succeed on a retry.
INJECTED_FAULT = "injected_fault"
USER_NOT_FOUND = "user_not_found"
FAILURE_MESSAGES = {
    INJECTED_FAULT: "the user is listed in BULK_CREDIT_FAIL_USER_IDS (fault injection); retry once cleared",
    USER_NOT_FOUND: "the user was deleted after the upload",
}


@dataclass(frozen=True)
class Counters:
    total: int
    valid: int
    invalid: int
    successful: int
    failed: int
    pending: int

    def __post_init__(self):
        assert self.valid + self.invalid == self.total, self
        assert self.successful + self.failed + self.pending == self.valid, self
        assert min(self.total, self.valid, self.invalid, self.successful, self.failed, self.pending) >= 0, self


def settled_status(counters: Counters) -> str:
    """The final status once no row is pending; invalid rows do not change it."""
    assert counters.pending == 0
    if counters.valid > 0 and counters.successful == counters.valid:
        return COMPLETED
    if counters.successful > 0:
        return PARTIALLY_COMPLETED
    return FAILED


def status_after_chunk(counters: Counters) -> str:
    """The status once a chunk's transaction has updated the counters."""
    return PROCESSING if counters.pending > 0 else settled_status(counters)


def status_after_upload(counters: Counters) -> str:
    """A file with no valid row is FAILED at once: there is nothing to process."""
    return UPLOADED if counters.pending > 0 else settled_status(counters)
