"""Webhooks over HTTP: subscribe, delete and replay (admin); list and read deliveries (every key
that reads everything)."""
from __future__ import annotations

from apiflask import APIBlueprint
from flask import g, jsonify, request

from bootstrap import app_services as services
from pipeline.audit import Actor
from pipeline.errors import NotFound
from pipeline.statements import CURSOR_POSITION_MAX, parse_limit
from pipeline.wallets import parse_user_id
from pipeline.webhooks import subscriptions
from web.auth import allow, authenticated
from web.wallets import json_body, rfc3339

blueprint = APIBlueprint("webhooks", __name__, url_prefix="/api/v1/webhooks", tag="Webhooks")


def _admin() -> Actor:
    allow(g.principal.scope == "admin")
    return Actor("api_key", g.principal.api_key_id)


def render(subscription) -> dict:
    return {"id": subscription.id, "url": subscription.url, "events": list(subscription.events),
            "description": subscription.description, "created_at": rfc3339(subscription.created_at)}


@blueprint.post("")
@authenticated
def create():
    """Subscribes a URL to event types; the answer holds the signing secret, shown this once."""
    actor = _admin()
    body = json_body()
    subscription, secret = subscriptions.subscribe(
        services().uow, services().settings, actor, url=body.get("url"), events=body.get("events"),
        description=body.get("description"))
    return jsonify({**render(subscription), "secret": secret}), 201


@blueprint.get("")
@authenticated
def list_all():
    allow(g.principal.may_read_all())  # reading: operators and approvers too (API.md)
    limit = parse_limit(request.args.get("limit"))
    page = subscriptions.subscriptions_page(services().uow, limit, request.args.get("cursor"))
    return jsonify({"data": [render(item["subscription"]) for item in page.items], "next_cursor": page.next_cursor})


@blueprint.delete("/<subscription_id>")
@authenticated
def delete(subscription_id):
    actor = _admin()
    subscriptions.unsubscribe(services().uow, actor, parse_user_id(subscription_id, "id"))
    return "", 204


@blueprint.get("/<subscription_id>/deliveries")
@authenticated
def deliveries(subscription_id):
    allow(g.principal.may_read_all())  # reading: operators and approvers too (API.md)
    subscription_id = parse_user_id(subscription_id, "id")
    limit = parse_limit(request.args.get("limit"))
    page = subscriptions.deliveries_page(services().uow, subscription_id, limit, request.args.get("cursor"))
    data = [{**item, "next_attempt_at": rfc3339(item["next_attempt_at"]) if item["next_attempt_at"] else None}
            for item in page.items]
    return jsonify({"data": data, "next_cursor": page.next_cursor})


@blueprint.post("/<subscription_id>/deliveries/<int:delivery_id>/replay")
@authenticated
def replay(subscription_id, delivery_id):
    """Sends a delivery again, whatever became of it, with a fresh series of attempts."""
    actor = _admin()
    subscription_id = parse_user_id(subscription_id, "id")
    if delivery_id > CURSOR_POSITION_MAX:
        raise NotFound(f"no delivery {delivery_id}")
    replayed = subscriptions.replay(services().uow, actor, subscription_id, delivery_id)
    return jsonify({"id": replayed.id, "event_id": replayed.event_id, "status": "PENDING"}), 202
