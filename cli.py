"""Command line: `flask --app api db upgrade`, `keys create|list|revoke`, and the operator's commands."""
from __future__ import annotations

import functools
import json
import os

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.engine import make_url
from psycopg.errors import UndefinedColumn, UndefinedTable
from sqlalchemy.exc import OperationalError, ProgrammingError

from bootstrap import app_services as services
import cli_bulk
from pipeline.errors import Rejected, TransientFault
from pipeline.users import KEY_EXPIRY_DAYS_MAX, api_keys, create_api_key, revoke_api_key
from storage.migrate import upgrade

db = AppGroup("db", help="The database schema.")
keys = AppGroup("keys", help="API keys.")


@db.command("upgrade")
def db_upgrade():
    """Applies every migration not yet applied."""
    upgrade(services().engine)
    click.echo("database is up to date", err=True)


@keys.command("create")
@click.option("--scope", required=True, help="admin, operator, approver or user:<uuid>")
@click.option("--label", default=None, help="What the key is for, shown by `keys list`.")
@click.option("--expires-in", "expires_in", default=None, type=int, metavar="DAYS",
              help=f"Stops working after DAYS (1..{KEY_EXPIRY_DAYS_MAX}); default: never.")
def keys_create(scope, label, expires_in):
    """Prints a new token once; only its hash is stored."""
    try:
        click.echo(create_api_key(services().uow(), scope, label, expires_in))
    except Rejected as refusal:
        field = refusal.errors[0].field if getattr(refusal, "errors", None) else "scope"
        raise click.BadParameter(refusal.detail, param_hint=f"--{field.replace('_', '-')}")


KEY_COLUMNS = ("id", "scope", "label", "created_at", "expires_at", "last_used_at", "revoked_at")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
def keys_list(as_json):
    """Every key, revoked and expired ones too, oldest first; never a token."""
    moment = lambda value: value.isoformat().replace("+00:00", "Z") if value else None  # noqa: E731
    rows = [{"id": key.id, "scope": key.scope, "label": key.label, "created_at": moment(key.created_at),
             "expires_at": moment(key.expires_at), "last_used_at": moment(key.last_used_at),
             "revoked_at": moment(key.revoked_at)} for key in api_keys(services().uow())]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    click.echo("\t".join(KEY_COLUMNS))
    for row in rows:
        click.echo("\t".join("-" if row[name] is None else str(row[name]) for name in KEY_COLUMNS))


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id):
    """Revokes a key: every process refuses it within a minute; its history stays."""
    try:
        key = revoke_api_key(services().uow(), key_id)
    except Rejected as refusal:
        raise click.ClickException(f"{refusal.code}: {refusal.detail}")
    click.echo(f"revoked key {key.id} ({key.scope}) at {key.revoked_at.isoformat()}", err=True)


def register(app: Flask) -> None:
    app.cli.add_command(db)
    app.cli.add_command(keys)
    cli_bulk.register(app)
    app.cli.add_command(reconcile_command)
    for command in (db, keys, cli_bulk.users, cli_bulk.bulk_credit, reconcile_command):
        for each in getattr(command, "commands", {}).values() or [command]:
            if not getattr(each.callback, "plainly", False):  # the commands are shared by every app made
                each.callback = plainly(each.callback)


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


@click.command("reconcile")
@click.option("--full", is_flag=True, help="Check everything, not only what changed since the last clean run.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the mismatches to this CSV file.")
def reconcile_command(full, csv_path):
    """Runs a reconciliation here and now; exits with status 1 when anything mismatches."""
    from pipeline import reconciliation

    from alerting import reconciliation_alert

    alert = reconciliation_alert(services().settings.alert_webhook_url)
    run = reconciliation.run(services().uow(), reconciliation.start(services().uow(), full), alert)
    click.echo(f"reconciliation {run['id']}: {run['status']}, {run['wallets_checked']} wallets checked,"
               f" {run['mismatch_count']} mismatches")
    table = reconciliation.mismatch_table(run["mismatches"])
    if not table.empty:
        click.echo(table.to_string(index=False))
    if csv_path:
        table.to_csv(csv_path, index=False)
    raise SystemExit(1 if run["mismatch_count"] else 0)
