"""An account's life: a wallet frozen and unfrozen, a user closed (issue 10, item 4).

A frozen wallet takes no money in or out (422 `wallet_frozen`); its holds may still be
voided or expire. A closed user keeps their history and moves no money again (422
`user_closed`); only a user with nothing left in any wallet, held money included, can be
closed (409 `balance_not_zero`). A closed user is never reopened.

Lock order of a close: the user's row FOR UPDATE, then the user's wallets in ascending id
order. A movement that creates a wallet holds the user's row FOR KEY SHARE (the foreign key,
and migration 0015's trigger), so a close waits for it and then sees its money; a movement
that comes after the close finds the wallets `closed` once it has locked them, and a wallet
is never created for a closed user (the statements creating wallets leave closed users out,
and a trigger refuses one that raced a close). Either way no money is left in a closed
user's wallet.
"""
from __future__ import annotations

from typing import Any

from pipeline import audit
from pipeline.audit import Actor
from pipeline.errors import BalanceNotZero, FieldError, InvalidState, NotFound, UserClosed, ValidationFailed
from pipeline.ledger import ACTIVE, FROZEN
from pipeline.text import storable

#: The longest reason kept with a freeze or an unfreeze, in characters.
REASON_LENGTH_MAX = 500


def parse_reason(body: dict) -> str:
    reason = body.get("reason")
    if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= REASON_LENGTH_MAX or not storable(reason):
        raise ValidationFailed("reason is not valid", [FieldError(
            "reason", f"must be a string of 1 to {REASON_LENGTH_MAX} characters")])
    return reason.strip()


def _open_user(uow, user_id: str) -> None:
    found = uow.lifecycle.lock_user(user_id)
    if found is None:
        raise NotFound(f"no user {user_id}")
    if found["closed_at"] is not None:
        raise UserClosed("the user is closed")


def set_frozen(uow, user_id: str, currency: str, frozen: bool, reason: str, actor: Actor) -> dict[str, Any]:
    """Freezes (or unfreezes) the user's wallet in `currency`; returns the wallet row
    `{currency, balance, held, status, updated_at}`.

    Raises NotFound (no user, or no wallet in that currency yet), UserClosed, or InvalidState
    when the wallet is frozen already (or not frozen, to unfreeze).
    """
    _open_user(uow, user_id)
    wallet = uow.lifecycle.lock_wallet(user_id, currency)
    if wallet is None:
        raise NotFound(f"the user has no {currency} wallet: it is created on its first credit")
    before, after = (ACTIVE, FROZEN) if frozen else (FROZEN, ACTIVE)
    if wallet["status"] != before:
        raise InvalidState(f"the wallet is {wallet['status']}, not {before}")
    updated = uow.lifecycle.set_wallet_status(wallet["id"], after, reason)
    audit.record(uow, actor, "wallet.freeze" if frozen else "wallet.unfreeze", "wallet", wallet["id"],
                 user_id=user_id, currency=currency, reason=reason)
    return updated


def close_user(uow, user_id: str, actor: Actor) -> None:
    """Closes the user (soft delete: `closed_at` set, every wallet `closed`, history kept).

    Raises NotFound, InvalidState (closed already), or BalanceNotZero when any wallet holds
    money or held money.
    """
    found = uow.lifecycle.lock_user(user_id)
    if found is None:
        raise NotFound(f"no user {user_id}")
    if found["closed_at"] is not None:
        raise InvalidState("the user is closed already")
    wallets = uow.lifecycle.lock_user_wallets(user_id)
    left = [wallet for wallet in wallets if wallet["balance"] != 0 or wallet["held"] != 0]
    if left:
        names = ", ".join(wallet["currency"] for wallet in left)
        raise BalanceNotZero(f"the user still has money in these wallets: {names}; move it out first")
    uow.lifecycle.close(user_id)
    audit.record(uow, actor, "user.close", "user", user_id, wallets=len(wallets))
