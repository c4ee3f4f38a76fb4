"""Reversing a bulk credit: a new activity of kind `reversal` whose rows take the money of the
credit's SUCCESS rows back to its funding account, through the same chunked pipeline.

- **One outcome per row named.** Every SUCCESS row of the credit, or the rows named by row
  number or reference, becomes a row of the reversal under the same row number. A row that
  was never credited (PENDING, FAILED, INVALID, CANCELLED), or that a reversal already holds,
  is INVALID `not_reversible`, saying why; a second reversal of the same rows reverses nothing.
- **A row is reversed at most once, by the database.** Each reversible row claims its credit
  row in `bulk_reversal_claims`, whose primary key refuses a second claim; a lock on the
  credit's id (not its row, which its chunks still being applied need) makes two reversals
  of one credit judge the claims in turn. A cancelled reversal row gives its claim back.
- **No balance below zero.** A chunk locks its payees' wallets and fails with
  `insufficient_funds` the rows of a wallet that no longer holds their money (from the first
  one whose running total passes the balance). They are not retried on a timer; an
  operator's retry tries them again, like any FAILED row.
- **Money goes back where it came from**: one `bulk_reversal` journal entry per chunk and
  currency, a debit per row and one credit of the credit's funding account (free to reserve
  again, not into a reservation). Nothing is reserved at release: the money is the payees'.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from pipeline import audit
from typing import Callable

from pipeline.bulk.ports import Activity, Actor, ChunkQueue, send_after_commit
from pipeline.bulk.release import InvalidState
from pipeline.bulk.status import SETTLED_STATUSES, Counters, status_after_upload
from pipeline.config import Settings
from pipeline.errors import FieldError, NotFound, ValidationFailed
from pipeline.retrying import with_retries
from pipeline.text import storable

CREDIT, REVERSAL = "credit", "reversal"
#: Row numbers and references one reversal may name, together.
NAMED_ROWS_MAX = 100_000
#: Unknown row numbers or references a 422 names, at most.
UNKNOWN_NAMED_MAX = 10
#: The longest reference a reversal may name, in characters (a CSV cell is at most 4,096).
REFERENCE_LENGTH_MAX = 4_096
#: The largest row number: PostgreSQL's integer.
ROW_NUMBER_MAX = 2**31 - 1


@dataclass(frozen=True)
class Reversal:
    activity: Activity
    #: Chunks to send once the transaction that planned them has committed.
    chunk_ids: list[int]


def parse_named_rows(body: dict) -> tuple[list[int] | None, list[str] | None]:
    """`row_numbers` and `references` of a reverse request, each None when not given.

    Raises ValidationFailed naming the field: not a list, empty, an element of the wrong
    type, or more than NAMED_ROWS_MAX in all."""
    errors: list[FieldError] = []
    row_numbers = body.get("row_numbers")
    if row_numbers is not None:
        if (not isinstance(row_numbers, list) or not row_numbers
                or not all(type(n) is int and 2 <= n <= ROW_NUMBER_MAX for n in row_numbers)):
            errors.append(FieldError("row_numbers", "a non-empty list of row numbers as a spreadsheet shows them"
                                                    " (the first data row is 2)"))
    references = body.get("references")
    if references is not None:
        if (not isinstance(references, list) or not references
                or not all(isinstance(r, str) and 1 <= len(r) <= REFERENCE_LENGTH_MAX and storable(r)
                           for r in references)):
            errors.append(FieldError("references", "a non-empty list of the rows' references (text)"))
    if not errors and len(row_numbers or ()) + len(references or ()) > NAMED_ROWS_MAX:
        field = "row_numbers" if row_numbers else "references"
        errors.append(FieldError(field, f"at most {NAMED_ROWS_MAX} rows named in one reversal"))
    if errors:
        raise ValidationFailed("the rows to reverse are not valid", errors)
    unique = lambda values: sorted(set(values)) if values is not None else None  # noqa: E731
    return unique(row_numbers), unique(references)


def reverse(uow, settings: Settings, *, activity_id: str, actor: Actor, reason: str,
            row_numbers: list[int] | None = None, references: list[str] | None = None) -> Reversal:
    """Creates the reversal of credit `activity_id` inside the caller's transaction and plans
    its chunks; returns it with the chunks to send after the commit.

    Raises NotFound (no such activity), InvalidState (409: a reversal named, or a credit
    with no credited row when none is named), and ValidationFailed (422) naming
    `row_numbers` or `references` when some name no row of the credit.
    """
    uow.bulk.serialize_reversals(activity_id)
    credit = uow.bulk.activity(activity_id)
    if credit is None:
        raise NotFound(f"no bulk-credit activity {activity_id}")
    if credit.kind != CREDIT:
        raise InvalidState(f"activity {activity_id} is a reversal; reverse the credit it reverses instead")
    if row_numbers is not None or references is not None:
        _refuse_unknown(uow, credit.id, row_numbers or [], references or [])
    reversal_id = str(uuid.uuid4())
    uow.bulk.add_reversal(reversal_id, credit, actor.api_key_id)
    valid, invalid = uow.bulk.copy_reversal_rows(reversal_id, credit.id, row_numbers, references,
                                                 settings.bulk_credit_chunk_rows)
    if valid + invalid == 0:
        raise InvalidState(f"activity {activity_id} has no credited row to reverse")
    claimed = uow.bulk.claim_reversals(reversal_id)
    assert claimed == valid, f"reversal {reversal_id}: {claimed} rows claimed, {valid} reversible"
    counters = Counters(valid + invalid, valid, invalid, 0, 0, valid)
    status = status_after_upload(counters)
    final = status in SETTLED_STATUSES
    uow.bulk.finish_reversal(reversal_id, counters, status, final)
    uow.bulk.add_history(reversal_id, None, status, final, actor, reason)
    chunk_ids: list[int] = []
    if valid:
        chunk_ids, planned = uow.bulk.plan_chunks(reversal_id, settings.chunk_lease_s)
        assert planned == valid, (planned, valid)
    audit.record(uow, actor, "bulk_credit.reverse", "bulk_activity", credit.id, reversal_activity_id=reversal_id,
                 reason=reason, reversible_rows=valid, not_reversible_rows=invalid)
    return Reversal(uow.bulk.activity(reversal_id), chunk_ids)


def reverse_and_send(uow_factory: Callable, queue: ChunkQueue, settings: Settings, **request) -> Activity:
    """`reverse` in a transaction of its own (the command line's; the API's is its request's,
    with the Idempotency-Key), then its chunks sent once committed. Raises as `reverse`."""
    def attempt() -> Reversal:
        uow = uow_factory()
        with uow:
            done = reverse(uow, settings, **request)
            uow.commit()
        return done

    done = with_retries(settings.transaction_attempts_max, attempt)
    send_after_commit(queue, done.chunk_ids)
    return done.activity


def _refuse_unknown(uow, credit_id: str, row_numbers: list[int], references: list[str]) -> None:
    numbers, names = uow.bulk.unknown_rows(credit_id, row_numbers, references, UNKNOWN_NAMED_MAX)
    errors = []
    if numbers:
        errors.append(FieldError("row_numbers", f"no row {', '.join(map(str, numbers))} in activity {credit_id}"))
    if names:
        shown = ", ".join(repr(name[:40]) for name in names)
        errors.append(FieldError("references", f"no row with reference {shown} in activity {credit_id}"))
    if errors:
        raise ValidationFailed("some rows named are not in the activity", errors)
