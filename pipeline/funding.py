"""Funding accounts: named budgets that hold real money, one balance per currency, which
bulk credits draw from and which never go below zero (../shared/API.md, "Funding").

An admin tops an account up from `bank`, one journal entry per top-up. A bulk-credit
activity, once released, reserves its whole valid total from its account at once
(pipeline/bulk/release.py): `reserved` is what the account's activities still hold
for rows not yet paid, and `balance` what is left to reserve.
"""
from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from datetime import timezone

from pipeline import action_log
from pipeline.errors import FieldError, NotFound, ValidationFailed
from pipeline.ledger import Movement, WalletKey, post
from pipeline.money import MINOR_UNITS, Currency, format_amount
from pipeline.ports import JournalEntry
from pipeline.statements import Page
from pipeline.wallets import MoneyRequest, Moved, system_shard

#: Names as the URL carries them: lower-case letters, digits, '-', '_', '.'; 1 to 63 characters.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
DEFAULT_ACCOUNT = "default"


@dataclass(frozen=True)
class Balance:
    currency: str
    balance: int  #: minor units, free to reserve
    reserved: int  #: minor units, held by released activities for rows not yet paid


def parse_account_name(value: object, field: str = "funding_account") -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ValidationFailed(f"{field} is not a valid funding account name", [FieldError(
            field, "1 to 63 characters: lower-case letters, digits, '-', '_' and '.', starting with a letter or digit")])
    return value


def top_up(uow, settings, name: str, request: MoneyRequest) -> Moved:
    """Moves `request.amount` minor units from `bank` into the account, creating the
    account on its first top-up. Raises AmountOutOfRange past the bigint balance."""
    code = request.currency.code
    uow.funding.ensure_account(name)
    bank = system_shard("bank", code, settings)
    entry = JournalEntry(str(uuid.uuid4()), "funding_top_up", code, request.amount, reference=request.reference,
                         idempotency_key=request.idempotency_key, funding_account=name)
    wallets = uow.ledger.lock_wallets([bank], create=[bank])  # bank before funding, everywhere
    wallets.update({wallet.key: wallet for wallet in uow.funding.lock_account(name, [code]).values()})
    account = WalletKey(code, system_name="funding", owner=name)
    postings = post(wallets, [Movement(bank, -request.amount), Movement(account, request.amount)])
    return Moved(entry, uow.ledger.record(entry, postings), postings)


def receipt_amount(minor: int, code: str) -> str:
    """Minor units as the API writes amounts: decimal text in the currency's units."""
    return format_amount(minor, Currency(code, MINOR_UNITS[code]))


def describe(name: str, balances: list[Balance]) -> dict:
    """An account as the API answers it: {name, balances: [{currency, balance, reserved}]}."""
    return {"name": name, "balances": [{"currency": b.currency, "balance": receipt_amount(b.balance, b.currency),
                                        "reserved": receipt_amount(b.reserved, b.currency)} for b in balances]}


def receipt(moved: Moved) -> dict:
    """A top-up as the API answers it (and stores it for a replay): {id, kind, funding_account,
    amount, currency, balance_after, reference, created_at}, amounts as decimal text."""
    entry = moved.entry
    return {"id": entry.id, "kind": entry.kind, "funding_account": entry.funding_account,
            "amount": receipt_amount(entry.amount, entry.currency), "currency": entry.currency,
            "balance_after": receipt_amount(moved.postings[-1].balance_after, entry.currency),
            "reference": entry.reference,
            "created_at": moved.created_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")}


def log_top_up(actor, moved: Moved) -> None:
    """The operator action's log line (pipeline/action_log.py), once the top-up has committed."""
    entry = moved.entry
    action_log.logged("funding.top_up", actor, f"{entry.amount} minor units of {entry.currency} into {entry.funding_account}",
                      funding_account=entry.funding_account, journal_entry_id=entry.id, currency=entry.currency,
                      amount_minor=entry.amount)


def account(uow, name: str) -> list[Balance]:
    """The account's balances by currency. Raises NotFound for an unknown account."""
    with uow:
        if not uow.funding.account_exists(name):
            raise NotFound(f"no funding account {name}")
        return [Balance(row["currency"], row["balance"], row["reserved"]) for row in uow.funding.balances(name)]


def accounts_page(uow, limit: int, cursor: str | None) -> Page:
    """Account names in order, a page at a time; each item {"name": ...}."""
    after = _decode(cursor)
    with uow:
        names = uow.funding.accounts(after, limit + 1)
    more = len(names) > limit
    names = names[:limit]
    return Page([{"name": name} for name in names], _encode(names[-1]) if more else None)


def _encode(name: str) -> str:
    return base64.urlsafe_b64encode(f"n{name}".encode()).decode().rstrip("=")


def _decode(cursor: str | None) -> str:
    if cursor is None:
        return ""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if not (text.startswith("n") and NAME_PATTERN.fullmatch(text[1:])):
        raise ValidationFailed("cursor is not valid", [FieldError("cursor", "use next_cursor from a previous page")])
    return text[1:]
