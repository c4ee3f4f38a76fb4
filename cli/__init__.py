"""The command line, `flask --app api ...`: one module per command group.

- `db`: `db upgrade`, the schema;
- `keys`: `keys create|list|revoke`, API keys;
- `users`: `users seed-and-export`, users made with COPY and a CSV of credits for them; `users find`;
- `bulk_credit`: `bulk-credit upload|status|list|approve|reject|cancel|retry|reverse`;
- `transactions`: `transactions list`, journal entries found by reference, user, kind, time;
- `funding`: `funding list|show|top-up`, the funding accounts;
- `reconcile`: `reconcile [--full] [--csv FILE]`;
- `common`: what every command shares. Each command says first, on stderr, which database
  and Redis it uses; an unreachable server is one line naming it, exit status 1.

The commands call the same use cases as the HTTP API, in this process.
"""
from __future__ import annotations

from flask import Flask

from cli import bulk_credit, db, funding, keys, reconcile, transactions, users

#: Every command and group, as `flask --app api --help` lists them with Flask's own.
COMMANDS = (db.db, keys.keys, users.users, bulk_credit.bulk_credit, funding.funding, transactions.transactions,
            reconcile.reconcile)


def register(app: Flask) -> None:
    """Adds every command to `app`; the command objects are shared by every app made."""
    for command in COMMANDS:
        app.cli.add_command(command)
