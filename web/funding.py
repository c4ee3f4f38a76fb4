"""Funding accounts over HTTP: top one up (admin), read one, list them."""
from __future__ import annotations

from apiflask import APIBlueprint
from flask import g, jsonify, request

from bootstrap import app_services as services
from pipeline import funding, wallets
from pipeline.audit import Actor
from pipeline.statements import parse_limit
from web.auth import allow, authenticated
from web.wallets import _idempotent, _journal_key

blueprint = APIBlueprint("funding", __name__, url_prefix="/api/v1/funding-accounts", tag="Funding accounts")


@blueprint.post("/<name>/top-up")
@authenticated
def top_up(name):
    """Moves money from `bank` into the account (created on its first top-up); admin only."""
    allow(g.principal.may_move_money())
    settings = services().settings

    def command(body):
        return funding.parse_account_name(name, "name"), wallets.parse_money_request(body, settings, _journal_key())

    def render(moved):
        committed.append(moved)  # rendered in the transaction; logged once it has committed
        return funding.receipt(moved)

    committed = []
    answer = _idempotent(command, lambda uow, parsed: funding.top_up(uow, settings, *parsed), render)
    if committed and isinstance(answer, tuple) and answer[1] == 201 and not answer[2]:  # not a replay
        funding.log_top_up(Actor("api_key", g.principal.api_key_id), committed[-1])
    return answer


@blueprint.get("/<name>")
@authenticated
def get_account(name):
    allow(g.principal.may_read_all())
    name = funding.parse_account_name(name, "name")
    return jsonify(funding.describe(name, funding.account(services().uow(), name)))


@blueprint.get("")
@authenticated
def list_accounts():
    allow(g.principal.may_read_all())
    page = funding.accounts_page(services().uow(), parse_limit(request.args.get("limit")), request.args.get("cursor"))
    items = [funding.describe(item["name"], funding.account(services().uow(), item["name"])) for item in page.items]
    return jsonify({"data": items, "next_cursor": page.next_cursor})
