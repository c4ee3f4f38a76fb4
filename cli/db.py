"""`db upgrade`: the database schema."""
from __future__ import annotations

import click

from bootstrap import app_services as services
from cli.common import Group
from storage.migrate import upgrade

db = Group("db", help="The database schema.")


@db.command("upgrade")
def db_upgrade():
    """Applies every migration not yet applied."""
    upgrade(services().engine)
    click.echo("database is up to date", err=True)
