"""Reconciliation runs: start one (a worker runs it), read one, list them."""
from __future__ import annotations

import logging
from datetime import datetime

from apiflask import APIBlueprint
from flask import g, jsonify, request

from bootstrap import app_services as services
from pipeline import reconciliation, statements, wallets
from pipeline.audit import Actor
from web.auth import allow, authenticated
from web.inputs import json_object
from web.problems import HttpProblem
from web.wallets import rfc3339

log = logging.getLogger(__name__)

blueprint = APIBlueprint("reconciliation", __name__, url_prefix="/api/v1/reconciliations", tag="Reconciliation")


def _time(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment else None


def render(run: dict) -> dict:
    return {"id": run["id"], "status": run["status"], "full": run["full"], "created_at": _time(run["created_at"]),
            "started_at": _time(run["started_at"]), "finished_at": _time(run["finished_at"]),
            "wallets_checked": run["wallets_checked"], "mismatch_count": run["mismatch_count"],
            "mismatches": run["mismatches"] or []}


@blueprint.post("")
@authenticated
def start_reconciliation():
    allow(g.principal.may_operate())
    full = json_object(required=False).get("full", False)
    if not isinstance(full, bool):
        raise HttpProblem(422, "validation_failed", "full must be true or false",
                          [{"field": "full", "message": "must be a boolean"}])
    reconciliation_id = reconciliation.start(services().uow(), full, Actor("api_key", g.principal.api_key_id))
    from actors.reconciliation import reconcile  # the broker is only configured where messages are sent

    try:
        reconcile.send(reconciliation_id)
    except Exception as error:  # the broker is unreachable: no run is left queued for ever
        log.warning("could not send reconciliation %s: %s", reconciliation_id, error)
        reconciliation.discard(services().uow(), reconciliation_id)
        raise HttpProblem(503, "temporarily_unavailable", "the queue is unreachable; no run was started, try again")
    return jsonify({"id": reconciliation_id, "status": "queued"}), 202


@blueprint.get("/<reconciliation_id>")
@authenticated
def get_reconciliation(reconciliation_id):
    allow(g.principal.may_read_all())
    reconciliation_id = wallets.parse_user_id(reconciliation_id, "id")
    return jsonify(render(reconciliation.get(services().uow(), reconciliation_id)))


@blueprint.get("")
@authenticated
def list_reconciliations():
    allow(g.principal.may_read_all())
    limit = statements.parse_limit(request.args.get("limit"))
    page = reconciliation.recent(services().uow(), limit, request.args.get("cursor"))
    return jsonify({"data": [render(run) for run in page.items], "next_cursor": page.next_cursor})
