"""An account's life over HTTP (admin only): freeze and unfreeze a wallet, close a user
(pipeline/lifecycle.py)."""
from __future__ import annotations

from apiflask import APIBlueprint
from flask import g, jsonify

from bootstrap import app_services as services
from pipeline import lifecycle, wallets
from pipeline.audit import Actor
from pipeline.errors import FieldError, ValidationFailed
from pipeline.money import MoneyError, currency
from pipeline.retrying import committed
from web.auth import allow, authenticated
from web.inputs import json_object
from web.wallets import render_wallet

blueprint = APIBlueprint("lifecycle", __name__, url_prefix="/api/v1/users", tag="Users and wallets")


def _currency(code: str) -> str:
    try:
        return currency(code, services().settings.supported_currencies).code
    except MoneyError as error:
        raise ValidationFailed("currency is not valid", [FieldError("currency", error.reason)])


def _set_frozen(user_id: str, code: str, frozen: bool):
    allow(g.principal.may_move_money())
    user_id, code = wallets.parse_user_id(user_id, "user_id"), _currency(code)
    reason = lifecycle.parse_reason(json_object())
    actor = Actor("api_key", g.principal.api_key_id)
    wallet = committed(services().uow, services().settings.transaction_attempts_max,
                       lambda uow: lifecycle.set_frozen(uow, user_id, code, frozen, reason, actor))
    return jsonify({**render_wallet(wallet), "user_id": user_id, "status_reason": reason})


@blueprint.post("/<user_id>/wallets/<code>/freeze")
@authenticated
def freeze(user_id, code):
    return _set_frozen(user_id, code, True)


@blueprint.post("/<user_id>/wallets/<code>/unfreeze")
@authenticated
def unfreeze(user_id, code):
    return _set_frozen(user_id, code, False)


@blueprint.delete("/<user_id>")
@authenticated
def close(user_id):
    allow(g.principal.may_move_money())
    user_id = wallets.parse_user_id(user_id, "user_id")
    actor = Actor("api_key", g.principal.api_key_id)
    committed(services().uow, services().settings.transaction_attempts_max,
              lambda uow: lifecycle.close_user(uow, user_id, actor))
    return "", 204
