"""One log line per operator action, once it has committed, with who and what as fields.

Two ways in, both after the transaction committed, so a line never tells of an action that
rolled back:
- every audit event (`pipeline.audit.record`: key creation and revocation, reversals, and
  whatever else records one) is logged by the unit of work once it commits
  (storage/audit.py), with `object_type`, `object_id`, `audit_event_id` and its `detail`;
- the actions that record no audit event yet (upload, approve, reject, cancel, retry, top-up,
  reconciliation start) call `logged` themselves. One that starts recording an audit event
  must drop its own call, or it is logged twice.

The JSON formatter
(telemetry/logs.py) turns the fields into keys of the line, so an operator can search the
logs by `actor` or by `activity_id` without parsing messages:

    {"logger": "wallet.action", "message": "bulk_credit.approve by api_key:7: activity 0f1e...",
     "action": "bulk_credit.approve", "actor": "api_key:7", "actor_type": "api_key",
     "actor_key_id": 7, "activity_id": "0f1e..."}

Field names avoid the words that the formatter redacts (`api_key`, `token`, `secret`).
"""
from __future__ import annotations

import logging
from typing import Any

from pipeline.audit import COMMAND_LINE, Actor

log = logging.getLogger("wallet.action")

#: Field names a record already has, which an action's ids must not take.
RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "action"}


def actor_of_key(api_key_id: int | None) -> Actor:
    """The actor behind an API key id, or the command line when no key acted."""
    return COMMAND_LINE if api_key_id is None else Actor("api_key", api_key_id)


def actor_label(actor: Actor) -> str:
    """`api_key:<id>`, or the actor's type (`command_line`, `scheduler`, `worker`)."""
    return f"api_key:{actor.api_key_id}" if actor.api_key_id is not None else actor.type


def logged(action: str, actor: Actor, summary: str, **ids: Any) -> None:
    """Writes one INFO line `<action> by <actor>: <summary>` with the fields `action`,
    `actor`, `actor_type`, `actor_key_id` and each of `ids` (the objects the action touched
    and its counts: activity_id, funding_account, reconciliation_id, rows...)."""
    clashing = RESERVED & ids.keys()
    assert not clashing, f"log fields that a record already has: {sorted(clashing)}"
    label = actor_label(actor)
    log.info("%s by %s: %s", action, label, summary, extra={
        "action": action, "actor": label, "actor_type": actor.type, "actor_key_id": actor.api_key_id, **ids})
