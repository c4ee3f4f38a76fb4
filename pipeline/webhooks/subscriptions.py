"""The admin's use cases: subscribe, list, unsubscribe, read deliveries, replay one.

Each is one unit of work, and each change records one audit event in it (issue 10, item 6).
"""
from __future__ import annotations

import base64
import secrets
import uuid
from datetime import datetime, timezone
from typing import Callable

from pipeline import audit
from pipeline.audit import Actor
from pipeline.config import Settings
from pipeline.errors import Conflict, FieldError, NotFound, ValidationFailed
from pipeline.statements import Page, decode_cursor, page_of
from pipeline.text import storable
from pipeline.webhooks import (EVENT_TYPES, PENDING, REPLAYABLE_STATES, Delivery, InvalidDeliveryState,
                               Subscription, check_transition)
from pipeline.webhooks.urls import Resolver, check_subscription_url, resolve

#: Live subscriptions at most: every event is fanned out to each of its type in its own transaction.
SUBSCRIPTIONS_MAX = 100
#: The longest description, in characters.
DESCRIPTION_LENGTH_MAX = 500
#: Random bytes of a signing secret (Standard Webhooks: 24 to 64).
SECRET_BYTES = 32


class TooManySubscriptions(Conflict):
    code = "too_many_webhooks"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _checked(url: object, events: object, description: object, settings: Settings,
             resolver: Resolver) -> tuple[str, tuple[str, ...], str | None]:
    errors = []
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        errors.append(FieldError("events", f"a non-empty list of event types: {', '.join(EVENT_TYPES)}"))
    elif unknown := sorted(set(events) - set(EVENT_TYPES)):
        errors.append(FieldError("events", f"unknown event types {', '.join(unknown)[:200]}; known:"
                                           f" {', '.join(EVENT_TYPES)}"))
    if description is not None and (not isinstance(description, str) or len(description) > DESCRIPTION_LENGTH_MAX
                                    or not storable(description)):
        errors.append(FieldError("description", f"text of at most {DESCRIPTION_LENGTH_MAX} characters"))
    if errors:
        raise ValidationFailed("the webhook is not valid", errors)
    url = check_subscription_url(url, settings.webhook_allow_private_urls, resolver)
    return url, tuple(dict.fromkeys(events)), description


def subscribe(uow_factory: Callable, settings: Settings, actor: Actor, *, url: object, events: object,
              description: object = None, resolver: Resolver = resolve) -> tuple[Subscription, str]:
    """Creates a subscription; returns it with its signing secret, which nothing shows again.

    Raises ValidationFailed (422: a malformed URL, unknown event types, a bad description),
    UrlNotAllowed (422 `url_not_allowed`: not http/https, or a non-public address unless
    WEBHOOK_ALLOW_PRIVATE_URLS), TooManySubscriptions (409) past SUBSCRIPTIONS_MAX.
    """
    url, events, description = _checked(url, events, description, settings, resolver)
    subscription = Subscription(str(uuid.uuid4()), url, events, description, datetime.now(timezone.utc))
    secret = new_secret()
    with uow_factory() as uow:
        if uow.webhooks.count_subscriptions() >= SUBSCRIPTIONS_MAX:
            raise TooManySubscriptions(f"at most {SUBSCRIPTIONS_MAX} webhooks; delete one first")
        uow.webhooks.add_subscription(subscription, secret, actor.api_key_id)
        audit.record(uow, actor, "webhook.create", "webhook", subscription.id, url=url, events=list(events))
        uow.commit()
    return subscription, secret


def subscriptions_page(uow_factory: Callable, limit: int, cursor: str | None) -> Page:
    """Live subscriptions, oldest first; the cursor is the position in that order. Raises
    ValidationFailed for a cursor this API did not make."""
    offset = decode_cursor(cursor, "w") or 0
    with uow_factory() as uow:
        found = uow.webhooks.subscriptions(limit + 1, offset)
    return page_of([{"position": offset + n, "subscription": s} for n, s in enumerate(found, start=1)],
                   limit, "position", "w")


def unsubscribe(uow_factory: Callable, actor: Actor, subscription_id: str) -> None:
    """Deletes a subscription; its PENDING deliveries end CANCELLED. Raises NotFound."""
    with uow_factory() as uow:
        cancelled = uow.webhooks.delete_subscription(subscription_id)
        if cancelled is None:
            raise NotFound(f"no webhook {subscription_id}")
        audit.record(uow, actor, "webhook.delete", "webhook", subscription_id, cancelled_deliveries=cancelled)
        uow.commit()


def deliveries_page(uow_factory: Callable, subscription_id: str, limit: int, cursor: str | None) -> Page:
    """The subscription's deliveries, newest first. Raises NotFound, ValidationFailed (cursor)."""
    before_id = decode_cursor(cursor, "d")
    with uow_factory() as uow:
        if uow.webhooks.subscription(subscription_id) is None:
            raise NotFound(f"no webhook {subscription_id}")
        found = uow.webhooks.deliveries(subscription_id, before_id, limit + 1)
    return page_of([render_delivery(delivery) for delivery in found], limit, "id", "d")


def replay(uow_factory: Callable, actor: Actor, subscription_id: str, delivery_id: int) -> Delivery:
    """Makes a delivery PENDING and due now, with a fresh series of attempts; the dispatcher sends
    it within about a second. Raises NotFound, InvalidDeliveryState (409: a CANCELLED one)."""
    with uow_factory() as uow:
        delivery = uow.webhooks.lock_delivery(subscription_id, delivery_id)
        if delivery is None:
            raise NotFound(f"no delivery {delivery_id} of webhook {subscription_id}")
        if delivery.status not in REPLAYABLE_STATES:
            raise InvalidDeliveryState(f"delivery {delivery_id} is {delivery.status}: its webhook was deleted")
        check_transition(delivery.status, PENDING)
        uow.webhooks.replay(delivery_id)
        audit.record(uow, actor, "webhook.replay", "webhook_delivery", str(delivery_id),
                     webhook_id=subscription_id, event_id=delivery.event_id, previous_status=delivery.status)
        uow.commit()
    return delivery


def render_delivery(delivery: Delivery) -> dict:
    return {"id": delivery.id, "event_id": delivery.event_id, "type": delivery.type, "attempts": delivery.attempts,
            "status": delivery.status, "last_status_code": delivery.last_status_code,
            "last_error": delivery.last_error, "next_attempt_at": delivery.next_attempt_at}
