"""Previewing a file (a dry run): every check the upload makes, and nothing kept.

The file goes through the same steps as a real upload (parse, COPY, unknown users,
references used before in the funding account, the duplicate-file check) inside one
database transaction that is never committed: leaving it rolls everything back, so no
row, activity, reference or journal entry stays. That is also why a preview of a
1,000,000-row file takes about as long as its upload. It then answers the totals per
currency, the funding verdict (what the account holds now, free to reserve), whether the
file would wait for approval, and the first PREVIEW_ERRORS_MAX refused rows.
"""
from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from typing import BinaryIO, Callable

from pipeline.bulk.content import RowsDigest
from pipeline.bulk.rows import read_rows, text_of
from pipeline.config import Settings
from pipeline.bulk.upload import (READ_BYTES, UNKNOWN_USER_MESSAGE, HashingReader, Tally, checked_funding_account,
                                  checker, start_of)
from pipeline.errors import FieldError, ValidationFailed

#: Refused rows a preview lists; the counts are always complete.
PREVIEW_ERRORS_MAX = 100


@dataclass(frozen=True)
class Total:
    currency: str
    rows: int
    amount: int  #: minor units


@dataclass(frozen=True)
class Funding:
    currency: str
    required: int  #: minor units
    available: int  #: minor units, free to reserve now

    @property
    def sufficient(self) -> bool:
        return self.available >= self.required


@dataclass(frozen=True)
class Preview:
    total_records: int
    valid_records: int
    invalid_records: int
    totals: list[Total]
    funding_account: str
    funding: list[Funding]
    needs_approval: bool
    #: The earlier activity with the same rows, which a real upload would return instead.
    duplicate_of: str | None
    errors: list[tuple[int, str, str]]  #: (row number, error code, message), the first PREVIEW_ERRORS_MAX


def preview(uow_factory: Callable, settings: Settings, source: BinaryIO, *, funding_account: str | None = None,
            allow_duplicate_content: bool = False) -> Preview:
    """Checks the file as an upload would and keeps nothing. Raises what upload raises for a
    file that cannot be read (UnreadableFile, TooLarge) or an unknown funding account."""
    funding_account = checked_funding_account(funding_account)
    reader = HashingReader(source, settings.bulk_credit_max_bytes, start_of(source))
    rows = read_rows(text_of(io.BufferedReader(reader, buffer_size=READ_BYTES)), lambda h: checker(settings, h))
    tally = Tally(settings.bulk_credit_chunk_rows, settings.bulk_credit_max_rows, RowsDigest(rows.columns))
    activity_id = str(uuid.uuid4())
    uow = uow_factory()
    with uow:  # never committed
        if not uow.funding.account_exists(funding_account):
            raise ValidationFailed(f"there is no funding account {funding_account!r}",
                                   [FieldError("funding_account", "no funding account has this name")])
        uow.bulk.add_activity(activity_id, None, None, None, rows.columns, funding_account=funding_account,
                              allow_duplicate_content=True)
        uow.bulk.copy_rows(activity_id, tally.number(rows))
        reader.drain()
        duplicate = None if allow_duplicate_content else uow.bulk.find_by_content(tally.digest.hexdigest())
        invalid = tally.invalid + uow.bulk.invalidate_unknown_users(activity_id, UNKNOWN_USER_MESSAGE)
        if tally.references:
            invalid += uow.bulk.claim_references(activity_id, funding_account, tally.references)
        totals = [Total(*total) for total in uow.bulk.valid_totals(activity_id)]
        held = {row["currency"]: row["balance"] for row in uow.funding.balances(funding_account)}
        errors = uow.bulk.first_errors(activity_id, PREVIEW_ERRORS_MAX)
    funding = [Funding(total.currency, total.amount, held.get(total.currency, 0)) for total in totals]
    needs_approval = settings.approval_policy.needs_approval({total.currency: total.amount for total in totals})
    return Preview(tally.total, tally.total - invalid, invalid, totals, funding_account, funding, needs_approval,
                   duplicate.id if duplicate else None, errors)
