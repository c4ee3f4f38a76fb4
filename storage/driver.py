"""The statements on the path of every money movement, run on the driver's cursor.

SQLAlchemy compiles each `text()` statement, wraps its parameters and its result and fires
its events: about 75 µs of CPU a statement, a fifth of a transfer's time in Python. These
few statements are plain SQL run by psycopg directly, on the connection (and so inside the
transaction) that the unit of work opened through SQLAlchemy. psycopg still prepares each
of them on the server after a few calls.

Listeners of the engine's cursor and error events see them as usual. Errors leave as
SQLAlchemy's wrappers (`DBAPIError` and its subclasses, with the driver's exception as
`orig`), and a lost connection is invalidated, exactly as through SQLAlchemy.
"""
from __future__ import annotations

import re
from typing import Any

import psycopg
from sqlalchemy import Connection

_NAMED_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def statement(sql: str) -> str:
    """The same SQL with SQLAlchemy's `:name` parameters in psycopg's `%(name)s` style."""
    assert "%" not in sql, "a literal % would need escaping"
    return _NAMED_PARAMETER.sub(r"%(\1)s", sql)


def execute_then_commit(connection: Connection, sql: str, parameters: dict[str, Any]) -> None:
    """Runs `sql` (from `statement`) and COMMIT in one round trip: the parameters are bound
    here (psycopg's ClientCursor quotes them) and both statements go as one simple query,
    which PostgreSQL runs in order and stops at the first error (the transaction is then
    rolled back, as a failed COMMIT leaves it). Errors leave as from `execute`.
    `connection`'s transaction is over afterwards; its own commit() then finds nothing to do."""
    bound = psycopg.ClientCursor(connection.connection.driver_connection).mogrify(sql, parameters)
    execute(connection, f"{bound};\nCOMMIT", None)


def execute(connection: Connection, sql: str, parameters: dict[str, Any] | None) -> psycopg.Cursor:
    """Runs `sql` (from `statement`) in `connection`'s current transaction; the cursor holds the rows."""
    cursor = connection.connection.driver_connection.cursor()
    # The engine's cursor listeners (the slow-statement log, say) see these statements too.
    dispatch = connection.dispatch
    if dispatch.before_cursor_execute:
        dispatch.before_cursor_execute(connection, cursor, sql, parameters, None, False)
    try:
        cursor.execute(sql, parameters)
    except psycopg.Error as error:
        # What SQLAlchemy does with an error of its own statements: wrap it in a DBAPIError
        # subclass, fire handle_error, and invalidate the connection (and the pool) when the
        # server is gone. Private, but stable across SQLAlchemy 2 (pinned in requirements.txt).
        connection._handle_dbapi_exception(error, sql, parameters, cursor, None)
        raise AssertionError("unreachable: _handle_dbapi_exception always raises")
    if dispatch.after_cursor_execute:
        dispatch.after_cursor_execute(connection, cursor, sql, parameters, None, False)
    return cursor
