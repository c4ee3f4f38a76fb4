"""Reading wallets, balances, history and transactions."""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from pipeline.errors import FieldError, NotFound, ValidationFailed
from pipeline.ports import UnitOfWork

#: Page sizes of every list, as the API documents them.
PAGE_ROWS_DEFAULT = 20
PAGE_ROWS_MAX = 100
#: Postings of one journal entry per answer of GET /api/v1/transactions/{id}; a bulk chunk's
#: entry has one per credited row and pages them (API.md).
POSTINGS_PAGE_ROWS_MAX = 1_000
#: The largest position a cursor may carry: PostgreSQL's bigint.
CURSOR_POSITION_MAX = 2**63 - 1


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return PAGE_ROWS_DEFAULT
    # isascii(): str.isdigit() also accepts digits such as "²" that int() refuses; the length
    # keeps int() from parsing (or refusing) thousands of digits.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= PAGE_ROWS_MAX:
        raise ValidationFailed("limit is out of range", [FieldError("limit", f"must be an integer from 1 to {PAGE_ROWS_MAX}")])
    return int(raw)


def encode_cursor(position: int, tag: str = "p") -> str:
    """An opaque cursor: a position in the list that `tag` (one letter) names, so that a cursor
    of one list is refused by another instead of paging it from a meaningless position."""
    return base64.urlsafe_b64encode(f"{tag}{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, tag: str = "p") -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    digits = text[1:]
    # A position is a bigint id: anything else (a sign, "²", 2**63) is a forged cursor that
    # would otherwise reach PostgreSQL and fail there as a 500.
    if not (text.startswith(tag) and digits.isascii() and digits.isdigit() and len(digits) <= 19
            and int(digits) <= CURSOR_POSITION_MAX):
        raise ValidationFailed("cursor is not valid", [FieldError("cursor", "use next_cursor from a previous page")])
    return int(digits)


def page_of(rows: list[dict[str, Any]], limit: int, position_key: str, tag: str = "p") -> Page:
    """Rows were read with limit + 1: the extra row says whether another page exists."""
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1][position_key], tag) if more else None)


def _user_must_exist(uow: UnitOfWork, user_id: str) -> None:
    if uow.users.get(user_id) is None:
        raise NotFound(f"no user {user_id}")


def wallets_of(uow: UnitOfWork, user_id: str) -> list[dict[str, Any]]:
    with uow:
        _user_must_exist(uow, user_id)
        return uow.ledger.wallets_of(user_id)


def balance_and_held_of(uow: UnitOfWork, user_id: str, currency: str) -> tuple[int, int]:
    """(balance, held) in minor units; available is their difference. Raises NotFound."""
    with uow:
        _user_must_exist(uow, user_id)
        return uow.ledger.balance_and_held(user_id, currency)


def history(uow: UnitOfWork, user_id: str, currency: str | None, limit: int, cursor: str | None) -> Page:
    before_id = decode_cursor(cursor)
    with uow:
        _user_must_exist(uow, user_id)
        rows = uow.ledger.history(user_id, currency, limit + 1, before_id)
    return page_of(rows, limit, "posting_id")


@dataclass(frozen=True)
class EntryView:
    """A journal entry as one reader may see it, with one page of the postings it may see.

    `postings_total` counts every posting the reader may see, on every page; `postings_amount`
    is their signed sum in minor units (zero for an operator's full view of any entry).
    """

    entry: dict[str, Any]
    postings: list[dict[str, Any]]
    postings_total: int
    postings_amount: int
    postings_next_cursor: str | None


def transaction(uow: UnitOfWork, entry_id: str, viewer_user_id: str | None = None,
                postings_cursor: str | None = None) -> EntryView:
    """The entry and the page of its postings after `postings_cursor`, POSTINGS_PAGE_ROWS_MAX at most.

    `viewer_user_id` is the user of a `user:` key (None for operators and admins): such a reader
    sees only the postings on its own wallets, and an entry it has no posting in does not exist
    for it (NotFound, like an unknown id, so that the answer does not reveal that it exists).
    Raises ValidationFailed for a cursor this API did not make.
    """
    try:
        after_id = decode_cursor(postings_cursor, "t")
    except ValidationFailed:
        raise ValidationFailed("postings_cursor is not valid",
                               [FieldError("postings_cursor", "use postings_next_cursor from a previous answer")])
    with uow:
        entry = uow.ledger.entry(entry_id)
        if entry is not None:
            total, amount, rows = uow.ledger.entry_postings(entry_id, viewer_user_id, after_id,
                                                            POSTINGS_PAGE_ROWS_MAX + 1)
    if entry is None or (viewer_user_id is not None and total == 0):
        raise NotFound(f"no transaction {entry_id}")
    page = page_of(rows, POSTINGS_PAGE_ROWS_MAX, "id", "t")
    return EntryView(entry, page.items, total, amount, page.next_cursor)
