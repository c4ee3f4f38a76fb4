"""What every command shares: the statement of which database and Redis it uses, one line
instead of a traceback when a server cannot be reached, refusals as one line, and the
`--token` option that names the acting API key.

Exit statuses (API.md, Command line): 0 done; 1 refused, a server unreachable or anything
else wrong (click's ClickException); 2 a usage error (click's own), and `--wait`'s 2 for a
PARTIALLY_COMPLETED file (cli/bulk_credit.py).
"""
from __future__ import annotations

import functools
import json
import os

import click
from flask.cli import AppGroup, with_appcontext
from psycopg.errors import UndefinedColumn, UndefinedTable
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from bootstrap import app_services as services
from pipeline.access import Principal
from pipeline.bulk.ports import Actor
from pipeline.errors import Rejected, TransientFault, ValidationFailed
from pipeline.text import parse_reason
from pipeline.users import find_api_key


def _where(url: str, name: str) -> str:
    """`url` without its password, and where it came from."""
    source = ("from the environment or .flaskenv" if os.environ.get(name, "").strip()
              else f"the default: {name} is not set")
    return f"{make_url(url).render_as_string(hide_password=True)} ({source})"


def plainly(callback):
    """Runs a command after saying on stderr which database and Redis it uses; a server that
    cannot be reached is one line naming it (exit status 1), not a traceback."""
    @functools.wraps(callback)
    @with_appcontext
    def run(*args, **kwargs):
        settings = services().settings
        click.echo(f"database {_where(settings.database_url, 'DATABASE_URL')};"
                   f" redis {_where(settings.redis_url, 'REDIS_URL')}", err=True)
        try:
            return callback(*args, **kwargs)
        except (OperationalError, TransientFault) as error:
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise click.ClickException(f"cannot reach PostgreSQL at {make_url(settings.database_url).host}:"
                                       f"{make_url(settings.database_url).port} (DATABASE_URL): {reason}")
        except ProgrammingError as error:
            if not isinstance(error.orig, (UndefinedTable, UndefinedColumn)):
                raise
            raise click.ClickException(f"the database at {make_url(settings.database_url).host}:"
                                       f"{make_url(settings.database_url).port} is not migrated to this version:"
                                       " run `flask --app api db upgrade` (or `make migrate`)")
        except RedisConnectionError as error:
            raise click.ClickException(f"cannot reach Redis at {settings.redis_url} (REDIS_URL): {error}")
    run.plainly = True
    return run


class Group(AppGroup):
    """A command group whose every command runs `plainly` (in the app context, as AppGroup's)."""

    def command(self, *args, **kwargs):
        kwargs["with_appcontext"] = False  # plainly pushes the app context itself
        register = super().command(*args, **kwargs)
        return lambda callback: register(plainly(callback))


def refused(refusal: Rejected):
    """A use case's refusal as one line, `code: detail (field: reason; ...)`, exit status 1."""
    fields = "; ".join(f"{error.field}: {error.message}" for error in getattr(refusal, "errors", None) or ())
    raise click.ClickException(f"{refusal.code}: {refusal.detail}" + (f" ({fields})" if fields else ""))


def _reason(ctx, param, value):
    try:
        return parse_reason(value)
    except ValidationFailed as refusal:
        raise click.BadParameter(refusal.errors[0].message)


def reason_option(help: str):
    """`--reason`, required and checked as the API checks it (1 to 500 characters once stripped)."""
    return click.option("--reason", required=True, callback=_reason, help=help)


TOKEN = click.option("--token", envvar="WALLET_TOKEN", default=None,
                     help="An API key that acts (default: $WALLET_TOKEN); it is recorded as the actor.")


def actor_of(token: str | None, needs: str) -> Actor:
    """The API key behind `token` as the actor, or the command line without one. `needs`
    names the Principal check the key must pass. Raises ClickException for a bad token."""
    if token is None:
        return Actor("command_line")
    found = find_api_key(services().uow(), token)
    if found is None:
        raise click.ClickException("the token is not a valid API key, or it is revoked or expired (WALLET_TOKEN or --token)")
    if not getattr(Principal(found.id, found.scope), needs)():
        raise click.ClickException(f"forbidden: a key of scope {found.scope} may not do this")
    return Actor("api_key", found.id)


#: The options every list command takes, as the API's `limit` and `cursor` query parameters.
LIMIT = click.option("--limit", default=None, help="Items per page, 1 to 100 (default 20).")
CURSOR = click.option("--cursor", default=None, help="The cursor the previous page printed, for the next page.")


def print_page(items: list[dict], next_cursor: str | None) -> None:
    """A page of a list as the API answers it: one JSON object per line on stdout, and on stderr
    how to read the next page, so that a script reads stdout alone."""
    for item in items:
        click.echo(json.dumps(item))
    click.echo(f"{len(items)} shown; " + (f"next page: --cursor {next_cursor}" if next_cursor else "no more"),
               err=True)
