"""Users, wallets, balances, history, and money movements."""
from __future__ import annotations

from datetime import timezone
from typing import Any

from apiflask import APIBlueprint
from flask import g, jsonify, request

from bootstrap import app_services as services
from pipeline import reversals, statements, users, wallets
from pipeline.audit import Actor
from pipeline.idempotency import IdempotentRequest, answer_once, request_sha256
from pipeline.money import MINOR_UNITS, Currency, MoneyError, currency, format_amount
from pipeline.errors import FieldError, ValidationFailed
from pipeline.text import REASON_LENGTH_MAX, parse_idempotency_key, parse_reason
from web.auth import allow, authenticated
from web.inputs import json_object
from web.problems import problem_response, refusal_body

blueprint = APIBlueprint("wallets", __name__, url_prefix="/api/v1", tag="Users and wallets")


def rfc3339(moment) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def money(minor: int, code: str) -> str:
    return format_amount(minor, Currency(code, MINOR_UNITS[code]))


def json_body() -> dict[str, Any]:
    """The body as a JSON object; 400 `malformed_request` for anything else (see web/inputs.py)."""
    return json_object()


def render_user(user) -> dict:
    return {"id": user.id, "name": user.name, "email": user.email, "external_id": user.external_id,
            "created_at": rfc3339(user.created_at),
            "closed_at": rfc3339(user.closed_at) if user.closed_at else None}


@blueprint.post("/users")
@authenticated
def create_user():
    allow(g.principal.may_operate())
    body = json_body()
    user = users.create_user(services().uow(), body.get("name"), body.get("email"), body.get("external_id"))
    return jsonify(render_user(user)), 201


def _readable_user(user_id: str) -> str:
    user_id = wallets.parse_user_id(user_id, "user_id")
    allow(g.principal.may_read_user(user_id))
    return user_id


@blueprint.get("/users/<user_id>")
@authenticated
def get_user(user_id):
    return jsonify(render_user(users.get_user(services().uow(), _readable_user(user_id))))


@blueprint.get("/users/<user_id>/wallets")
@authenticated
def user_wallets(user_id):
    rows = statements.wallets_of(services().uow(), _readable_user(user_id))
    return jsonify({"data": [render_wallet(row) for row in rows]})


def render_wallet(row: dict) -> dict:
    code = row["currency"]
    return {"currency": code, "balance": money(row["balance"], code), "held": money(row["held"], code),
            "available": money(row["balance"] - row["held"], code), "status": row["status"],
            "updated_at": rfc3339(row["updated_at"])}


def _query_currency() -> str:
    code = request.args.get("currency", services().settings.default_currency)
    try:
        return currency(code, services().settings.supported_currencies).code
    except MoneyError as error:
        raise ValidationFailed("currency is not valid", [FieldError("currency", error.reason)])


@blueprint.get("/users/<user_id>/balance")
@authenticated
def user_balance(user_id):
    user_id, code = _readable_user(user_id), _query_currency()
    balance, held = statements.balance_and_held_of(services().uow(), user_id, code)
    return jsonify({"user_id": user_id, "currency": code, "balance": money(balance, code),
                    "held": money(held, code), "available": money(balance - held, code)})


def render_history_item(row: dict, user_id: str) -> dict:
    debit = row["posted"] < 0
    transfer = row["kind"] == "transfer"
    counterparty = (row["to_user_id"] if debit else row["from_user_id"]) if transfer else None
    amount = row["amount"] if transfer else abs(row["posted"])
    return {
        "id": row["id"], "kind": row["kind"], "amount": money(amount, row["currency"]),
        "fee": money(row["fee"] if transfer and debit else 0, row["currency"]),
        "currency": row["currency"], "direction": "debit" if debit else "credit",
        "balance_after": money(row["balance_after"], row["currency"]),
        "counterparty_user_id": counterparty, "reference": row["reference"],
        "activity_id": row["activity_id"], "created_at": rfc3339(row["created_at"]),
    }


@blueprint.get("/users/<user_id>/transactions")
@authenticated
def user_history(user_id):
    user_id = _readable_user(user_id)
    code = _query_currency() if "currency" in request.args else None
    limit = statements.parse_limit(request.args.get("limit"))
    page = statements.history(services().uow(), user_id, code, limit, request.args.get("cursor"))
    return jsonify({"data": [render_history_item(row, user_id) for row in page.items],
                    "next_cursor": page.next_cursor})


def render_posting(posting: dict, code: str) -> dict:
    return {"id": posting["id"], "wallet_id": posting["wallet_id"], "user_id": posting["user_id"],
            "system_wallet": posting["system_name"], "amount": money(posting["amount"], code),
            "balance_after": money(posting["balance_after"], code)}


def render_transaction(view: statements.EntryView, viewer_user_id: str | None) -> dict:
    """The entry as its reader may see it. A `user:` key sees its own postings only, and of a
    movement it is not named in (a bulk chunk's entry, which credits many users) the amount
    that reached it rather than the whole chunk's."""
    entry, code = view.entry, view.entry["currency"]
    named = viewer_user_id is None or viewer_user_id in (entry["from_user_id"], entry["to_user_id"])
    amount = entry["amount"] if named else abs(view.postings_amount)
    return {
        "id": entry["id"], "kind": entry["kind"], "amount": money(amount, code),
        "fee": money(entry["fee"], code), "currency": code, "from_user_id": entry["from_user_id"],
        "to_user_id": entry["to_user_id"], "reference": entry["reference"], "activity_id": entry["activity_id"],
        "created_at": rfc3339(entry["created_at"]), "reverses": entry["reverses"],
        "reversed_by": entry["reversed_by"],
        "postings": [render_posting(posting, code) for posting in view.postings],
        "postings_total": view.postings_total, "postings_next_cursor": view.postings_next_cursor,
    }


