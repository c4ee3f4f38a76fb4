"""Engines are made on demand from settings; nothing connects at import time."""
from __future__ import annotations

import psycopg
from psycopg import pq
from sqlalchemy import Engine, create_engine, event, exc

from pipeline.config import Settings
from telemetry import slow_queries

#: Execution options psycopg refuses to apply inside a transaction.
SESSION_OPTIONS = frozenset({"isolation_level", "postgresql_readonly", "postgresql_deferrable"})
#: Where a pooled connection records the lock_timeout its session starts with, in milliseconds.
LOCK_TIMEOUT_INFO_KEY = "lock_timeout_ms"


def make_engine(settings: Settings, pool_size: int | None = None) -> Engine:
    """A pool of connections whose sessions wait at most `settings.lock_timeout_ms` for a lock.

    The timeout is a connection option rather than a `SET LOCAL` in every transaction, which
    cost a round trip per request. A connection lent by the pool has its transaction begun
    already: the BEGIN is also the check that the connection still works (see `begin_as_ping`).
    """
    engine = create_engine(
        settings.database_url,
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=0,
        pool_timeout=10,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"options": f"-c lock_timeout={int(settings.lock_timeout_ms)}"},
    )

    @event.listens_for(engine, "connect")
    def remember_lock_timeout(dbapi_connection, connection_record):
        connection_record.info[LOCK_TIMEOUT_INFO_KEY] = int(settings.lock_timeout_ms)

    event.listen(engine, "checkout", begin_as_ping)
    event.listen(engine, "set_connection_execution_options", end_unused_transaction)
    slow_queries.watch(engine, settings.slow_query_ms)
    return engine


def begin_as_ping(dbapi_connection, connection_record, connection_proxy) -> None:
    """Begins the transaction of a connection the pool lends, and so checks that it still works.

    SQLAlchemy's pre-ping costs a round trip of its own on every checkout (measured: about a
    fifth of a transfer's time on a busy machine), and psycopg then sends BEGIN before the first
    statement, another. Here the BEGIN is sent at once and is the ping: psycopg sees the
    transaction open and sends no BEGIN of its own; the commit, or the pool's rollback when the
    connection is returned, ends it as before. A BEGIN that fails means the server went away
    (a restart): like a failed pre-ping it invalidates the whole pool, and SQLAlchemy lends a
    new connection instead, so no request sees the error.
    """
    pgconn = dbapi_connection.pgconn
    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        raise exc.InvalidatePoolError(f"a pooled connection was lent in state {pgconn.transaction_status.name}")
    try:
        result = pgconn.exec_(b"BEGIN")
    except psycopg.OperationalError as error:
        raise exc.InvalidatePoolError(f"BEGIN failed: {error}") from error
    if result.status != pq.ExecStatus.COMMAND_OK:
        message = (result.error_message or pgconn.error_message).decode(errors="replace").strip()
        raise exc.InvalidatePoolError(f"BEGIN failed: {message}")


def end_unused_transaction(connection, options) -> None:
    """Rolls back the transaction `begin_as_ping` opened when the caller asks for another
    isolation level (AUTOCOMMIT for a VACUUM, say) before running anything: psycopg changes
    those only outside a transaction. SQLAlchemy calls this before it applies the options."""
    if SESSION_OPTIONS.isdisjoint(options) or connection.in_transaction():
        return
    dbapi_connection = connection.connection.dbapi_connection
    if dbapi_connection.pgconn.transaction_status == pq.TransactionStatus.INTRANS:
        dbapi_connection.rollback()
