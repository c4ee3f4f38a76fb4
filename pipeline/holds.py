"""Holds: money reserved out of a user wallet's available balance, then captured or let go.

    held --capture--> captured   (the captured amount moves in one journal entry, the rest is released)
    held --void-----> voided     (everything is released)
    held --expiry---> expired    (the scheduler, once `expires_at` has passed)

A hold is not a ledger posting: the wallet's `held` grows by the amount and its balance
stays; `available = balance - held` is what debits may take (pipeline/ledger.py, and a CHECK
in migration 0015). Only a capture writes to the ledger.

Every transition is one database transaction that locks the hold's row first and then the
wallets it touches in ascending id order (pipeline/wallets.py), so a capture, a void and the
expiry sweep racing for one hold take turns, and the second finds the hold decided:
409 `invalid_state`. The database holds the same line: a decided hold's row cannot change,
and a capture's journal entry carries the key `hold_capture:<id>`, which is UNIQUE.
"""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from pipeline import audit, webhooks
from pipeline.audit import Actor
from pipeline.config import Settings
from pipeline.errors import (FieldError, InsufficientFunds, InvalidState, NotFound, SameWallet, UserClosed,
                             ValidationFailed)
from pipeline.ledger import Movement, WalletKey, check_active, post
from pipeline.money import MINOR_UNITS, Currency, MoneyError, format_amount, parse_amount
from pipeline.ports import JournalEntry
from pipeline.wallets import Moved, MoneyRequest, parse_money_request, parse_user_id, system_shard

HELD, CAPTURED, VOIDED, EXPIRED = "held", "captured", "voided", "expired"
STATUSES = (HELD, CAPTURED, VOIDED, EXPIRED)
#: The one table of a hold's transitions: every other place asks it.
TRANSITIONS = {(HELD, CAPTURED), (HELD, VOIDED), (HELD, EXPIRED)}
#: Holds one expiry transaction decides, and transactions one sweep runs at most.
EXPIRY_BATCH_MAX = 500
EXPIRY_BATCHES_PER_SWEEP_MAX = 20


@dataclass(frozen=True)
class Hold:
    id: str
    wallet_id: int
    user_id: str
    currency: str
    amount: int  #: minor units
    status: str
    reference: str | None
    expires_at: datetime
    created_at: datetime
    decided_at: datetime | None = None
    captured_amount: int | None = None
    to_user_id: str | None = None
    journal_entry_id: str | None = None


@dataclass(frozen=True)
class HoldRequest:
    user_id: str
    money: MoneyRequest
    expires_in_s: int


@dataclass(frozen=True)
class Captured:
    hold: Hold
    moved: Moved


def check_transition(hold: Hold, status: str) -> None:
    """Raises InvalidState unless `hold` may go to `status`."""
    if (hold.status, status) not in TRANSITIONS:
        raise InvalidState(f"the hold is {hold.status}: it was decided already")


def parse_hold_request(body: dict, settings: Settings, idempotency_key: str) -> HoldRequest:
    """`{user_id, amount, currency, expires_in_s?, reference?}`; raises ValidationFailed."""
    user_id = parse_user_id(body.get("user_id"), "user_id")
    money = parse_money_request(body, settings, idempotency_key)
    expires_in_s = body.get("expires_in_s", settings.hold_expiry_default_s)
    if isinstance(expires_in_s, bool) or not isinstance(expires_in_s, int) \
            or not 1 <= expires_in_s <= settings.hold_expiry_max_s:
        raise ValidationFailed("expires_in_s is not valid", [FieldError(
            "expires_in_s", f"must be an integer number of seconds from 1 to {settings.hold_expiry_max_s}")])
    return HoldRequest(user_id, money, expires_in_s)


def parse_capture_request(body: dict) -> tuple[object, str | None]:
    """`{amount?, to_user_id?}`: the amount is parsed against the hold's currency once it is read."""
    to_user_id = body.get("to_user_id")
    return body.get("amount"), None if to_user_id is None else parse_user_id(to_user_id, "to_user_id")


def place(uow, request: HoldRequest, actor: Actor) -> Hold:
    """Reserves `request.money.amount` of the user's wallet in its currency; returns the hold.

    Raises NotFound (no such user), UserClosed, WalletFrozen, or InsufficientFunds when the
    wallet's available balance is smaller than the amount.
    """
    money = request.money
    key = WalletKey(money.currency.code, user_id=request.user_id)
    if not uow.ledger.known_users_creating_wallets([request.user_id], []):
        raise NotFound(f"no user {request.user_id}")
    wallet = uow.ledger.lock_wallets([key]).get(key)
    if wallet is None:
        if uow.ledger.closed_users([request.user_id]):
            raise UserClosed("the user is closed: no money moves for them any more")
        raise InsufficientFunds("the wallet holds no money in this currency")
    check_active(wallet)
    if wallet.available < money.amount:
        raise InsufficientFunds("the wallet's available balance (balance less held money) is too small")
    hold = uow.holds.add(str(uuid.uuid4()), wallet.id, request.user_id, money.currency.code, money.amount,
                         money.reference, money.idempotency_key, request.expires_in_s)
    audit.record(uow, actor, "hold.create", "hold", hold.id, user_id=hold.user_id, currency=hold.currency,
                 amount=hold.amount, expires_at=hold.expires_at)
    return hold


