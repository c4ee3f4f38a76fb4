"""Releasing an activity: its whole valid total is reserved from its funding account in one
journal entry per currency, then its chunks are planned and sent; and cancelling one.

The reservation is spread over `shards` wallets of the activity's own (one per chunk, up
to SYSTEM_WALLET_SHARDS), each holding exactly what its chunks will pay, so concurrent
chunks of one file debit different rows. If the funding account holds less than the
total, nothing moves: the activity waits in AWAITING_FUNDS and the scheduler tries again
(`release_funded`). A cancel returns exactly what its cancelled rows had reserved.

Lock order, as everywhere: chunks, users' wallets, bank, funding account, reservation,
then the activity row last (a release reads the activity first, and checks it again once
locked).
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from pipeline import audit
from pipeline.audit import must_be_live
from pipeline.bulk.outcome import settle
from pipeline.bulk.ports import SCHEDULER, Activity, Actor, ChunkQueue, send_after_commit
from pipeline.bulk.status import (AWAITING_APPROVAL, AWAITING_FUNDS, CANCELLABLE_STATUSES, CANCELLED, OPERATOR,
                                  SCHEDULED, SYSTEM, UPLOADED)
from pipeline.config import Settings
from pipeline.errors import Conflict, InsufficientFunds, NotFound
from pipeline.ledger import Movement, post
from pipeline.ports import JournalEntry
from pipeline.retrying import with_retries

log = logging.getLogger(__name__)

#: Activities waiting for funds that one scheduler sweep tries to release.
AWAITING_PER_SWEEP_MAX = 50


class InvalidState(Conflict):
    code = "invalid_state"


#: The gate a release passes, and the statuses it starts from: none (at upload, or when a
#: funding account is topped up), an approval, or `execute_at` reached.
APPROVAL, SCHEDULE = "approval", "schedule"
_RELEASABLE_FROM = {None: (UPLOADED, AWAITING_FUNDS), APPROVAL: (AWAITING_APPROVAL,), SCHEDULE: (SCHEDULED,)}


@dataclass(frozen=True)
class Shortfall:
    currency: str
    required: int  #: minor units
    available: int  #: minor units


@dataclass(frozen=True)
class Released:
    status: str
    chunk_ids: list[int]
    shortfalls: tuple[Shortfall, ...] = ()


def release(uow, settings: Settings, activity_id: str, actor: Actor, gate: str | None = None, *,
            pending: tuple[int, list[tuple[str, int, int]]] | None = None) -> Released:
    """Reserves the activity's PENDING total and plans its chunks, inside the caller's
    transaction; or, if the account holds less, leaves it AWAITING_FUNDS (an approval is
    refused instead: InsufficientFunds, and the activity still awaits approval). Does
    nothing for an activity released already, being cancelled, or not at `gate`.

    `pending` is `uow.bulk.pending_totals(activity_id, SYSTEM_WALLET_SHARDS)` when the caller
    has just read it in this transaction (the upload), so that the rows are not read twice."""
    activity = uow.bulk.activity(activity_id)
    if activity is None:
        raise NotFound(f"no bulk-credit activity {activity_id}")
    if not _releasable(activity, gate):
        return Released(activity.status, [])
    shards, totals = pending or uow.bulk.pending_totals(activity_id, settings.system_wallet_shards)
    required = _per_currency(totals)
    funding = uow.funding.lock_account(activity.funding_account, sorted(required))
    locked = uow.bulk.lock_activity(activity_id)
    if not _releasable(locked, gate):
        return Released(locked.status, [])
    shortfalls = tuple(Shortfall(c, amount, funding[c].balance) for c, amount in sorted(required.items())
                       if funding[c].balance < amount)
    if shortfalls and gate == APPROVAL:
        raise InsufficientFunds(f"the funding account {activity.funding_account} holds less than the file: "
                                f"{_describe(shortfalls)}; top it up, then approve again")
    if gate == APPROVAL:
        uow.bulk.mark_approved(activity_id, actor.api_key_id)
    if gate is not None:
        settle(uow, activity_id, actor, status=UPLOADED, by=OPERATOR if gate == APPROVAL else SYSTEM,
               reason="approved" if gate == APPROVAL else "execute_at reached")
    if shortfalls:
        uow.bulk.note_release_tried(activity_id)
        if uow.bulk.activity(activity_id).status != AWAITING_FUNDS:
            settle(uow, activity_id, actor, status=AWAITING_FUNDS, by=SYSTEM, reason=_describe(shortfalls))
        return Released(AWAITING_FUNDS, [], shortfalls)
    reservation = uow.funding.lock_reservation(activity_id, [(c, shard) for c, shard, _ in totals])
    for currency, amount in sorted(required.items()):
        account = funding[currency]
        movements = [Movement(account.key, -amount)] + [
            Movement(reservation[(c, shard)].key, part) for c, shard, part in totals if c == currency]
        wallets = {account.key: account, **{wallet.key: wallet for wallet in reservation.values()}}
        entry = JournalEntry(str(uuid.uuid4()), "reservation", currency, amount, activity_id=activity_id,
                             funding_account=activity.funding_account)
        uow.ledger.record(entry, post(wallets, movements))
    uow.bulk.mark_released(activity_id, shards)
    chunk_ids, planned_rows = uow.bulk.plan_chunks(activity_id, settings.chunk_lease_s)
    assert planned_rows == locked.counters.pending, (planned_rows, locked.counters)
    if locked.status == AWAITING_FUNDS:
        settle(uow, activity_id, actor, status=UPLOADED, by=SYSTEM, reason="funds reserved")
    return Released(UPLOADED, chunk_ids)


def _per_currency(totals: list[tuple[str, int, int]]) -> dict[str, int]:
    """{currency: amount} of [(currency, shard, amount)], amounts in minor units."""
    required: dict[str, int] = {}
    for currency, _, amount in totals:
        required[currency] = required.get(currency, 0) + amount
    return required


def _releasable(activity: Activity, gate: str | None) -> bool:
    return (activity.reservation_shards is None and not activity.cancel_requested
            and activity.status in _RELEASABLE_FROM[gate] and activity.counters.pending > 0)


def admit(uow, settings: Settings, activity_id: str, actor: Actor, execute_at: datetime | None) -> list[int]:
    """At upload, in its transaction: holds the file for approval (BULK_CREDIT_APPROVAL) or
    until `execute_at`, or releases it; returns the chunks to send after the commit."""
    activity = uow.bulk.activity(activity_id)
    if activity.status != UPLOADED:
        return []  # a file with no valid row failed at once
    pending = uow.bulk.pending_totals(activity_id, settings.system_wallet_shards)
    if settings.approval_policy.needs_approval(_per_currency(pending[1])):
        settle(uow, activity_id, actor, status=AWAITING_APPROVAL, by=SYSTEM, reason="BULK_CREDIT_APPROVAL")
        return []
    if execute_at is not None and execute_at > datetime.now(timezone.utc):
        settle(uow, activity_id, actor, status=SCHEDULED, by=SYSTEM, reason=f"execute_at {execute_at.isoformat()}")
        return []
    return release(uow, settings, activity_id, actor, pending=pending).chunk_ids


def _describe(shortfalls: tuple[Shortfall, ...]) -> str:
    return "funding short: " + ", ".join(f"{s.currency} {s.required} needed, {s.available} available (minor units)"
                                         for s in shortfalls)


def release_funded(uow_factory: Callable, queue: ChunkQueue, settings: Settings) -> int:
    """The scheduler's sweep: releases the activities whose `execute_at` has come and those
    whose funding account now holds enough; returns how many were released."""
    with uow_factory() as uow:
        waiting = [(activity_id, SCHEDULE) for activity_id in uow.bulk.due_scheduled(AWAITING_PER_SWEEP_MAX)]
        waiting += [(activity_id, None) for activity_id in uow.bulk.awaiting_funds(AWAITING_PER_SWEEP_MAX)]
    released = 0
    for activity_id, gate in waiting:
        def attempt() -> Released:
            uow = uow_factory()
            with uow:
                outcome = release(uow, settings, activity_id, SCHEDULER, gate)
                uow.commit()
            return outcome

        outcome = with_retries(settings.transaction_attempts_max, attempt)
        if outcome.chunk_ids:
            log.info("activity %s: funds reserved, %d chunks sent", activity_id, len(outcome.chunk_ids))
            send_after_commit(queue, outcome.chunk_ids)
            released += 1
    return released


def cancel(uow_factory: Callable, settings: Settings, activity_id: str, actor: Actor, reason: str) -> Activity:
    """Ends every PENDING and FAILED row CANCELLED and gives their reserved money back to the
    funding account; rows already credited stay credited. Two steps: the first marks the
    activity (no chunk starts from then on, nothing is released), the second waits for a
    chunk being applied to finish, then cancels what is left in one transaction.

    Raises NotFound, and InvalidState (409) when nothing is left to cancel.
    """
    def request() -> None:
        uow = uow_factory()
        with uow:
            must_be_live(uow, actor)
            activity = uow.bulk.lock_activity(activity_id)
            if activity is None:
                raise NotFound(f"no bulk-credit activity {activity_id}")
            if activity.status not in CANCELLABLE_STATUSES or not uow.bulk.cancellable_rows(activity_id):
                raise InvalidState(f"activity {activity_id} is {activity.status} with no row left to cancel")
            uow.bulk.request_cancel(activity_id, reason)
            uow.commit()

    def finish() -> Activity:
        uow = uow_factory()
        with uow:
            uow.bulk.serialize_cancels(activity_id)
            uow.bulk.lock_chunks(activity_id)
            activity = uow.bulk.activity(activity_id)
            counts = uow.bulk.cancellable_rows(activity_id)
            if activity.status == CANCELLED or not counts:  # a cancel at the same moment did it
                raise InvalidState(f"activity {activity_id} is {activity.status} with no row left to cancel")
            shards = activity.reservation_shards or 1
            returned = uow.bulk.cancel_rows(activity_id, shards, reason)
            uow.bulk.end_chunks(activity_id)
            if activity.kind == "reversal":  # nothing was reserved; its rows give their credit rows back
                uow.bulk.release_reversal_claims(activity_id)
            elif activity.reservation_shards is not None and returned:
                _give_back(uow, activity, returned)
            ended = settle(uow, activity_id, actor, pending=-counts.get("PENDING", 0),
                           failed=-counts.get("FAILED", 0), cancelled=sum(counts.values()), status=CANCELLED,
                           reason=reason)
            audit.record(uow, actor, "bulk_credit.cancel", "activity", activity_id, reason=reason,
                         cancelled_records=sum(counts.values()))
            uow.commit()
        return ended

    with_retries(settings.transaction_attempts_max, request)
    ended = with_retries(settings.transaction_attempts_max, finish)
    return ended


def _give_back(uow, activity: Activity, returned: list[tuple[str, int, int]]) -> None:
    totals: dict[str, int] = {}
    for currency, _, amount in returned:
        totals[currency] = totals.get(currency, 0) + amount
    funding = uow.funding.lock_account(activity.funding_account, sorted(totals))
    reservation = uow.funding.lock_reservation(activity.id)
    for currency, amount in sorted(totals.items()):
        account = funding[currency]
        movements = [Movement(reservation[(c, shard)].key, -part) for c, shard, part in returned if c == currency]
        movements.append(Movement(account.key, amount))
        wallets = {account.key: account, **{wallet.key: wallet for wallet in reservation.values()}}
        entry = JournalEntry(str(uuid.uuid4()), "reservation_return", currency, amount, activity_id=activity.id,
                             funding_account=activity.funding_account)
        uow.ledger.record(entry, post(wallets, movements))
