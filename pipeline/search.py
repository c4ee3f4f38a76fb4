"""Finding users by email or external id, and transactions by reference, activity, user,
kind and time: lists newest first, paged by cursor (../shared/API.md, "Lists")."""
from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from pipeline.errors import FieldError, ValidationFailed
from pipeline.ports import User
from pipeline.statements import decode_cursor, page_of
from pipeline.text import storable

#: The longest text a filter may hold, in characters: the longest email (320).
FILTER_LENGTH_MAX = 320
#: The kinds of journal entry (the CHECK of migration 0014 holds the table to them).
ENTRY_KINDS = ("deposit", "withdrawal", "transfer", "bulk_credit", "funding_top_up", "reservation",
               "reservation_return", "bulk_reversal", "reversal")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _text(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    if not value.strip() or len(value) > FILTER_LENGTH_MAX or not storable(value):
        raise ValidationFailed(f"{field} is not valid", [FieldError(
            field, f"1 to {FILTER_LENGTH_MAX} characters, no NUL")])
    return value  # as sent: an external id or reference is stored as sent, spaces and all


def _uuid(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationFailed(f"{field} is not valid", [FieldError(field, "must be a uuid")])


def users_page(uow, email: str | None, external_id: str | None, limit: int,
               cursor: str | None) -> tuple[list[User], str | None]:
    """Users newest first; `email` matches whatever its case (emails are stored lower-case),
    `external_id` exactly. Raises ValidationFailed."""
    filters = {"email": (_text(email, "email") or "").strip().lower() or None,
               "external_id": _text(external_id, "external_id")}
    before = decode_cursor(cursor, "u")
    with uow:
        found = uow.search.users(filters, before, limit + 1)
    page = page_of([{"seq": seq, "user": user} for seq, user in found], limit, "seq", "u")
    return [item["user"] for item in page.items], page.next_cursor


def entries_page(uow, reference: str | None, activity_id: str | None, user_id: str | None, kind: str | None,
                 created_after: datetime | None, created_before: datetime | None, limit: int,
                 cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Journal entries newest first (by creation time, then id), narrowed by the entry's own `reference` (exactly), the bulk
    activity that wrote it, a user with a posting in it, its `kind`, and created_after <=
    created_at < created_before. Amounts in minor units. Raises ValidationFailed."""
    if kind is not None and kind not in ENTRY_KINDS:
        raise ValidationFailed("kind is not valid", [FieldError("kind", f"one of {', '.join(ENTRY_KINDS)}")])
    if created_after and created_before and created_after >= created_before:
        raise ValidationFailed("the time range is empty", [FieldError("created_before", "must be later than created_after")])
    filters = {"reference": _text(reference, "reference"), "activity_id": _uuid(activity_id, "activity_id"),
               "user_id": _uuid(user_id, "user_id"), "kind": kind, "created_after": created_after,
               "created_before": created_before}
    before = _decode_position(cursor)
    with uow:
        found = uow.search.entries(filters, before, limit + 1)
    more, found = len(found) > limit, found[:limit]
    return found, _encode_position(found[-1]["created_at"], found[-1]["id"]) if more else None


def _encode_position(created_at: datetime, entry_id: str) -> str:
    micros = (created_at - EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"t{micros}:{entry_id}".encode()).decode().rstrip("=")


def _decode_position(cursor: str | None) -> tuple[datetime, str] | None:
    """An entry's (created_at, id) from a cursor `_encode_position` made. Raises ValidationFailed."""
    if cursor is None:
        return None
    try:
        micros, _, entry_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition(":")
        assert micros.startswith("t") and micros[1:].isascii() and micros[1:].isdigit() and len(micros) <= 18
        return EPOCH + timedelta(microseconds=int(micros[1:])), str(uuid.UUID(entry_id))
    except (ValueError, UnicodeDecodeError, AssertionError, OverflowError, OSError):
        raise ValidationFailed("cursor is not valid", [FieldError("cursor", "use next_cursor from a previous page")])
