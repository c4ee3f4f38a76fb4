"""Maker-checker for bulk credits: which files wait for a second pair of eyes.

BULK_CREDIT_APPROVAL is `none` (every file is released at upload), `always`, or
per-currency thresholds such as `SGD:10000.00,JPY:1000000` (major units): a file whose
valid total in a currency reaches its threshold, or that pays a currency with no threshold,
waits in AWAITING_APPROVAL until a key
with the `approver` or `admin` scope, other than the uploader's, approves or rejects it
(../shared/API.md, "Approval").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from pipeline import audit
from pipeline.audit import must_be_live
from pipeline.bulk.outcome import settle
from pipeline.bulk.ports import Activity, Actor, ChunkQueue, send_after_commit
from pipeline.bulk.release import APPROVAL, InvalidState, Released, release
from pipeline.bulk.status import AWAITING_APPROVAL, REJECTED, SCHEDULED
from pipeline.config import Settings
from pipeline.errors import NotFound, Rejected
from pipeline.money import MINOR_UNITS, Currency, MoneyError, parse_amount
from pipeline.retrying import with_retries


class SameApprover(Rejected):
    """The key that uploaded a file may not approve it (maker-checker)."""

    code = "same_approver"
    status = 403


@dataclass(frozen=True)
class ApprovalPolicy:
    always: bool = False
    #: Currency code -> threshold in minor units.
    thresholds: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "ApprovalPolicy":
        """Raises ValueError naming what is wrong."""
        text = text.strip()
        if text.lower() in ("", "none"):
            return cls()
        if text.lower() == "always":
            return cls(always=True)
        thresholds = {}
        for part in text.split(","):
            code, _, amount = part.strip().partition(":")
            code = code.strip().upper()
            if code not in MINOR_UNITS or not amount:
                raise ValueError(f"BULK_CREDIT_APPROVAL: {part.strip()!r} is not CURRENCY:AMOUNT")
            if code in thresholds:
                raise ValueError(f"BULK_CREDIT_APPROVAL: {code} has two thresholds")
            try:
                thresholds[code] = parse_amount(amount.strip(), Currency(code, MINOR_UNITS[code]))
            except MoneyError as error:
                raise ValueError(f"BULK_CREDIT_APPROVAL: the {code} threshold {error.reason}") from error
        return cls(thresholds=thresholds)

    def needs_approval(self, totals: dict[str, int]) -> bool:
        """`totals`: the file's valid total per currency, in minor units. With thresholds, a
        currency that has none needs approval whatever its amount: a list of thresholds
        limits what is paid without a second look, it never leaves a currency unlimited."""
        if self.always:
            return True
        return bool(self.thresholds) and any(
            code not in self.thresholds or amount >= self.thresholds[code] for code, amount in totals.items())


def _awaiting(uow, activity_id: str, lock: bool = False) -> Activity:
    activity = uow.bulk.lock_activity(activity_id) if lock else uow.bulk.activity(activity_id)
    if activity is None:
        raise NotFound(f"no bulk-credit activity {activity_id}")
    if activity.status != AWAITING_APPROVAL or activity.cancel_requested:
        raise InvalidState(f"activity {activity_id} is {activity.status}, not awaiting approval")
    return activity


def approve(uow_factory: Callable, queue: ChunkQueue, settings: Settings, activity_id: str,
            actor: Actor) -> Released:
    """Approves a file awaiting approval: reserves its funds and releases it now, or at its
    `execute_at` if that is still ahead. Raises NotFound, InvalidState (409) when it is not
    awaiting approval, SameApprover (403) for the uploader's own key, InsufficientFunds
    (422) when the funding account holds less (it then still awaits approval)."""
    def attempt() -> Released:
        uow = uow_factory()
        with uow:
            must_be_live(uow, actor)
            activity = _awaiting(uow, activity_id)
            if activity.uploaded_by is not None and activity.uploaded_by == actor.api_key_id:
                raise SameApprover("the key that uploaded this file cannot approve it: ask another approver")
            if activity.execute_at is not None and activity.execute_at > datetime.now(timezone.utc):
                _awaiting(uow, activity_id, lock=True)
                uow.bulk.mark_approved(activity_id, actor.api_key_id)
                settle(uow, activity_id, actor, status=SCHEDULED, reason="approved; released at execute_at")
                outcome = Released(SCHEDULED, [])
            else:
                outcome = release(uow, settings, activity_id, actor, APPROVAL)
                if not outcome.chunk_ids:  # changed under us: someone else acted first
                    _awaiting(uow, activity_id)
            audit.record(uow, actor, "bulk_credit.approve", "activity", activity_id, status=outcome.status)
            uow.commit()
        return outcome

    outcome = with_retries(settings.transaction_attempts_max, attempt)
    send_after_commit(queue, outcome.chunk_ids)
    return outcome


def reject(uow_factory: Callable, settings: Settings, activity_id: str, actor: Actor, reason: str) -> Activity:
    """Rejects a file awaiting approval: its rows end CANCELLED (code `rejected`) and
    nothing moves. Raises NotFound, and InvalidState (409) when it is not awaiting approval."""
    def attempt() -> Activity:
        uow = uow_factory()
        with uow:
            must_be_live(uow, actor)
            activity = _awaiting(uow, activity_id, lock=True)
            pending = activity.counters.pending
            uow.bulk.cancel_rows(activity_id, 1, reason, code="rejected")
            ended = settle(uow, activity_id, actor, pending=-pending, cancelled=pending, status=REJECTED,
                           reason=reason)
            audit.record(uow, actor, "bulk_credit.reject", "activity", activity_id, reason=reason,
                         cancelled_records=pending)
            uow.commit()
        return ended

    ended = with_retries(settings.transaction_attempts_max, attempt)
    return ended
