"""Finding what has no id at hand: users by email or external id, transactions by reference,
activity, user, kind and time (admin, operator and approver keys: they read everything)."""
from __future__ import annotations

from apiflask import APIBlueprint
from flask import g, jsonify, request

from bootstrap import app_services as services
from pipeline import search
from pipeline.statements import parse_limit
from web.auth import allow, authenticated
from web.inputs import rfc3339_field
from web.wallets import money, render_user, rfc3339

blueprint = APIBlueprint("search", __name__, url_prefix="/api/v1", tag="Users and wallets")


@blueprint.get("/users")
@authenticated
def list_users():
    """Users newest first, by `email` (any case) or `external_id` (exactly)."""
    allow(g.principal.may_read_all())
    found, next_cursor = search.users_page(services().uow(), request.args.get("email"),
                                           request.args.get("external_id"), parse_limit(request.args.get("limit")),
                                           request.args.get("cursor"))
    return jsonify({"data": [render_user(user) for user in found], "next_cursor": next_cursor})


def render_entry(entry: dict) -> dict:
    code = entry["currency"].strip()
    return {"id": entry["id"], "kind": entry["kind"], "amount": money(entry["amount"], code),
            "fee": money(entry["fee"], code), "currency": code, "from_user_id": entry["from_user_id"],
            "to_user_id": entry["to_user_id"], "reference": entry["reference"], "activity_id": entry["activity_id"],
            "funding_account": entry["funding_account"], "created_at": rfc3339(entry["created_at"])}


@blueprint.get("/transactions")
@authenticated
def list_transactions():
    """Journal entries newest first; GET /transactions/{id} gives one with its postings."""
    allow(g.principal.may_read_all())
    args = request.args
    found, next_cursor = search.entries_page(
        services().uow(), args.get("reference"), args.get("activity_id"), args.get("user_id"), args.get("kind"),
        rfc3339_field(args.get("created_after"), "created_after"),
        rfc3339_field(args.get("created_before"), "created_before"),
        parse_limit(args.get("limit")), args.get("cursor"))
    return jsonify({"data": [render_entry(entry) for entry in found], "next_cursor": next_cursor})
