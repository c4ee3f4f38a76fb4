"""The audit trail over HTTP (admin): who did what to which object, newest first."""
from __future__ import annotations

from apiflask import APIBlueprint
from flask import g, jsonify, request

from bootstrap import app_services as services
from pipeline import audit
from pipeline.statements import parse_limit
from web.auth import allow, authenticated
from web.wallets import rfc3339

blueprint = APIBlueprint("audit", __name__, url_prefix="/api/v1/audit-events", tag="Audit")


def render(event: dict) -> dict:
    actor = {"type": event["actor_type"], "api_key_id": event["api_key_id"], "scope": event["api_key_scope"],
             "label": event["api_key_label"]}
    return {"id": event["id"], "at": rfc3339(event["at"]), "actor": actor, "action": event["action"],
            "object_type": event["object_type"], "object_id": event["object_id"], "detail": event["detail"]}


@blueprint.get("")
@authenticated
def events():
    allow(g.principal.scope == "admin")
    filters = audit.parse_filters(request.args.get("actor"), request.args.get("action"),
                                  request.args.get("object_id"))
    limit = parse_limit(request.args.get("limit"))
    page = audit.events_page(services().uow(), filters, limit, request.args.get("cursor"))
    return jsonify({"data": [render(event) for event in page.items], "next_cursor": page.next_cursor})
