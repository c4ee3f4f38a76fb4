"""`keys create|list|revoke`: API keys, whose tokens are printed once and stored only as hashes."""
from __future__ import annotations

import json

import click

from bootstrap import app_services as services
from cli.common import Group
from pipeline.errors import Rejected
from pipeline.users import KEY_EXPIRY_DAYS_MAX, api_keys, create_api_key, revoke_api_key

keys = Group("keys", help="API keys.")

#: The columns of `keys list`, in order; `--json` gives the same names as fields.
KEY_COLUMNS = ("id", "scope", "label", "created_at", "expires_at", "last_used_at", "revoked_at")


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
        reason = refusal.errors[0].message if getattr(refusal, "errors", None) else ""
        raise click.BadParameter(f"{refusal.detail}: {reason}" if reason else refusal.detail,
                                 param_hint=f"--{field.replace('_', '-')}")


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
