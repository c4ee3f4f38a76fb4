"""`transactions list`: journal entries found by reference, activity, user, kind and time."""
from __future__ import annotations

import click

from bootstrap import app_services as services
from cli.common import CURSOR, LIMIT, Group, print_page, refused
from pipeline import search
from pipeline.errors import Rejected
from pipeline.statements import parse_limit

transactions = Group("transactions", help="Journal entries.")


@transactions.command("list")
@click.option("--reference", default=None, help="The entry's own reference, exactly.")
@click.option("--activity-id", default=None, help="The bulk activity that wrote it.")
@click.option("--user-id", default=None, help="A user with a posting in it.")
@click.option("--kind", default=None, help="deposit, withdrawal, transfer, bulk_credit, funding_top_up, ...")
@click.option("--created-after", default=None, help="RFC 3339, e.g. 2026-12-01T00:00:00Z (inclusive).")
@click.option("--created-before", default=None, help="RFC 3339 (exclusive).")
@LIMIT
@CURSOR
def transactions_list(reference, activity_id, user_id, kind, created_after, created_before, limit, cursor):
    """Journal entries newest first (GET /api/v1/transactions): one JSON object per line."""
    from web.inputs import rfc3339_field
    from web.search import render_entry

    try:
        found, next_cursor = search.entries_page(
            services().uow(), reference, activity_id, user_id, kind, rfc3339_field(created_after, "created_after"),
            rfc3339_field(created_before, "created_before"), parse_limit(limit), cursor)
    except Rejected as refusal:
        refused(refusal)
    print_page([render_entry(entry) for entry in found], next_cursor)
