"""Funding accounts over HTTP: top one up (admin), read one, list them."""
from __future__ import annotations

from apiflask import APIBlueprint
from flask import g, jsonify, request

from bootstrap import app_services as services
from pipeline import action_log, funding, wallets
from pipeline.audit import Actor
from pipeline.statements import parse_limit
from web.auth import allow, authenticated
from web.wallets import _idempotent, _journal_key, money, rfc3339

blueprint = APIBlueprint("funding", __name__, url_prefix="/api/v1/funding-accounts", tag="Funding accounts")


def render_account(name: str, balances: list[funding.Balance]) -> dict:
    return {"name": name, "balances": [{"currency": b.currency, "balance": money(b.balance, b.currency),
                                        "reserved": money(b.reserved, b.currency)} for b in balances]}


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
        entry = moved.entry
        return {"id": entry.id, "kind": entry.kind, "funding_account": entry.funding_account,
                "amount": money(entry.amount, entry.currency), "currency": entry.currency,
                "balance_after": money(moved.postings[-1].balance_after, entry.currency),
                "reference": entry.reference, "created_at": rfc3339(moved.created_at)}

    committed = []
    answer = _idempotent(command, lambda uow, parsed: funding.top_up(uow, settings, *parsed), render)
    if committed and isinstance(answer, tuple) and answer[1] == 201 and not answer[2]:  # not a replay
        entry = committed[-1].entry
        action_log.logged("funding.top_up", Actor("api_key", g.principal.api_key_id),
                          f"{entry.amount} minor units of {entry.currency} into {entry.funding_account}",
                          funding_account=entry.funding_account, journal_entry_id=entry.id, currency=entry.currency,
                          amount_minor=entry.amount)
    return answer


@blueprint.get("/<name>")
@authenticated
def get_account(name):
    allow(g.principal.may_read_all())
    name = funding.parse_account_name(name, "name")
    return jsonify(render_account(name, funding.account(services().uow(), name)))


@blueprint.get("")
@authenticated
def list_accounts():
    allow(g.principal.may_read_all())
    page = funding.accounts_page(services().uow(), parse_limit(request.args.get("limit")), request.args.get("cursor"))
    items = [render_account(item["name"], funding.account(services().uow(), item["name"])) for item in page.items]
    return jsonify({"data": items, "next_cursor": page.next_cursor})
