"""The audit trail: who did what to which object, written in the action's own transaction.

Every operator or admin action (an upload, approval, rejection, cancellation, retry,
reversal, hold, freeze, closure, key creation or revocation, webhook change) records one
audit event through `record` inside the unit of work that performs it, so an action that
rolls back leaves no event and an event never lacks its action (issue 10, item 6).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.errors import FieldError, Rejected, ValidationFailed
from pipeline.statements import CURSOR_POSITION_MAX, Page, decode_cursor, page_of
from pipeline.text import storable


@dataclass(frozen=True)
class Actor:
    """Who acted: an API key, the pipeline (a worker or the scheduler), or the command line."""

    type: str  #: 'api_key', 'worker', 'scheduler' or 'command_line'
    api_key_id: int | None = None


WORKER = Actor("worker")
SCHEDULER = Actor("scheduler")
COMMAND_LINE = Actor("command_line")


class KeyNotLive(Rejected):
    """The acting key was revoked or has expired since the request's token was looked up."""

    code = "unauthenticated"
    status = 401


def must_be_live(uow: Any, actor: Actor) -> None:
    """Checks, in the action's own transaction, that an API key actor is still live: a key
    revoked a moment ago may still be trusted by a process's token cache (web/auth.py, up
    to TOKEN_CACHE_S), and an approval must not release money on its word. Raises KeyNotLive."""
    if actor.api_key_id is not None and not uow.api_keys.is_live(actor.api_key_id):
        raise KeyNotLive("this API key has been revoked or has expired")


class AuditTrail(Protocol):
    def add(self, actor: Actor, action: str, object_type: str, object_id: str,
            detail: dict[str, Any]) -> int:
        """Stores one event; returns its id."""

    def page(self, filters: dict[str, Any], before_id: int | None, limit: int) -> list[dict[str, Any]]:
        """Events matching `filters` (parse_filters) with ids below `before_id`, newest first."""


def record(uow: Any, actor: Actor, action: str, object_type: str, object_id: str,
           **detail: Any) -> int:
    """Records one audit event in `uow`'s transaction.

    `action` is dotted snake_case naming the object and the verb (`bulk_credit.approve`,
    `hold.capture`, `api_key.revoke`); `detail` holds JSON-serialisable facts of the action
    (a reason, an amount in minor units). Returns the event's id.
    """
    return uow.audit.add(actor, action, object_type, str(object_id), detail)


#: Actor types `?actor=` may name besides an API key's id.
ACTOR_TYPES = ("worker", "scheduler", "command_line")
#: The longest `action` or `object_id` filter, in characters.
FILTER_LENGTH_MAX = 200


def parse_filters(actor: str | None, action: str | None, object_id: str | None) -> dict[str, Any]:
    """The list's filters: `actor` is an API key's id or one of ACTOR_TYPES. Raises ValidationFailed."""
    errors, filters = [], {"actor_type": None, "api_key_id": None, "action": action, "object_id": object_id}
    if actor is not None:
        if actor.isascii() and actor.isdigit() and len(actor) <= 19 and 1 <= int(actor) <= CURSOR_POSITION_MAX:
            filters["api_key_id"] = int(actor)
        elif actor in ACTOR_TYPES:
            filters["actor_type"] = actor
        else:
            errors.append(FieldError("actor", f"an API key's id, or one of {', '.join(ACTOR_TYPES)}"))
    for name in ("action", "object_id"):
        value = filters[name]
        if value is not None and (not 1 <= len(value) <= FILTER_LENGTH_MAX or not storable(value)):
            errors.append(FieldError(name, f"text of 1 to {FILTER_LENGTH_MAX} characters"))
    if errors:
        raise ValidationFailed("the audit filters are not valid", errors)
    return filters


def events_page(uow: Any, filters: dict[str, Any], limit: int, cursor: str | None) -> Page:
    """Audit events matching `filters` (parse_filters), newest first, a page at a time.
    Raises ValidationFailed for a cursor this API did not make."""
    before_id = decode_cursor(cursor, "e")
    with uow:
        events = uow.audit.page(filters, before_id, limit + 1)
    return page_of(events, limit, "id", "e")
