"""The webhook actor: one attempt at one delivery, named by its id and dispatch number.

A message whose number is not the delivery's any more (a copy, a late one, one sent before a
replay) does nothing; the pauses between attempts are the database's (`next_attempt_at`),
not Dramatiq's, so that they can grow for a day and survive a restart of Redis.
"""
from __future__ import annotations

import logging

import dramatiq

from actors.webhook_http import HttpSender
from bootstrap import process_services as services
from pipeline.webhooks import delivery
from telemetry.metrics import WEBHOOK_ATTEMPT_DURATION, WEBHOOK_ATTEMPTS

log = logging.getLogger(__name__)

QUEUE_NAME = "webhooks"
ACTOR_NAME = "deliver_webhook"
#: Retries of a message that hit a transient database fault; past them the delivery's lease
#: expires and the dispatcher sends it again.
MAX_RETRIES = 3
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 10_000
#: An attempt's longest: WEBHOOK_CONNECT_TIMEOUT_S (at most 30) + WEBHOOK_READ_TIMEOUT_S (at most
#: 60) + delivery.ATTEMPT_LEASE_MARGIN_S (30), in milliseconds.
TIME_LIMIT_MS = 120_000


@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=QUEUE_NAME, max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS,
                max_backoff=MAX_BACKOFF_MS, time_limit=TIME_LIMIT_MS, throws=())
def deliver_webhook(delivery_id: int, dispatch: int) -> None:
    settings = services().settings
    sender = HttpSender(settings.webhook_connect_timeout_s, settings.webhook_read_timeout_s)
    attempted = delivery.deliver(services().uow, sender, settings, int(delivery_id), int(dispatch))
    if attempted is None:
        log.debug("webhook delivery %s: message %s has nothing to do", delivery_id, dispatch)
        return
    WEBHOOK_ATTEMPTS.labels(attempted.status.lower()).inc()
    WEBHOOK_ATTEMPT_DURATION.observe(attempted.duration_s)


class DeliveryMessages:
    """`pipeline.webhooks.delivery.DeliveryQueue` over a Dramatiq broker."""

    def __init__(self, broker: dramatiq.Broker):
        self.broker = broker

    def send(self, deliveries: list[tuple[int, int]]) -> None:
        for delivery_id, dispatch in deliveries:
            self.broker.enqueue(dramatiq.Message(queue_name=QUEUE_NAME, actor_name=ACTOR_NAME,
                                                 args=(delivery_id, dispatch), kwargs={}, options={}))
