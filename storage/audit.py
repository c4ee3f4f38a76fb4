"""The `audit_events` table (migration 0013)."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, text

from pipeline import action_log
from pipeline.audit import Actor

INSERT = """
INSERT INTO audit_events (actor_type, api_key_id, action, object_type, object_id, detail)
VALUES (:actor_type, :api_key_id, :action, :object_type, :object_id, CAST(:detail AS jsonb))
RETURNING id
"""


class SqlAuditTrail:
    def __init__(self, connection: Connection):
        self.connection = connection
        #: The events added in this transaction, which the unit of work logs once it has
        #: committed (pipeline/action_log.py): every audited action gets its log line.
        self.added: list[tuple[int, Actor, str, str, str, dict[str, Any]]] = []

    def add(self, actor: Actor, action: str, object_type: str, object_id: str,
            detail: dict[str, Any]) -> int:
        event_id = self.connection.execute(text(INSERT), {
            "actor_type": actor.type, "api_key_id": actor.api_key_id, "action": action,
            "object_type": object_type, "object_id": object_id,
            "detail": json.dumps(detail, default=str, sort_keys=True),
        }).scalar_one()
        self.added.append((event_id, actor, action, object_type, object_id, detail))
        return event_id

    def log_committed(self) -> None:
        """One `wallet.action` line per event added, then forgets them; call after the commit."""
        for event_id, actor, action, object_type, object_id, detail in self.added:
            action_log.logged(action, actor, f"{object_type} {object_id}", object_type=object_type,
                              object_id=object_id, audit_event_id=event_id, detail=detail)
        self.added = []
