"""Seeding users for a bulk credit, as the seed's `users:seed-and-export` does, but with COPY.

Users are created in one database transaction and their CSV (`uuid,amount`) is written
beside it; the file takes its final name only once the users are committed, so a CSV
never names users that do not exist. The same transaction tops the `default` funding
account up by the file's total, so that the seed's flow (seed, export, upload) pays out
as it is.
"""
from __future__ import annotations

import os
import uuid
from typing import Callable, TextIO

from pipeline import funding
from pipeline.errors import FieldError, ValidationFailed
from pipeline.money import MoneyError, currency, parse_amount
from pipeline.wallets import MoneyRequest

#: Users written per COPY batch (and per progress-bar step).
SEED_BATCH_USERS = 10_000
#: The most users one command creates.
SEED_USERS_MAX = 10_000_000


def seed_and_export(uow, settings, total: int, amount: str, currency_code: str, out_path: str,
                    progress: Callable[[int], None] = lambda n: None) -> int:
    """Creates `total` users, writes `out_path` and tops `default` up by the file's total;
    returns how many users were created. Raises ValidationFailed for a bad total or amount."""
    if not 1 <= total <= SEED_USERS_MAX:
        raise ValidationFailed("total is out of range", [FieldError("total", f"from 1 to {SEED_USERS_MAX}")])
    try:
        unit = currency(currency_code, settings.supported_currencies)
        amount_minor = parse_amount(amount, unit)
    except MoneyError as error:
        raise ValidationFailed("amount or currency is not valid", [FieldError("amount", error.reason)])
    with_currency = currency_code != settings.default_currency
    partial = out_path + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    try:
        with open(partial, "w", encoding="utf-8", newline="") as out, uow:
            out.write("uuid,amount,currency\n" if with_currency else "uuid,amount\n")
            uow.bulk.copy_users(_users(total, amount, currency_code if with_currency else None, out, progress))
            funding.top_up(uow, settings, funding.DEFAULT_ACCOUNT, MoneyRequest(
                unit, total * amount_minor, f"users seed-and-export: {total} x {amount} {unit.code}"))
            uow.commit()
        os.replace(partial, out_path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return total


def _users(total: int, amount: str, currency_code: str | None, out: TextIO, progress: Callable[[int], None]):
    suffix = f",{amount},{currency_code}\n" if currency_code else f",{amount}\n"
    for start in range(0, total, SEED_BATCH_USERS):
        batch = min(SEED_BATCH_USERS, total - start)
        lines = []
        for number in range(start + 1, start + batch + 1):
            user_id = str(uuid.uuid4())
            lines.append(user_id + suffix)
            yield user_id, f"Seed user {number}", f"seed-{user_id}@example.test"
        out.write("".join(lines))
        progress(batch)
