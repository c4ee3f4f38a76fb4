"""The audit trail: who did what to which object, written in the action's own transaction.

Every operator or admin action (an upload, approval, rejection, cancellation, retry,
reversal, hold, freeze, closure, key creation or revocation, webhook change) records one
audit event through `record` inside the unit of work that performs it, so an action that
rolls back leaves no event and an event never lacks its action (issue 10, item 6).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.errors import Rejected


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


def record(uow: Any, actor: Actor, action: str, object_type: str, object_id: str,
           **detail: Any) -> int:
    """Records one audit event in `uow`'s transaction.

    `action` is dotted snake_case naming the object and the verb (`bulk_credit.approve`,
    `hold.capture`, `api_key.revoke`); `detail` holds JSON-serialisable facts of the action
    (a reason, an amount in minor units). Returns the event's id.
    """
    return uow.audit.add(actor, action, object_type, str(object_id), detail)
