"""A user's own page on the dashboard: balances, history, and a transfer, for a `user:<id>` key.

A key of scope `user:<id>` signs in like any other (web/dashboard_session.py) and lands on
`/dashboard/me/<id>`; it reaches nothing else of the dashboard (web/dashboard.py refuses
every other page with 403), and no other key reaches this page, nor this key another user's
(403). The page shows the user's wallets and history (pipeline/statements.py) and follows
them live: `/dashboard/me/<id>/events` is the API's event feed (`GET /api/v1/events?user_id=`,
web/events.py) for that user only, and each event reads the balances and the history again.

The transfer form is checked while the user types, by `/dashboard/me/<id>/transfer-check`
(pipeline/transfer_check.py): 200 with the fee and the total, or the API's problem+json
naming each field at fault. Sending it runs the API's transfer use case through the same
idempotent answer (pipeline/idempotency.py): each render of the page carries a new
`transfer_key`, sent as the request's Idempotency-Key, so a double click, or a form sent
twice, transfers once and replays the first answer.
"""
from __future__ import annotations

import re
import secrets

from flask import Blueprint, Response, flash, g, jsonify, redirect, render_template, request, url_for

from bootstrap import app_services as services
from pipeline import event_feed, statements, transfer_check, users, wallets
from pipeline.errors import FieldError, Rejected, ValidationFailed
from pipeline.idempotency import IdempotentRequest, answer_once, request_sha256
from pipeline.money import format_amount
from web import events
from web.dashboard_events import busy_events
from web.dashboard_payouts import described, require
from web.problems import problem_response, refusal_body
from web.wallets import render_history_item, render_transfer

#: History items per page of the user's own page.
HISTORY_PER_PAGE = 20
#: What a `transfer_key` may look like: what `new_transfer_key` makes, nothing a form could abuse.
TRANSFER_KEY_PATTERN = re.compile(r"dashboard-transfer-[A-Za-z0-9_-]{32}")
#: The request a dashboard transfer is stored as: the same as the API's, so the key means one
#: transfer whichever way it was sent.
TRANSFER_PATH = "/api/v1/wallet/transfer"
#: The form fields a transfer takes, as the API's body names them (reference is optional).
TRANSFER_FIELDS = ("to_user_id", "amount", "currency", "reference")
#: The dashboard endpoints a `user:` key may use; every other page answers it 403.
ENDPOINTS = frozenset({"dashboard.own_page", "dashboard.own_events", "dashboard.transfer_check",
                       "dashboard.send_transfer", "dashboard.sign_out", "dashboard.static", "dashboard.sign_in"})


def register(blueprint: Blueprint) -> None:
    """Adds this module's pages to the dashboard's blueprint (its sign-in and CSRF checks apply)."""
    blueprint.add_url_rule("/me/<user_id>", "own_page", own_page, methods=["GET"])
    blueprint.add_url_rule("/me/<user_id>/events", "own_events", own_events, methods=["GET"])
    blueprint.add_url_rule("/me/<user_id>/transfer-check", "transfer_check", transfer_check_view, methods=["GET"])
    blueprint.add_url_rule("/me/<user_id>/transfer", "send_transfer", send_transfer, methods=["POST"])


def new_transfer_key() -> str:
    return f"dashboard-transfer-{secrets.token_urlsafe(24)}"


def _own(user_id: str) -> str:
    """The user id of the page, if it is the signed-in key's own user; 403 for any other key."""
    user_id = wallets.parse_user_id(user_id, "user_id")
    require(g.principal.user_id == user_id, "This page belongs to another key: a user's key opens its own page only.")
    return user_id


