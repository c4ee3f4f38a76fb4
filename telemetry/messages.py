"""Dramatiq middleware: the request id travels with each message, and retries are counted.

Enqueueing copies the current request id into the message's options (`request_id`); a
worker sets it as the current request id while it runs the message, so its log lines
carry the id of the HTTP request (or scheduler job) that caused them. A message sent
from outside any request gets none and runs without one.
"""
from __future__ import annotations

import dramatiq

from telemetry.logs import REQUEST_ID
from telemetry.metrics import MESSAGE_RETRIES, MESSAGES_FAILED, process_started

#: The message option that carries the request id.
REQUEST_ID_OPTION = "request_id"


class RequestIds(dramatiq.Middleware):
    """List it first: its `before_process_message` then runs before every other middleware's,
    and its `after_process_message` (hooks run in reverse) after them."""

    def before_enqueue(self, broker, message, delay):
        request_id = REQUEST_ID.get()
        if request_id and REQUEST_ID_OPTION not in message.options:
            message.options[REQUEST_ID_OPTION] = request_id

    def before_process_message(self, broker, message):
        message._telemetry_token = REQUEST_ID.set(message.options.get(REQUEST_ID_OPTION))

    def after_process_message(self, broker, message, *, result=None, exception=None):
        self._reset(message)

    def after_skip_message(self, broker, message):
        self._reset(message)

    @staticmethod
    def _reset(message):
        token = getattr(message, "_telemetry_token", None)
        if token is not None:
            REQUEST_ID.reset(token)
            message._telemetry_token = None


class MessageOutcomes(dramatiq.Middleware):
    """Counts messages that raised: retried, or given up on. `Retries` decides which of the
    two a failure is (it marks a given-up message failed), so this must see the message
    after it: Dramatiq runs `after_*` hooks in reverse order, so list this one before `Retries`."""

    def after_worker_boot(self, broker, worker):
        # Only a process that runs messages boots a worker; one that only sends them does not.
        process_started("worker")

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None:
            return
        if message.failed:
            MESSAGES_FAILED.labels(message.actor_name).inc()
        else:
            MESSAGE_RETRIES.labels(message.actor_name).inc()
