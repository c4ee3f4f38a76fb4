"""Engines are made on demand from settings; nothing connects at import time."""
from __future__ import annotations

from sqlalchemy import Engine, create_engine, event

from pipeline.config import Settings
from telemetry import slow_queries

#: Where a pooled connection records the lock_timeout its session starts with, in milliseconds.
LOCK_TIMEOUT_INFO_KEY = "lock_timeout_ms"


def make_engine(settings: Settings, pool_size: int | None = None) -> Engine:
    """A pool of connections whose sessions wait at most `settings.lock_timeout_ms` for a lock.

    The timeout is a connection option rather than a `SET LOCAL` in every transaction, which
    cost a round trip per request. The pool still pings a connection before lending it, so a
    restart of PostgreSQL costs no request an error.
    """
    engine = create_engine(
        settings.database_url,
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=0,
        pool_timeout=10,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"options": f"-c lock_timeout={int(settings.lock_timeout_ms)}"},
    )

    @event.listens_for(engine, "connect")
    def remember_lock_timeout(dbapi_connection, connection_record):
        connection_record.info[LOCK_TIMEOUT_INFO_KEY] = int(settings.lock_timeout_ms)

    slow_queries.watch(engine, settings.slow_query_ms)
    return engine
