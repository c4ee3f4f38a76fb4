"""Typed answers of the webhook and audit operations (web/webhooks.py, web/audit.py), as
OpenAPI 3.1 schemas; tests/test_webhooks.py validates real answers against them."""
from __future__ import annotations

from pipeline.audit import ACTOR_TYPES
from pipeline.webhooks import DELIVERY_STATES, EVENT_TYPES
from web.schemas import COUNT, KEY_ID, MAYBE_TIME, TIME, UUID, _object, page_of

EVENT_TYPE = {"type": "string", "enum": list(EVENT_TYPES)}
WEBHOOK = dict(id=UUID, url={"type": "string"}, events={"type": "array", "items": EVENT_TYPE},
               description={"type": ["string", "null"]}, created_at=TIME)

SCHEMAS = {
    "Webhook": _object(**WEBHOOK),
    "WebhookCreated": _object(**WEBHOOK, secret={
        "type": "string", "pattern": "^whsec_[A-Za-z0-9+/=]+$",
        "description": "The signing secret (Standard Webhooks); shown in this answer only"}),
    "WebhookPage": page_of("Webhook"),
    "WebhookDelivery": _object(
        id={"type": "integer", "minimum": 1}, event_id={"type": "integer", "minimum": 1}, type=EVENT_TYPE,
        attempts=COUNT, status={"type": "string", "enum": list(DELIVERY_STATES)},
        last_status_code={"type": ["integer", "null"]}, last_error={"type": ["string", "null"]},
        next_attempt_at=MAYBE_TIME),
    "WebhookDeliveryPage": page_of("WebhookDelivery"),
    "WebhookReplayed": _object(id={"type": "integer", "minimum": 1}, event_id={"type": "integer", "minimum": 1},
                               status={"type": "string", "const": "PENDING"}),
    "AuditEvent": _object(
        id={"type": "integer", "minimum": 1}, at=TIME,
        actor=_object(type={"type": "string", "enum": ["api_key", *ACTOR_TYPES]}, api_key_id=KEY_ID,
                      scope={"type": ["string", "null"]},
                      label={"type": ["string", "null"], "description": "The key's label; null when it has none"}),
        action={"type": "string", "examples": ["bulk_credit.approve"]}, object_type={"type": "string"},
        object_id={"type": "string"}, detail={"type": "object"}),
    "AuditEventPage": page_of("AuditEvent"),
}


def ref(name: str) -> dict:
    assert name in SCHEMAS, name
    return {"$ref": f"#/components/schemas/{name}"}
