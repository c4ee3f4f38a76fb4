"""Users on the dashboard: find one by id, email or external id, and read their page.

The lookup takes one text: a user id opens that user's page; anything else is looked up
as an email (whatever its case) and as an external id (exactly), by the same use case as
`GET /api/v1/users` (pipeline/search.py). One match opens its page, several are listed.
A user's page shows their wallets (balance; held and available where the ledger keeps
holds) and their history newest first (pipeline/statements.py), a page at a time.
"""
from __future__ import annotations

import uuid

from flask import Blueprint, redirect, render_template, request, url_for

from bootstrap import app_services as services
from pipeline import search, statements, users, wallets
from pipeline.errors import Rejected
from web.dashboard_payouts import described
from web.wallets import render_history_item

#: History items per page of a user.
HISTORY_PER_PAGE = 20
#: Users listed for one lookup, per kind of match (email, external id).
MATCHES_SHOWN_MAX = 20


def register(blueprint: Blueprint) -> None:
    """Adds this module's pages to the dashboard's blueprint (its sign-in and CSRF checks apply)."""
    blueprint.add_url_rule("/users", "user", lookup, methods=["GET"])
    blueprint.add_url_rule("/users/<user_id>", "user_page", user_page, methods=["GET"])


def _as_user_id(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def lookup():
    """`?q=` a user id, an email or an external id; `?user_id=` (older links) opens that user."""
    raw_user_id = request.args.get("user_id", "").strip()
    if raw_user_id:
        return redirect(url_for("dashboard.user_page", user_id=wallets.parse_user_id(raw_user_id, "user_id")))
    asked = request.args.get("q", "").strip()
    if not asked:
        return render_template("dashboard/users.html", asked="", matches=None)
    user_id = _as_user_id(asked)
    if user_id is not None:
        return redirect(url_for("dashboard.user_page", user_id=user_id))
    try:
        by_email, _ = search.users_page(services().uow(), asked, None, MATCHES_SHOWN_MAX, None)
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
                           history=[render_history_item(row, user_id) for row in page.items])
