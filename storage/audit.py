"""The `audit_events` table (migration 0013)."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, text

from pipeline.audit import Actor

INSERT = """
INSERT INTO audit_events (actor_type, api_key_id, action, object_type, object_id, detail)
VALUES (:actor_type, :api_key_id, :action, :object_type, :object_id, CAST(:detail AS jsonb))
RETURNING id
"""


class SqlAuditTrail:
    def __init__(self, connection: Connection):
        self.connection = connection

    def add(self, actor: Actor, action: str, object_type: str, object_id: str,
            detail: dict[str, Any]) -> int:
        return self.connection.execute(text(INSERT), {
            "actor_type": actor.type, "api_key_id": actor.api_key_id, "action": action,
            "object_type": object_type, "object_id": object_id,
            "detail": json.dumps(detail, default=str, sort_keys=True),
        }).scalar_one()
