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


_PAGE = """
SELECT e.id, e.at, e.actor_type, e.api_key_id, k.scope AS api_key_scope, k.label AS api_key_label,
       e.action, e.object_type, e.object_id, e.detail
  FROM audit_events e LEFT JOIN api_keys k ON k.id = e.api_key_id
 WHERE (CAST(:api_key_id AS bigint) IS NULL OR e.api_key_id = :api_key_id)
   AND (CAST(:actor_type AS text) IS NULL OR e.actor_type = :actor_type)
   AND (CAST(:action AS text) IS NULL OR e.action = :action)
   AND (CAST(:object_id AS text) IS NULL OR e.object_id = :object_id)
   AND (CAST(:before_id AS bigint) IS NULL OR e.id < :before_id)
 ORDER BY e.id DESC
 LIMIT :limit
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
            # The object's id under its own name (`activity_id`), and the action's facts as
            # fields of their own, so that logs are searched as the audit list is.
            taken = action_log.RESERVED | {"object_type", "object_id", "audit_event_id", f"{object_type}_id",
                                           "actor", "actor_type", "actor_key_id", "detail"}
            facts = {name: value for name, value in detail.items() if name not in taken}
            action_log.logged(action, actor, f"{object_type} {object_id}", object_type=object_type,
                              object_id=object_id, audit_event_id=event_id, detail=detail,
                              **{f"{object_type}_id": object_id, **facts})
        self.added = []

    def page(self, filters: dict[str, Any], before_id: int | None, limit: int) -> list[dict[str, Any]]:
        """Events matching `filters` (pipeline.audit.parse_filters) below `before_id`, newest first."""
        rows = self.connection.execute(text(_PAGE), {**filters, "before_id": before_id, "limit": limit})
        return [dict(row) for row in rows.mappings()]
