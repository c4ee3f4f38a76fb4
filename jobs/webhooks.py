"""The scheduler's webhook dispatcher: sends the due deliveries to the `webhooks` queue.

Runs every INTERVAL_S, so a new event, a retry whose pause has passed or a replay goes out
within about a second; a lost message is sent again once its lease (DISPATCH_LEASE_S) expires.
"""
from __future__ import annotations

import logging

import redis
from sqlalchemy.exc import OperationalError

from pipeline.errors import TransientFault
from pipeline.webhooks import delivery

log = logging.getLogger(__name__)

#: How often the job starts, in seconds.
INTERVAL_S = 1.0


def dispatch_webhooks(services) -> None:
    from actors import broker
    from actors.webhooks import DeliveryMessages

    try:
        sent = delivery.dispatch_due(services.uow, DeliveryMessages(broker))
    except (redis.RedisError, TransientFault, OperationalError) as error:
        log.warning("webhook dispatcher: %s, will try again: %s", type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "")
        return
    if sent:
        log.debug("webhook dispatcher: %d deliveries sent", sent)
