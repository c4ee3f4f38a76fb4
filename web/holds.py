"""Holds over HTTP: place, capture, void and read one (pipeline/holds.py).

Who may: an admin places, captures and voids holds (they stand for withdrawals to outside
systems and card authorisations, which only an admin's integration makes, like withdraw);
an admin, operator or approver reads any hold, and a `user:` key the holds on its own
wallets (any other answers 404, as for a hold that does not exist).
"""
from __future__ import annotations

from apiflask import APIBlueprint
from flask import g, jsonify

from bootstrap import app_services as services
from pipeline import holds, wallets
from pipeline.audit import Actor
from pipeline.errors import NotFound
from pipeline.retrying import committed
from web.auth import allow, authenticated
from web.wallets import _idempotent, _journal_key, money, rfc3339

blueprint = APIBlueprint("holds", __name__, url_prefix="/api/v1/wallet/holds", tag="Holds")


def _actor() -> Actor:
    return Actor("api_key", g.principal.api_key_id)


def render_hold(hold: holds.Hold) -> dict:
    code = hold.currency
    return {"id": hold.id, "status": hold.status, "user_id": hold.user_id, "amount": money(hold.amount, code),
            "currency": code, "reference": hold.reference, "expires_at": rfc3339(hold.expires_at),
            "created_at": rfc3339(hold.created_at),
            "decided_at": rfc3339(hold.decided_at) if hold.decided_at else None,
            "captured_amount": money(hold.captured_amount, code) if hold.captured_amount else None,
            "to_user_id": hold.to_user_id, "transaction_id": hold.journal_entry_id}


def render_capture(captured: holds.Captured) -> dict:
    hold, moved = captured.hold, captured.moved
    entry, code = moved.entry, moved.entry.currency
    payer = next(posting for posting in moved.postings if posting.amount < 0)
    return {"id": entry.id, "kind": entry.kind, "hold_id": hold.id, "user_id": hold.user_id,
            "from_user_id": hold.user_id, "to_user_id": entry.to_user_id, "amount": money(entry.amount, code),
            "fee": money(0, code), "released": money(hold.amount - entry.amount, code), "currency": code,
            "reference": entry.reference, "balance_after": money(payer.balance_after, code),
            "created_at": rfc3339(moved.created_at)}


@blueprint.post("")
@authenticated
def place():
    allow(g.principal.may_move_money())
    settings, actor = services().settings, _actor()
    return _idempotent(lambda body: holds.parse_hold_request(body, settings, _journal_key()),
                       lambda uow, request: holds.place(uow, request, actor), render_hold)


@blueprint.post("/<hold_id>/capture")
@authenticated
def capture(hold_id):
    allow(g.principal.may_move_money())
    hold_id = wallets.parse_user_id(hold_id, "hold_id")
    settings, actor = services().settings, _actor()
    return _idempotent(holds.parse_capture_request,
                       lambda uow, parsed: holds.capture(uow, settings, hold_id, *parsed, actor), render_capture,
                       body_required=False)


@blueprint.post("/<hold_id>/void")
@authenticated
def void(hold_id):
    allow(g.principal.may_move_money())
    hold_id = wallets.parse_user_id(hold_id, "hold_id")
    actor = _actor()
    hold = committed(services().uow, services().settings.transaction_attempts_max,
                     lambda uow: holds.void(uow, hold_id, actor))
    return jsonify(render_hold(hold))


@blueprint.get("/<hold_id>")
@authenticated
def get_hold(hold_id):
    hold = holds.get(services().uow(), wallets.parse_user_id(hold_id, "hold_id"))
    if not g.principal.may_read_user(hold.user_id):
        raise NotFound(f"no hold {hold.id}")
    return jsonify(render_hold(hold))
