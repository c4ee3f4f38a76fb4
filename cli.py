"""Command line: `flask --app api db upgrade`, `keys create`, and the operator's commands."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from bootstrap import app_services as services
import cli_bulk
from pipeline.errors import Rejected
from pipeline.users import create_api_key
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
def keys_create(scope):
    """Prints a new token once; only its hash is stored."""
    try:
        click.echo(create_api_key(services().uow(), scope))
    except Rejected as refusal:
        raise click.BadParameter(refusal.detail, param_hint="--scope")


def register(app: Flask) -> None:
    app.cli.add_command(db)
    app.cli.add_command(keys)
    cli_bulk.register(app)
    app.cli.add_command(reconcile_command)


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
