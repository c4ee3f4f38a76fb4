"""Webhook subscriptions, events and deliveries (`uow.webhooks`, migration 0016)."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from pipeline.webhooks import Delivery, Subscription, Work

_DELIVERY_COLUMNS = """d.id, d.subscription_id::text, d.event_id, e.type, d.status, d.attempts, d.failures,
       d.last_status_code, d.last_error, d.next_attempt_at"""

# A lane is one subscription's deliveries of one ordering key: only its oldest PENDING one may go.
# Deliveries of a deleted subscription that an event wrote as it was being deleted end CANCELLED here.
_TAKE_DUE = text("""
WITH orphans AS (
    UPDATE webhook_deliveries d SET status = 'CANCELLED', next_attempt_at = NULL, leased_until = NULL,
           updated_at = now()
      FROM webhook_subscriptions s
     WHERE s.id = d.subscription_id AND s.deleted_at IS NOT NULL AND d.status = 'PENDING'
), due AS (
    SELECT d.id FROM webhook_deliveries d
     WHERE d.status = 'PENDING' AND d.next_attempt_at <= now()
       AND (d.leased_until IS NULL OR d.leased_until < now())
       AND EXISTS (SELECT 1 FROM webhook_subscriptions s WHERE s.id = d.subscription_id AND s.deleted_at IS NULL)
       AND NOT EXISTS (SELECT 1 FROM webhook_deliveries older
                        WHERE older.subscription_id = d.subscription_id AND older.ordering_key = d.ordering_key
                          AND older.status = 'PENDING' AND older.id < d.id)
     ORDER BY d.next_attempt_at, d.id
     LIMIT :limit
     FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d SET dispatch = d.dispatch + 1, updated_at = now(),
       leased_until = now() + make_interval(secs => :lease_s)
  FROM due WHERE d.id = due.id
RETURNING d.id, d.dispatch
""")

# The message's number is moved on, so that a second copy of the same message finds nothing to do.
_CLAIM = text("""
UPDATE webhook_deliveries d SET dispatch = d.dispatch + 1, updated_at = now(),
       leased_until = now() + make_interval(secs => :lease_s)
  FROM webhook_subscriptions s, webhook_events e
 WHERE d.id = :id AND d.dispatch = :dispatch AND d.status = 'PENDING' AND d.next_attempt_at <= now()
   AND s.id = d.subscription_id AND s.deleted_at IS NULL AND e.id = d.event_id
RETURNING d.id, d.dispatch, s.url, s.secret, e.id, e.type, e.payload, e.created_at, d.failures
""")

_RECORD = text("""
WITH attempt AS (
    INSERT INTO webhook_attempts (delivery_id, status_code, error, duration_ms)
    VALUES (:id, :status_code, :error, :duration_ms)
)
UPDATE webhook_deliveries SET status = :status, attempts = attempts + 1, failures = :failures,
       last_status_code = :status_code, last_error = :error, next_attempt_at = :next_attempt_at,
       leased_until = NULL, updated_at = now()
 WHERE id = :id AND dispatch = :dispatch AND status = 'PENDING'
""")

_DELETE = text("""
WITH gone AS (
    UPDATE webhook_subscriptions SET deleted_at = now() WHERE id = :id AND deleted_at IS NULL RETURNING id
), cancelled AS (
    UPDATE webhook_deliveries d SET status = 'CANCELLED', next_attempt_at = NULL, leased_until = NULL,
           updated_at = now()
      FROM gone WHERE d.subscription_id = gone.id AND d.status = 'PENDING'
    RETURNING d.id
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM cancelled)
""")


def _subscription(row) -> Subscription:
    return Subscription(str(row.id), row.url, tuple(row.events), row.description, row.created_at)


class SqlWebhooks:
    def __init__(self, connection: Connection):
        self.connection = connection

    def emit(self, event_type: str, object_id: str, ordering_key: str, payload: dict[str, Any]) -> int:
        return self.connection.execute(text("SELECT webhook_emit(:type, :object_id, :key, CAST(:payload AS jsonb))"), {
            "type": event_type, "object_id": object_id, "key": ordering_key,
            "payload": json.dumps(payload, default=str)}).scalar_one()

    def add_subscription(self, subscription: Subscription, secret: str, created_by: int | None) -> None:
        self.connection.execute(text(
            "INSERT INTO webhook_subscriptions (id, url, events, description, secret, created_by, created_at)"
            " VALUES (:id, :url, :events, :description, :secret, :created_by, :created_at)"), {
            "id": subscription.id, "url": subscription.url, "events": list(subscription.events),
            "description": subscription.description, "secret": secret, "created_by": created_by,
            "created_at": subscription.created_at})

    def subscriptions(self, limit: int, offset: int = 0) -> list[Subscription]:
        rows = self.connection.execute(text(
            "SELECT id, url, events, description, created_at FROM webhook_subscriptions WHERE deleted_at IS NULL"
            " ORDER BY created_at, id LIMIT :limit OFFSET :offset"), {"limit": limit, "offset": offset})
        return [_subscription(row) for row in rows]

    def count_subscriptions(self) -> int:
        # Serialises creations, so that two at once cannot both pass the limit.
        self.connection.execute(text("LOCK TABLE webhook_subscriptions IN SHARE ROW EXCLUSIVE MODE"))
        return self.connection.execute(text(
            "SELECT count(*) FROM webhook_subscriptions WHERE deleted_at IS NULL")).scalar_one()

    def subscription(self, subscription_id: str) -> Subscription | None:
        row = self.connection.execute(text(
            "SELECT id, url, events, description, created_at FROM webhook_subscriptions"
            " WHERE id = :id AND deleted_at IS NULL"), {"id": subscription_id}).first()
        return None if row is None else _subscription(row)

    def delete_subscription(self, subscription_id: str) -> int | None:
        gone, cancelled = self.connection.execute(_DELETE, {"id": subscription_id}).one()
        return cancelled if gone else None

    def deliveries(self, subscription_id: str, before_id: int | None, limit: int) -> list[Delivery]:
        rows = self.connection.execute(text(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"
            " WHERE d.subscription_id = :id AND (CAST(:before AS bigint) IS NULL OR d.id < :before)"
            " ORDER BY d.id DESC LIMIT :limit"), {"id": subscription_id, "before": before_id, "limit": limit})
        return [Delivery(*row) for row in rows]

    def lock_delivery(self, subscription_id: str, delivery_id: int) -> Delivery | None:
        row = self.connection.execute(text(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"
            " JOIN webhook_subscriptions s ON s.id = d.subscription_id AND s.deleted_at IS NULL"
            " WHERE d.id = :id AND d.subscription_id = :subscription_id FOR UPDATE OF d"),
            {"id": delivery_id, "subscription_id": subscription_id}).first()
        return None if row is None else Delivery(*row)

    def replay(self, delivery_id: int) -> None:
        assert self.connection.execute(text(
            "UPDATE webhook_deliveries SET status = 'PENDING', next_attempt_at = now(), failures = 0,"
            " leased_until = NULL, dispatch = dispatch + 1, updated_at = now() WHERE id = :id"),
            {"id": delivery_id}).rowcount == 1

    def take_due(self, limit: int, lease_s: float) -> list[tuple[int, int]]:
        return [tuple(row) for row in self.connection.execute(_TAKE_DUE, {"limit": limit, "lease_s": lease_s})]

    def claim(self, delivery_id: int, dispatch: int, lease_s: float) -> Work | None:
        row = self.connection.execute(_CLAIM, {"id": delivery_id, "dispatch": dispatch, "lease_s": lease_s}).first()
        return None if row is None else Work(*row)

    def record_attempt(self, work: Work, status: str, status_code: int | None, error: str | None,
                       duration_ms: int, next_attempt_at: datetime | None) -> bool:
        failures = 0 if status == "SUCCEEDED" else work.failures + 1
        return self.connection.execute(_RECORD, {
            "id": work.delivery_id, "dispatch": work.dispatch, "status": status, "failures": failures,
            "status_code": status_code, "error": error, "duration_ms": duration_ms,
            "next_attempt_at": next_attempt_at}).rowcount == 1