def own_page(user_id):
    """The user's wallets, history (newest first, a page at a time) and the transfer form."""
    user_id = _own(user_id)
    settings = services().settings
    found = users.get_user(services().uow(), user_id)
    held = statements.wallets_of(services().uow(), user_id)
    page = statements.history(services().uow(), user_id, None, HISTORY_PER_PAGE, request.args.get("cursor"))
    currencies = sorted(settings.supported_currencies)
    chosen = held[0]["currency"] if held else settings.default_currency
    return render_template("dashboard/own.html", user=found, wallets=held, next_cursor=page.next_cursor,
                           history=[render_history_item(row, user_id) for row in page.items],
                           currencies=currencies, chosen_currency=chosen, transfer_key=new_transfer_key(),
                           fee_percent=f"{settings.transfer_fee_bps / 100:g}")


def own_events(user_id):
    """The user's events as Server-Sent Events: the API's feed of that user alone."""
    user_id = _own(user_id)
    settings = services().settings
    return events.feed_response(settings, event_feed.for_user(user_id, settings.events_user_shards),
                                lambda capacity: Response(busy_events(capacity), mimetype="text/event-stream"))


def _transfer_body(user_id: str, form) -> dict:
    """The API's transfer body from the form's fields: blank reference left out, text stripped."""
    body = {"from_user_id": user_id}
    for name in TRANSFER_FIELDS:
        value = (form.get(name) or "").strip()
        if value or name != "reference":
            body[name] = value
    return body


def transfer_check_view(user_id):
    """`?to_user_id=&amount=&currency=`: 200 `{amount, fee, total, available, currency}` (decimal
    strings), or the API's problem+json (422 validation_failed or insufficient_funds) naming
    each field at fault."""
    user_id = _own(user_id)
    try:
        checked = transfer_check.check_transfer(services().uow(), services().settings, user_id,
                                                _transfer_body(user_id, request.args))
    except Rejected as refusal:
        return problem_response(refusal_body(refusal))
    shown = lambda minor: format_amount(minor, checked.currency)  # noqa: E731
    return jsonify({"currency": checked.currency.code, "amount": shown(checked.amount), "fee": shown(checked.fee),
                    "total": shown(checked.total), "available": shown(checked.available)})


def _transfer_key(form) -> str:
    key = form.get("transfer_key", "")
    if not TRANSFER_KEY_PATTERN.fullmatch(key):
        raise ValidationFailed("the form is out of date: reload the page and fill it again",
                               [FieldError("transfer_key", "use the form as the dashboard renders it")])
    return key


def send_transfer(user_id):
    """Sends the form's transfer once per `transfer_key` by the API's use case, then shows the
    page again with what happened: sent, sent already (a second submission), or refused."""
    user_id = _own(user_id)
    settings = services().settings
    api_key_id = g.principal.api_key_id
    try:
        key = _transfer_key(request.form)
        body = _transfer_body(user_id, request.form)
        to_user_id = wallets.parse_user_id(body.get("to_user_id"), "to_user_id")
        money_request = wallets.parse_money_request(body, settings, f"api:{api_key_id}:{key}")
        once = IdempotentRequest(api_key_id, key, request_sha256("POST", TRANSFER_PATH, body))
        (status, answer), replayed = answer_once(
            services().uow, settings.transaction_attempts_max, once,
            lambda uow: wallets.transfer(uow, settings, user_id, to_user_id, money_request),
            lambda moved: (201, render_transfer(moved)),
            lambda refusal: (refusal.status, refusal_body(refusal)))
    except Rejected as refusal:
        flash(f"Nothing was sent: {described(refusal)}", "error")
        return redirect(url_for("dashboard.own_page", user_id=user_id))
    if status >= 400:
        flash(f"Nothing was sent: {answer['detail']} [{answer['code']}]", "error")
    elif replayed:
        flash("This transfer was sent already (the form was sent twice); it was sent once.", "info")
    else:
        flash(f"Sent {answer['amount']} {answer['currency']} to {answer['to_user_id']}, with a fee of "
              f"{answer['fee']} {answer['currency']}.", "info")
    return redirect(url_for("dashboard.own_page", user_id=user_id))
