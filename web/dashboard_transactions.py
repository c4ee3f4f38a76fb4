"""Transactions on the dashboard: find journal entries by reference, and narrow them by kind and user.

The same use case as `GET /api/v1/transactions` (pipeline/search.py `entries_page`), rendered
as the API renders an entry (web/search.py `render_entry`): newest first, a page at a time,
paged by the use case's cursor. A bad filter (an unknown kind, a user id that is no uuid, a
cursor not made by a previous page) shows the refusal's message on the page with its status
(422), never a 500. Admin, operator and approver keys read it; a `user:` key is refused 403
like on every page but its own (web/dashboard.py).
"""
from __future__ import annotations

from flask import Blueprint, render_template, request

from bootstrap import app_services as services
from pipeline import search
from pipeline.errors import Rejected
from web.dashboard_payouts import described
from web.search import render_entry

#: Journal entries shown per page.
TRANSACTIONS_PER_PAGE = 20
#: The form's fields, as the API's query parameters name them.
FILTER_FIELDS = ("reference", "kind", "user_id")


def register(blueprint: Blueprint) -> None:
    """Adds this module's page to the dashboard's blueprint (its sign-in and CSRF checks apply)."""
    blueprint.add_url_rule("/transactions", "transactions", transactions, methods=["GET"])


def transactions():
    """`?reference=` (exactly), `?kind=`, `?user_id=` and `?cursor=`: the matching entries newest
    first, or the form alone when no filter is given; a refusal is shown with its status."""
    asked = {field: request.args.get(field, "") for field in FILTER_FIELDS}
    asked["user_id"] = asked["user_id"].strip()
    context = {"asked": asked, "kinds": search.ENTRY_KINDS, "entries": None, "next_cursor": None}
    if not any(asked.values()):
        return render_template("dashboard/transactions.html", **context)
    try:
        found, next_cursor = search.entries_page(
            services().uow(), asked["reference"] or None, None, asked["user_id"] or None, asked["kind"] or None,
            None, None, TRANSACTIONS_PER_PAGE, request.args.get("cursor") or None)
    except Rejected as refusal:
        return render_template("dashboard/transactions.html", **context, refusal=described(refusal)), refusal.status
    return render_template("dashboard/transactions.html", **{
        **context, "entries": [render_entry(entry) for entry in found], "next_cursor": next_cursor})
