"""Deposits, withdrawals and transfers: each one journal entry in one database transaction.

Money comes from the per-currency system wallet `bank` on a deposit and goes back to it
on a withdrawal; transfer fees go to `fees`. A random shard of the system wallet takes
each movement so that concurrent movements do not all wait for the same row.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime

from pipeline.config import Settings
from pipeline.errors import FieldError, InsufficientFunds, NotFound, SameWallet, UserClosed, ValidationFailed
from pipeline.ledger import Movement, Posting, WalletKey, post
from pipeline.money import Currency, MoneyError, currency, fee_for, parse_amount
from pipeline.ports import JournalEntry, UnitOfWork
from pipeline.text import storable

#: The longest `reference` a movement may carry, in characters.
REFERENCE_LENGTH_MAX = 200


@dataclass(frozen=True)
class MoneyRequest:
    currency: Currency
    amount: int
    reference: str | None
    #: Stored UNIQUE on the journal entry: a second line of defence behind the request's
    #: stored answer, so one key can never move money twice.
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Moved:
    entry: JournalEntry
    created_at: datetime
    postings: list[Posting]

    def balance_after(self, wallet_id: int) -> int:
        return next(p.balance_after for p in reversed(self.postings) if p.wallet_id == wallet_id)


def parse_user_id(value: object, field: str) -> str:
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else _not_uuid(field)
    except ValueError:
        return _not_uuid(field)


def _not_uuid(field: str):
    raise ValidationFailed(f"{field} is not a valid uuid", [FieldError(field, "must be a uuid")])


def parse_money_request(body: dict, settings: Settings, idempotency_key: str | None = None) -> MoneyRequest:
    errors = []
    unit = None
    try:
        unit = currency(body.get("currency"), settings.supported_currencies)
    except MoneyError as error:
        errors.append(FieldError("currency", error.reason))
    amount = 0
    if unit is not None:
        try:
            amount = parse_amount(body.get("amount"), unit)
        except MoneyError as error:
            errors.append(FieldError("amount", error.reason))
    reference = body.get("reference")
    if reference is not None and (not isinstance(reference, str) or not 1 <= len(reference) <= REFERENCE_LENGTH_MAX
                                  or not storable(reference)):
        errors.append(FieldError("reference", f"must be a string of 1 to {REFERENCE_LENGTH_MAX} characters"))
    if errors:
        raise ValidationFailed("the request is not valid", errors)
    return MoneyRequest(unit, amount, reference, idempotency_key)


def system_shard(name: str, code: str, settings: Settings) -> WalletKey:
    """A random shard of the system wallet `name` (bank, fees) in currency `code`."""
    return WalletKey(code, system_name=name, shard=random.randrange(settings.system_wallet_shards))


def _move(uow: UnitOfWork, entry: JournalEntry, users: list[str], movements: list[Movement],
          create: list[WalletKey]) -> Moved:
    """Checks that `users` exist, creates the wallets in `create` on their first credit, then
    locks every wallet the movements touch (in ascending id order) and records the entry.

    Creating before locking keeps one lock order everywhere; a refusal after the creation
    leaves nothing behind, since the caller runs this inside a savepoint.
    """
    missing = set(users) - uow.ledger.known_users_creating_wallets(users, create)
    if missing:
        raise NotFound(f"no user {', '.join(sorted(missing))}")
    keys = list(dict.fromkeys(movement.wallet for movement in movements))
    wallets = uow.ledger.lock_wallets(keys)
    if any(key not in wallets for key in keys):
        # A paying user without a wallet, or a closed user's (none is ever created for one).
        if uow.ledger.closed_users(users):
            raise UserClosed("the user is closed: no money moves for them any more")
        raise InsufficientFunds("the wallet holds no money in this currency")
    postings = post(wallets, movements)
    created_at = uow.ledger.record(entry, postings)
    return Moved(entry, created_at, postings)


def deposit(uow: UnitOfWork, settings: Settings, user_id: str, request: MoneyRequest) -> Moved:
    code = request.currency.code
    user = WalletKey(code, user_id=user_id)
    entry = JournalEntry(str(uuid.uuid4()), "deposit", code, request.amount, to_user_id=user_id,
                         reference=request.reference, idempotency_key=request.idempotency_key)
    bank = system_shard("bank", code, settings)
    movements = [Movement(bank, -request.amount), Movement(user, request.amount)]
    return _move(uow, entry, [user_id], movements, create=[bank, user])


def withdraw(uow: UnitOfWork, settings: Settings, user_id: str, request: MoneyRequest) -> Moved:
    code = request.currency.code
    user = WalletKey(code, user_id=user_id)
    entry = JournalEntry(str(uuid.uuid4()), "withdrawal", code, request.amount, from_user_id=user_id,
                         reference=request.reference, idempotency_key=request.idempotency_key)
    bank = system_shard("bank", code, settings)
    movements = [Movement(user, -request.amount), Movement(bank, request.amount)]
    return _move(uow, entry, [user_id], movements, create=[bank])


def transfer(uow: UnitOfWork, settings: Settings, from_user_id: str, to_user_id: str,
             request: MoneyRequest) -> Moved:
    if from_user_id == to_user_id:
        raise SameWallet("a transfer needs two different users")
    code = request.currency.code
    fee = fee_for(request.amount, settings.transfer_fee_bps)
    entry = JournalEntry(str(uuid.uuid4()), "transfer", code, request.amount, fee, from_user_id, to_user_id,
                         request.reference, request.idempotency_key)
    sender, receiver = WalletKey(code, user_id=from_user_id), WalletKey(code, user_id=to_user_id)
    movements = [Movement(sender, -(request.amount + fee)), Movement(receiver, request.amount)]
    create = [receiver]
    if fee:
        fees = system_shard("fees", code, settings)
        movements.append(Movement(fees, fee))
        create.append(fees)
    return _move(uow, entry, [from_user_id, to_user_id], movements, create)
