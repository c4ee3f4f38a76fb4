"""Checking a transfer before it is sent: what a user's own page asks while they type.

`check_transfer` answers what `POST /api/v1/wallet/transfer` would refuse, field by field,
and the fee it would charge (`pipeline.money.fee_for`, as `pipeline.wallets.transfer`
computes it), without moving money or taking a lock. It is advice: the balance it compares
with may change before the transfer is sent, and the transfer checks everything again under
its row locks.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import Settings
from pipeline.errors import FieldError, InsufficientFunds, ValidationFailed
from pipeline.money import Currency, fee_for, format_amount
from pipeline.ports import UnitOfWork
from pipeline.wallets import parse_money_request, parse_user_id


@dataclass(frozen=True)
class CheckedTransfer:
    """A transfer that would pass its checks now; amounts in minor units of `currency`."""

    to_user_id: str
    currency: Currency
    amount: int
    fee: int
    #: The sender's balance less what holds keep, in that currency.
    available: int

    @property
    def total(self) -> int:
        """What leaves the sender's wallet: the amount and, on top, the fee."""
        return self.amount + self.fee


def check_transfer(uow: UnitOfWork, settings: Settings, from_user_id: str, body: dict) -> CheckedTransfer:
    """Checks `body` ({to_user_id, amount, currency, reference?}, as the API's transfer takes it)
    for a transfer from `from_user_id`.

    Raises ValidationFailed naming every field at fault (`to_user_id`: not a uuid, the sender
    itself, no such user, a closed user; `amount`, `currency`, `reference`: as the API parses
    them; `currency` also when the sender's wallet in it is frozen; `amount` also when it and
    its fee exceed what is available, alongside other faults), or InsufficientFunds naming
    `amount` when that is the only fault, as the transfer would.
    """
    errors: list[FieldError] = []
    to_user_id = request = None
    try:
        to_user_id = parse_user_id(body.get("to_user_id"), "to_user_id")
    except ValidationFailed as refusal:
        errors.extend(refusal.errors)
    try:
        request = parse_money_request(body, settings)
    except ValidationFailed as refusal:
        errors.extend(refusal.errors)
    with uow:
        if to_user_id == from_user_id:
            errors.append(FieldError("to_user_id", "is your own id: send to another user"))
        elif to_user_id is not None:
            recipient = uow.users.get(to_user_id)
            if recipient is None:
                errors.append(FieldError("to_user_id", "no user has this id"))
            elif recipient.closed_at is not None:
                errors.append(FieldError("to_user_id", "this user is closed and takes no money"))
        if request is None:
            raise ValidationFailed("the transfer is not valid", errors)
        code = request.currency.code
        balance, held = uow.ledger.balance_and_held(from_user_id, code)
        if any(wallet["currency"] == code and wallet["status"] == "frozen"
               for wallet in uow.ledger.wallets_of(from_user_id)):
            errors.append(FieldError("currency", f"your {code} wallet is frozen: no money moves in or out of it"))
    fee = fee_for(request.amount, settings.transfer_fee_bps)
    checked = CheckedTransfer(to_user_id or "", request.currency, request.amount, fee, balance - held)
    if checked.total > checked.available:
        shown = lambda minor: f"{format_amount(minor, request.currency)} {request.currency.code}"  # noqa: E731
        short = FieldError("amount", f"with its fee of {shown(fee)} this is {shown(checked.total)}, more than the"
                                     f" {shown(checked.available)} you have available")
        if not errors:
            raise InsufficientFunds("not enough money for this transfer and its fee", [short])
        errors.append(short)
    if errors:
        raise ValidationFailed("the transfer is not valid", errors)
    return checked
