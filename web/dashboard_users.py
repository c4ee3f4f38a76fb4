"""Users on the dashboard: find one by id, email or external id, and read their page.

The lookup takes one text: a user id opens that user's page; anything else is looked up
as an email (whatever its case) and as an external id (exactly), by the same use case as
`GET /api/v1/users` (pipeline/search.py). One match opens its page, several are listed.
A user's page shows their wallets (balance, held, available) and their history newest
first (pipeline/statements.py), a page at a time. Admin keys freeze and unfreeze a wallet
there, with a reason, by the API's use case (pipeline/lifecycle.py); a second click finds
the wallet frozen already and says so (invalid_state), so it changes nothing twice.
"""
from __future__ import annotations

import uuid

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from bootstrap import app_services as services
from pipeline import lifecycle, search, statements, users, wallets
from pipeline.audit import Actor
from pipeline.errors import NotFound, Rejected
from pipeline.money import MoneyError, currency
from pipeline.retrying import committed
from web.dashboard_payouts import described, require
from web.wallets import render_history_item

#: History items per page of a user.
HISTORY_PER_PAGE = 20
#: Users listed for one lookup, per kind of match (email, external id).
MATCHES_SHOWN_MAX = 20


def register(blueprint: Blueprint) -> None:
    """Adds this module's pages to the dashboard's blueprint (its sign-in and CSRF checks apply)."""
    blueprint.add_url_rule("/users", "user", lookup, methods=["GET"])
    blueprint.add_url_rule("/users/<user_id>", "user_page", user_page, methods=["GET"])
    blueprint.add_url_rule("/users/<user_id>/wallets/<code>/freeze", "freeze_wallet", freeze_wallet, methods=["POST"])
    blueprint.add_url_rule("/users/<user_id>/wallets/<code>/unfreeze", "unfreeze_wallet", unfreeze_wallet,
                           methods=["POST"])


def _as_user_id(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def _exists(user_id: str) -> bool:
    try:
        return users.get_user(services().uow(), user_id) is not None
    except NotFound:
        return False


def lookup():
    """`?q=` a user id, an email or an external id; `?user_id=` (older links) opens that user."""
    raw_user_id = request.args.get("user_id", "").strip()
    if raw_user_id:
        return redirect(url_for("dashboard.user_page", user_id=wallets.parse_user_id(raw_user_id, "user_id")))
    asked = request.args.get("q", "").strip()
    if not asked:
        return render_template("dashboard/users.html", asked="", matches=None)
    user_id = _as_user_id(asked)
    if user_id is not None and _exists(user_id):
        return redirect(url_for("dashboard.user_page", user_id=user_id))
    try:  # a uuid that is no user's id may be someone's external id; only a text with @ is an email
        by_email = search.users_page(services().uow(), asked, None, MATCHES_SHOWN_MAX, None)[0] if "@" in asked else []
        by_external_id, _ = search.users_page(services().uow(), None, asked, MATCHES_SHOWN_MAX, None)
    except Rejected as refusal:
        return render_template("dashboard/users.html", asked=asked, matches=None,
                               refusal=described(refusal)), refusal.status
    matches = list({user.id: user for user in [*by_email, *by_external_id]}.values())
    if len(matches) == 1:
        return redirect(url_for("dashboard.user_page", user_id=matches[0].id))
    return render_template("dashboard/users.html", asked=asked, matches=matches,
                           more=len(by_email) == MATCHES_SHOWN_MAX or len(by_external_id) == MATCHES_SHOWN_MAX)


def user_page(user_id):
    """The user, their wallets and their history; 404 for an unknown user."""
    user_id = wallets.parse_user_id(user_id, "user_id")
    found = users.get_user(services().uow(), user_id)
    held = statements.wallets_of(services().uow(), user_id)
    page = statements.history(services().uow(), user_id, None, HISTORY_PER_PAGE, request.args.get("cursor"))
    return render_template("dashboard/user.html", user=found, wallets=held, next_cursor=page.next_cursor,
                           history=[render_history_item(row, user_id) for row in page.items],
                           wallet_actions=g.principal.may_move_money())


def freeze_wallet(user_id, code):
    return _set_frozen(user_id, code, True)


def unfreeze_wallet(user_id, code):
    return _set_frozen(user_id, code, False)


def _set_frozen(user_id: str, code: str, frozen: bool):
    """Freezes or unfreezes one wallet (admin keys) by the API's use case (pipeline/lifecycle.py);
    a refusal (frozen already, no such wallet, a closed user) comes back on the user's page."""
    user_id = wallets.parse_user_id(user_id, "user_id")
    require(g.principal.may_move_money(), "Only a key of scope admin can freeze or unfreeze a wallet.")
    users.get_user(services().uow(), user_id)  # an unknown user is a 404 page; a missing wallet, a message
    verb = "frozen" if frozen else "unfrozen"
    try:
        code = currency(code, services().settings.supported_currencies).code
        reason = lifecycle.parse_reason({"reason": request.form.get("reason", "")})
        actor = Actor("api_key", g.principal.api_key_id)
        committed(services().uow, services().settings.transaction_attempts_max,
                  lambda uow: lifecycle.set_frozen(uow, user_id, code, frozen, reason, actor))
    except MoneyError as error:
        flash(f"Nothing was {verb}: currency: {error.reason} [validation_failed]", "error")
    except Rejected as refusal:
        flash(f"Nothing was {verb}: {described(refusal)}", "error")
    else:
        flash(f"The {code} wallet is {verb}" + (": it takes no money in or out until it is unfrozen." if frozen
                                                 else ": it takes money in and out again."), "info")
    return redirect(url_for("dashboard.user_page", user_id=user_id))
