"""Statements slower than SLOW_QUERY_MS: counted by first keyword, and logged with their text.

The statement is logged as SQLAlchemy sends it, with its placeholders and never its
parameters, which can hold emails, names and amounts. COPY through the raw driver
connection does not pass through these events.
"""
from __future__ import annotations

import logging
import time

from sqlalchemy import Engine, event

from telemetry.metrics import SLOW_STATEMENTS

log = logging.getLogger("wallet.slow_query")

#: Where a connection keeps the start times of its statements in flight.
_STARTS_KEY = "telemetry_statement_starts"
#: Labels a statement may be counted under; anything else counts as "other".
OPERATIONS = frozenset({"select", "insert", "update", "delete", "with", "copy", "set", "lock", "begin", "commit"})


def operation(statement: str) -> str:
    word = statement.lstrip(" \t\r\n(").split(None, 1)[0].lower() if statement.strip() else ""
    return word if word in OPERATIONS else "other"


def watch(engine: Engine, slow_query_ms: int) -> None:
    """Counts and logs every statement on `engine` that takes `slow_query_ms` or longer."""
    assert slow_query_ms >= 0, "SLOW_QUERY_MS must not be negative"

    @event.listens_for(engine, "before_cursor_execute")
    def started(connection, cursor, statement, parameters, context, executemany):
        connection.info.setdefault(_STARTS_KEY, []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def finished(connection, cursor, statement, parameters, context, executemany):
        starts = connection.info.get(_STARTS_KEY)
        if not starts:
            return
        elapsed_ms = (time.perf_counter() - starts.pop()) * 1000
        if elapsed_ms < slow_query_ms:
            return
        kind = operation(statement)
        SLOW_STATEMENTS.labels(kind).inc()
        log.warning("slow statement: %.1f ms: %s", elapsed_ms, statement,
                    extra={"duration_ms": round(elapsed_ms, 1), "operation": kind, "executemany": executemany})

    @event.listens_for(engine, "handle_error")
    def failed(context):
        # A failed statement never reaches after_cursor_execute; drop its start time.
        starts = context.connection.info.get(_STARTS_KEY) if context.connection is not None else None
        if starts:
            starts.pop()
