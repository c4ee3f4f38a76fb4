"""Exactly one active scheduler: the holder of a PostgreSQL advisory lock.

The lock lives on a connection of its own, so it is released the moment the holder's
process dies (the server notices the closed socket) and a waiting instance takes over
within one polling interval.
"""
from __future__ import annotations

import logging
import os
import time

import psycopg

log = logging.getLogger(__name__)

#: The advisory lock's key: any constant that no other part of the project uses.
SCHEDULER_LOCK_KEY = 7472011
#: How often a waiting instance tries to take the lock, in seconds.
POLL_INTERVAL_S = 1.0


def libpq_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def wait_for_leadership(database_url: str) -> psycopg.Connection:
    """Blocks until this process holds the lock; returns the connection that holds it."""
    waiting_logged = False
    while True:
        try:
            connection = psycopg.connect(libpq_url(database_url), autocommit=True, connect_timeout=5,
                                         application_name=f"wallet-scheduler-{os.getpid()}",
                                         keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2)
            if connection.execute("SELECT pg_try_advisory_lock(%s)", (SCHEDULER_LOCK_KEY,)).fetchone()[0]:
                log.info("scheduler: this instance is the leader")
                return connection
            connection.close()
            if not waiting_logged:
                log.info("scheduler: another instance is the leader; waiting to take over")
                waiting_logged = True
        except psycopg.OperationalError as error:
            log.warning("scheduler: database unreachable while waiting for leadership: %s", error)
        time.sleep(POLL_INTERVAL_S)


def still_leader(connection: psycopg.Connection) -> bool:
    try:
        connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False
