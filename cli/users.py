"""`users seed-and-export`: users made with COPY, and the CSV of credits for them; `users find`."""
from __future__ import annotations

import sys
import time

import click

from bootstrap import app_services as services
from cli.common import CURSOR, LIMIT, Group, print_page, refused
from pipeline import search
from pipeline.statements import parse_limit
from pipeline.bulk.seeding import seed_and_export
from pipeline.errors import Rejected

users = Group("users", help="Users.")


@users.command("seed-and-export")
@click.option("--total", default=100_000, show_default=True, type=click.IntRange(1, 10_000_000),
              help="How many users to create.")
@click.option("--currency", "currency_code", default=None, help="Default: DEFAULT_CURRENCY.")
@click.option("--amount", default="100.00", show_default=True, help="Each user's credit in the CSV.")
@click.option("--out", "out_path", default="exports/users_wallet_seed.csv", show_default=True,
              type=click.Path(dir_okay=False))
def seed_users(total, currency_code, amount, out_path):
    """Creates users with COPY and writes the CSV of credits for them."""
    settings = services().settings
    started = time.monotonic()
    try:
        with click.progressbar(length=total, label="creating users", file=sys.stderr) as bar:
            seed_and_export(services().uow(), settings, total, amount, currency_code or settings.default_currency,
                            out_path, bar.update)
    except Rejected as refusal:
        refused(refusal)
    except OSError as error:  # the folder is a file, or not writable: checked before the users are committed
        raise click.ClickException(f"cannot write {out_path}: {error.strerror or error}")
    click.echo(f"created {total} users in {time.monotonic() - started:.1f} s; wrote {out_path}; topped up the"
               f" default funding account by {total} x {amount}", err=True)
    click.echo(out_path)


@users.command("find")
@click.option("--email", default=None, help="The user's email, whatever its case.")
@click.option("--external-id", "external_id", default=None, help="The user's external id, exactly.")
@LIMIT
@CURSOR
def users_find(email, external_id, limit, cursor):
    """Users newest first, narrowed by email or external id (GET /api/v1/users): one JSON per line."""
    from web.wallets import render_user

    try:
        found, next_cursor = search.users_page(services().uow(), email, external_id, parse_limit(limit), cursor)
    except Rejected as refusal:
        refused(refusal)
    print_page([render_user(user) for user in found], next_cursor)
