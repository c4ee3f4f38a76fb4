"""Delivering webhooks: the dispatcher that sends due deliveries to the queue, and one attempt.

A delivery is attempted by the message whose `dispatch` number it carries: the dispatcher
leases the delivery (DISPATCH_LEASE_S) and sends its id with a new number; the worker claims
it with that number for the attempt's own lease (the timeouts and a margin), posts it, and
records the outcome. A message that arrives late, twice, or after a replay names an old
number and does nothing; a lost message or a worker that died mid-attempt leaves a lease that
expires, and the dispatcher sends the delivery again. Hence at least once, never two attempts
of one delivery at a time.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol

from standardwebhooks import Webhook

from pipeline.config import Settings
from pipeline.webhooks import FAILED, PENDING, SUCCEEDED, UrlNotAllowed, Work, check_transition
from pipeline.webhooks.urls import Address, Resolver, Target, allowed_addresses, parse_url, resolve

log = logging.getLogger(__name__)

#: Deliveries one dispatcher run sends at most.
DISPATCH_BATCH_MAX = 500
#: How long a sent message holds its delivery before the dispatcher sends it again, in seconds.
DISPATCH_LEASE_S = 60.0
#: What an attempt's lease adds to its timeouts, in seconds: signing, DNS, recording.
ATTEMPT_LEASE_MARGIN_S = 30.0
#: The longest error text kept per attempt, in characters.
ERROR_LENGTH_MAX = 500


@dataclass(frozen=True)
class Answer:
    """An attempt's outcome: the HTTP status, or why there was none."""

    status_code: int | None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code <= 299


class Sender(Protocol):
    def post(self, target: Target, address: Address, url: str, headers: dict[str, str], body: bytes) -> Answer:
        """POSTs `body` to `url`, connecting to `address` only (never resolving the host again);
        never raises for a network fault or a non-2xx answer: both are an Answer."""


class DeliveryQueue(Protocol):
    def send(self, deliveries: list[tuple[int, int]]) -> None:
        """Sends one message per (delivery id, dispatch number)."""


def pause_s(failures: int, settings: Settings) -> float:
    """The pause after the `failures`-th failed attempt in a row: the base, doubled each time, at most the max."""
    assert failures >= 1
    return min(settings.webhook_retry_base_delay_s * 2 ** min(failures - 1, 40), settings.webhook_retry_delay_max_s)


def attempt_lease_s(settings: Settings) -> float:
    return settings.webhook_connect_timeout_s + settings.webhook_read_timeout_s + ATTEMPT_LEASE_MARGIN_S


def dispatch_due(uow_factory: Callable, queue: DeliveryQueue) -> int:
    """Leases the due deliveries that head their lane and sends them after the commit; returns how many."""
    with uow_factory() as uow:
        due = uow.webhooks.take_due(DISPATCH_BATCH_MAX, DISPATCH_LEASE_S)
        uow.commit()
    if due:
        queue.send(due)  # lost on the way: the lease expires and the next run sends them again
    return len(due)


def signed_request(work: Work, now: datetime) -> tuple[dict[str, str], bytes]:
    """The Standard Webhooks headers and the JSON body `{type, timestamp, data}` of one attempt."""
    body = json.dumps({"type": work.type, "timestamp": rfc3339(work.occurred_at), "data": work.payload},
                      separators=(",", ":"), ensure_ascii=False, default=str)
    message_id = str(work.event_id)  # the same on every attempt and replay: receivers drop duplicates
    signature = Webhook(work.secret).sign(message_id, now, body)
    headers = {"content-type": "application/json", "user-agent": "wallet-pipeline-webhooks/1",
               "webhook-id": message_id, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": signature}
    return headers, body.encode()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _post(work: Work, sender: Sender, settings: Settings, resolver: Resolver) -> Answer:
    try:
        target = parse_url(work.url)
        # Resolved and checked now, at every attempt, and connected to exactly what was checked.
        addresses = allowed_addresses(target, settings.webhook_allow_private_urls, resolver)
    except UrlNotAllowed as refusal:
        return Answer(None, f"url_not_allowed: {refusal.detail}")
    headers, body = signed_request(work, datetime.now(timezone.utc))
    return sender.post(target, addresses[0], work.url, headers, body)


@dataclass(frozen=True)
class Attempted:
    delivery_id: int
    status: str  #: the delivery's state after the attempt
    answer: Answer
    duration_s: float


def deliver(uow_factory: Callable, sender: Sender, settings: Settings, delivery_id: int, dispatch: int,
            resolver: Resolver = resolve) -> Attempted | None:
    """One attempt at a delivery, if message `dispatch` may make it now; None when the delivery
    is not PENDING, not due, or belongs to a newer message. The attempt is recorded with its
    outcome: SUCCEEDED on a 2xx, else PENDING for the next pause (pause_s) or FAILED after
    WEBHOOK_ATTEMPTS_MAX failed attempts in a row."""
    with uow_factory() as uow:
        work = uow.webhooks.claim(delivery_id, dispatch, attempt_lease_s(settings))
        uow.commit()
    if work is None:
        return None
    started_s = time.monotonic()
    answer = _post(work, sender, settings, resolver)
    duration_s = time.monotonic() - started_s
    failures = 0 if answer.succeeded else work.failures + 1
    if answer.succeeded:
        status, next_attempt_at = SUCCEEDED, None
    elif failures >= settings.webhook_attempts_max:
        status, next_attempt_at = FAILED, None
    else:
        status = PENDING
        next_attempt_at = datetime.now(timezone.utc) + timedelta(seconds=pause_s(failures, settings))
    check_transition(PENDING, status)
    error = answer.error if answer.error is not None else (
        None if answer.succeeded else f"HTTP {answer.status_code}")
    with uow_factory() as uow:
        uow.webhooks.record_attempt(work, status, answer.status_code, (error or "")[:ERROR_LENGTH_MAX] or None,
                                    int(duration_s * 1000), next_attempt_at)
        uow.commit()
    if not answer.succeeded:
        log.warning("webhook delivery %d (event %d, %s) attempt failed: %s; %s", delivery_id, work.event_id,
                    work.type, error, f"next at {rfc3339(next_attempt_at)}" if next_attempt_at else "given up")
    return Attempted(delivery_id, status, answer, duration_s)
