"""Applies the Alembic migrations in `storage/migrations` to a database."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        # Two processes migrating at once (web and worker starting together) take turns.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7472010)")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
