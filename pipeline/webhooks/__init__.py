"""Signed webhooks (../shared/API.md, "Webhooks and audit"): events, subscriptions, deliveries.

Design:
- **An outbox in the change's transaction.** `emit` (or, for activities, a trigger on their
  status history: storage migration 0016) writes the event and one delivery per subscription
  to its type inside the transaction that made the change; a rolled-back change has no event.
- **At least once, in order per object.** The scheduler's dispatcher sends each due delivery's
  id to the `webhooks` queue; a worker attempts it (pipeline/webhooks/delivery.py) and records
  the attempt. A delivery waits while an older one of the same subscription and
  `ordering_key` (the activity, for activity events) is still PENDING, so a subscriber sees an
  activity's events in the order they happened, retries included.
- **Signed** to the Standard Webhooks specification with the `standardwebhooks` package:
  headers `webhook-id` (the event id: the same on every attempt and replay, so receivers can
  drop duplicates), `webhook-timestamp` and `webhook-signature`.
- **Retried** with pauses that double from WEBHOOK_RETRY_BASE_DELAY_S up to
  WEBHOOK_RETRY_DELAY_MAX_S, WEBHOOK_ATTEMPTS_MAX attempts in all (about a day by default),
  then FAILED; any delivery can be replayed.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pipeline.errors import Conflict, Rejected

#: The event types a subscription may ask for (API.md).
EVENT_TYPES = (
    "activity.awaiting_approval", "activity.completed", "activity.partially_completed", "activity.failed",
    "activity.rejected", "activity.cancelled", "activity.awaiting_funds", "reversal.completed", "hold.expired",
    "reconciliation.mismatch",
    # Not in API.md's list: an activity that waited for funds had its total reserved (migration 0027).
    "activity.released",
)

#: Delivery states, and who moves a delivery between them: the one table every change is checked against.
PENDING, SUCCEEDED, FAILED, CANCELLED = "PENDING", "SUCCEEDED", "FAILED", "CANCELLED"
DELIVERY_STATES = (PENDING, SUCCEEDED, FAILED, CANCELLED)
DELIVERY_TRANSITIONS = {
    (PENDING, SUCCEEDED): "a 2xx answer",
    (PENDING, PENDING): "a failed attempt with attempts left (or a replay, which makes it due now)",
    (PENDING, FAILED): "the last attempt WEBHOOK_ATTEMPTS_MAX allows failed",
    (PENDING, CANCELLED): "its subscription was deleted",
    (SUCCEEDED, PENDING): "a replay",
    (FAILED, PENDING): "a replay",
}
REPLAYABLE_STATES = tuple(before for before, after in DELIVERY_TRANSITIONS if after == PENDING)


class UrlNotAllowed(Rejected):
    """Not http or https, or an address that is loopback, private or otherwise not public."""

    code = "url_not_allowed"


class InvalidDeliveryState(Conflict):
    code = "invalid_state"


def check_transition(before: str, after: str) -> None:
    """Raises InvalidDeliveryState (409) for a change DELIVERY_TRANSITIONS does not allow."""
    if (before, after) not in DELIVERY_TRANSITIONS:
        raise InvalidDeliveryState(f"a {before} delivery cannot become {after}")


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    events: tuple[str, ...]
    description: str | None
    created_at: datetime


@dataclass(frozen=True)
class Delivery:
    id: int
    subscription_id: str
    event_id: int
    type: str
    status: str
    attempts: int
    failures: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class Work:
    """What one attempt needs: where to, with which secret, and the event."""

    delivery_id: int
    dispatch: int
    url: str
    secret: str
    event_id: int
    type: str
    payload: dict[str, Any]
    occurred_at: datetime
    failures: int


class Webhooks(Protocol):
    """What the use cases need from storage (`uow.webhooks`)."""

    def emit(self, event_type: str, object_id: str, ordering_key: str, payload: dict[str, Any]) -> int: ...
    def add_subscription(self, subscription: Subscription, secret: str, created_by: int | None) -> None: ...
    def subscriptions(self, limit: int, offset: int = 0) -> list[Subscription]: ...
    def count_subscriptions(self) -> int: ...
    def subscription(self, subscription_id: str) -> Subscription | None: ...
    def delete_subscription(self, subscription_id: str) -> int | None:
        """Marks it deleted and cancels its PENDING deliveries; how many, or None if not found."""
    def deliveries(self, subscription_id: str, before_id: int | None, limit: int) -> list[Delivery]: ...
    def lock_delivery(self, subscription_id: str, delivery_id: int) -> Delivery | None: ...
    def replay(self, delivery_id: int) -> None: ...
    def take_due(self, limit: int, lease_s: float) -> list[tuple[int, int]]:
        """Leases the due deliveries that head their lane; (delivery id, dispatch) pairs."""
    def claim(self, delivery_id: int, dispatch: int, lease_s: float) -> Work | None: ...
    def record_attempt(self, work: Work, status: str, status_code: int | None, error: str | None,
                       duration_ms: int, next_attempt_at: datetime | None) -> bool: ...


def emit(uow: Any, event_type: str, object_id: str, payload: dict[str, Any],
         ordering_key: str | None = None) -> int:
    """Writes one event, and a delivery for every subscription to `event_type`, in `uow`'s
    transaction: call it in the unit of work that makes the change it reports.

    `payload` is the event's `data` (JSON-serialisable); `ordering_key` (default `object_id`)
    orders the deliveries of one subscription. Returns the event's id. Raises ValueError for a
    type not in EVENT_TYPES (a bug, never input).
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    return uow.webhooks.emit(event_type, str(object_id), str(ordering_key or object_id), payload)