def _locked(uow, hold_id: str, status: str) -> Hold:
    found = uow.holds.lock(hold_id)
    if found is None:
        raise NotFound(f"no hold {hold_id}")
    hold, due = found
    check_transition(hold, status)
    if due and status == CAPTURED:
        raise InvalidState("the hold has expired: it can no longer be captured, and the scheduler voids it")
    return hold


def _capture_amount(text: object, hold: Hold) -> int:
    if text is None:
        return hold.amount
    try:
        amount = parse_amount(text, Currency(hold.currency, MINOR_UNITS[hold.currency]))
    except MoneyError as error:
        raise ValidationFailed("amount is not valid", [FieldError("amount", error.reason)])
    if amount > hold.amount:
        raise ValidationFailed("amount is more than the hold", [FieldError("amount", "at most the held amount")])
    return amount


def capture(uow, settings: Settings, hold_id: str, amount_text: object, to_user_id: str | None,
            actor: Actor) -> Captured:
    """Moves the captured amount (default: all) from the holder to `to_user_id`, or to `bank` as
    a withdrawal, in one journal entry, and releases the whole hold in the same transaction.

    Raises NotFound (hold or receiver), InvalidState (decided or expired), ValidationFailed
    (amount), SameWallet, WalletFrozen or UserClosed (either side).
    """
    hold = _locked(uow, hold_id, CAPTURED)
    amount = _capture_amount(amount_text, hold)
    if to_user_id == hold.user_id:
        raise SameWallet("a capture to another user needs a user other than the holder")
    payer = WalletKey(hold.currency, user_id=hold.user_id)
    payee = WalletKey(hold.currency, user_id=to_user_id) if to_user_id else system_shard("bank", hold.currency,
                                                                                          settings)
    users = [hold.user_id] + ([to_user_id] if to_user_id else [])
    missing = set(users) - uow.ledger.known_users_creating_wallets(users, [payee])
    if missing:
        raise NotFound(f"no user {', '.join(sorted(missing))}")
    wallets = uow.ledger.lock_wallets([payer, payee])
    if payee not in wallets:  # none is created for a closed user
        raise UserClosed("the receiving user is closed: no money moves for them any more")
    # The hold is released before the money leaves: what it reserved is what the capture spends.
    wallets[payer] = dataclasses.replace(wallets[payer], held=wallets[payer].held - hold.amount)
    kind = "transfer" if to_user_id else "withdrawal"
    entry = JournalEntry(str(uuid.uuid4()), kind, hold.currency, amount, 0, hold.user_id, to_user_id,
                         hold.reference, f"hold_capture:{hold.id}")
    postings = post(wallets, [Movement(payer, -amount), Movement(payee, amount)])
    uow.holds.release(hold.wallet_id, hold.amount)
    created_at = uow.ledger.record(entry, postings)
    decided = uow.holds.decide(hold.id, CAPTURED, amount, to_user_id, entry.id)
    audit.record(uow, actor, "hold.capture", "hold", hold.id, amount=amount, released=hold.amount - amount,
                 to_user_id=to_user_id, journal_entry_id=entry.id)
    return Captured(decided, Moved(entry, created_at, postings))


def void(uow, hold_id: str, actor: Actor) -> Hold:
    """Releases the whole hold. Raises NotFound, or InvalidState when it was decided already.

    A frozen wallet's or a closed user's hold may be voided: no money moves.
    """
    hold = _locked(uow, hold_id, VOIDED)
    uow.ledger.lock_wallets([WalletKey(hold.currency, user_id=hold.user_id)])
    uow.holds.release(hold.wallet_id, hold.amount)
    decided = uow.holds.decide(hold.id, VOIDED)
    audit.record(uow, actor, "hold.void", "hold", hold.id, amount=hold.amount)
    return decided


def get(uow, hold_id: str) -> Hold:
    with uow:
        hold = uow.holds.get(hold_id)
    if hold is None:
        raise NotFound(f"no hold {hold_id}")
    return hold


def expire_due(uow_factory: Callable, now: datetime | None = None) -> int:
    """Expires every hold whose `expires_at` is at or before `now` (default: the database's
    clock), EXPIRY_BATCH_MAX per transaction, at most EXPIRY_BATCHES_PER_SWEEP_MAX
    transactions; returns how many. Holds locked by a capture or a void are skipped: they are
    being decided, and the next sweep finds them if that fails."""
    expired = 0
    for _ in range(EXPIRY_BATCHES_PER_SWEEP_MAX):
        uow = uow_factory()
        with uow:
            holds = uow.holds.expire_due(now, EXPIRY_BATCH_MAX)
            for hold in holds:
                audit.record(uow, audit.SCHEDULER, "hold.expire", "hold", hold.id, amount=hold.amount,
                             expires_at=hold.expires_at)
                webhooks.emit(uow, "hold.expired", hold.id, {
                    "hold_id": hold.id, "user_id": hold.user_id, "currency": hold.currency,
                    "amount": format_amount(hold.amount, Currency(hold.currency, MINOR_UNITS[hold.currency])),
                    "expires_at": hold.expires_at.isoformat()})
            uow.commit()
        expired += len(holds)
        if len(holds) < EXPIRY_BATCH_MAX:
            break
    return expired