@blueprint.get("/transactions/<entry_id>")
@authenticated
def get_transaction(entry_id):
    """Keys that read everything see every posting; a `user:` key only its own side, and a 404
    for an entry it has no posting in, as for one that does not exist."""
    viewer = g.principal.user_id
    view = statements.transaction(services().uow(), wallets.parse_user_id(entry_id, "id"), viewer,
                                  request.args.get("postings_cursor"))
    return jsonify(render_transaction(view, viewer))


def idempotent(command, act, render, status: int = 201, body_required: bool = True):
    """Validates first (a malformed request is refused without using up its key), then
    moves the money at most once per key; answers `status` with the rendered result.
    Without `body_required`, an empty body is `{}`."""
    key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
    body = json_object(required=body_required)
    parsed = command(body)
    once = IdempotentRequest(g.principal.api_key_id, key, request_sha256(request.method, request.path, body))
    (answered, answer), replayed = answer_once(
        services().uow, services().settings.transaction_attempts_max, once,
        lambda uow: act(uow, parsed), lambda moved: (status, render(moved)),
        lambda refusal: (refusal.status, refusal_body(refusal)))
    headers = {"Idempotency-Replayed": "true"} if replayed else {}
    if answered >= 400:
        return problem_response(answer, headers)
    return jsonify(answer), answered, headers


_idempotent = idempotent  # its name before bulk reversals used it too

def reason_in(body: dict, length_max: int = REASON_LENGTH_MAX) -> str:
    """The body's `reason`, stripped; ValidationFailed naming `reason` unless 1..length_max characters."""
    return parse_reason(body.get("reason"), length_max)


def _journal_key() -> str:
    """The request's key as its journal entry stores it, scoped by API key like the answer."""
    return f"api:{g.principal.api_key_id}:{request.headers['Idempotency-Key'].strip()}"


def _render_single(moved: wallets.Moved, kind: str) -> dict:
    entry = moved.entry
    user_id = entry.to_user_id if kind == "deposit" else entry.from_user_id
    user_posting = next(p for p in moved.postings if (p.amount > 0) == (kind == "deposit"))
    return {"id": entry.id, "kind": kind, "user_id": user_id, "amount": money(entry.amount, entry.currency),
            "currency": entry.currency, "reference": entry.reference,
            "balance_after": money(user_posting.balance_after, entry.currency), "created_at": rfc3339(moved.created_at)}


def _single_movement(kind: str, use_case):
    allow(g.principal.may_move_money())
    settings = services().settings

    def command(body):
        return wallets.parse_user_id(body.get("user_id"), "user_id"), wallets.parse_money_request(body, settings, _journal_key())

    return idempotent(command, lambda uow, parsed: use_case(uow, settings, *parsed),
                       lambda moved: _render_single(moved, kind))


@blueprint.post("/wallet/deposit")
@authenticated
def deposit():
    return _single_movement("deposit", wallets.deposit)


@blueprint.post("/wallet/withdraw")
@authenticated
def withdraw():
    return _single_movement("withdrawal", wallets.withdraw)


@blueprint.post("/wallet/transfer")
@authenticated
def transfer():
    settings = services().settings

    def command(body):
        from_user_id = wallets.parse_user_id(body.get("from_user_id"), "from_user_id")
        to_user_id = wallets.parse_user_id(body.get("to_user_id"), "to_user_id")
        allow(g.principal.may_transfer_from(from_user_id))
        return from_user_id, to_user_id, wallets.parse_money_request(body, settings, _journal_key())

    return idempotent(command, lambda uow, parsed: wallets.transfer(uow, settings, *parsed), render_transfer)


def render_transfer(moved: wallets.Moved) -> dict:
    """A transfer's answer, which the dashboard's transfer form stores and replays too."""
    entry = moved.entry
    return {"id": entry.id, "kind": "transfer", "from_user_id": entry.from_user_id,
            "to_user_id": entry.to_user_id, "amount": money(entry.amount, entry.currency),
            "fee": money(entry.fee, entry.currency), "currency": entry.currency,
            "reference": entry.reference, "created_at": rfc3339(moved.created_at)}


@blueprint.post("/transactions/<entry_id>/reverse")
@authenticated
def reverse_transaction(entry_id):
    """Undoes a deposit, withdrawal or transfer in full, fee included, in one journal entry.

    Admin only, like the ad-hoc movements it undoes: an operator moves no money by hand, and a
    `user:` key that could reverse its own transfer would take money back from its payee."""
    allow(g.principal.may_move_money())
    entry_id = wallets.parse_user_id(entry_id, "id")
    actor = Actor("api_key", g.principal.api_key_id)

    def command(body):
        return reason_in(body), _journal_key()

    def act(uow, parsed):
        reason, journal_key = parsed
        return reversals.reverse_movement(uow, entry_id=entry_id, actor=actor, reason=reason,
                                          idempotency_key=journal_key)

    def render(done: reversals.ReversedMovement) -> dict:
        entry, moved = done.moved.entry, done.moved
        return {"id": entry.id, "kind": "reversal", "reverses": entry.reverses_entry_id,
                "reversed_kind": done.reversed_kind, "from_user_id": entry.from_user_id,
                "to_user_id": entry.to_user_id, "amount": money(entry.amount, entry.currency),
                "fee": money(entry.fee, entry.currency), "currency": entry.currency, "reference": entry.reference,
                "created_at": rfc3339(moved.created_at)}

    return idempotent(command, act, render)
