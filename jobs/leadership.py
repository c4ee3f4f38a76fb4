"""Exactly one active scheduler: the holder of a lease, a row of `scheduler_lease`.

The holder renews the lease every `RENEW_INTERVAL_S`; the database stamps its expiry with
its own clock (`clock_timestamp() + LEASE_TTL_S`), so no two machines' clocks are compared.
A standby takes an expired lease over, adding one to its `epoch`, the fencing token.

A leader that is frozen (SIGSTOP, a long GC pause, a VM migration) or cut off from the
database stops renewing, so its lease expires and a standby takes over within
`TAKEOVER_S_MAX`. Fencing keeps the two from running jobs at the same time:
- the leader counts its own deadline on its monotonic clock from the moment it SENT its last
  successful renewal, which is no later than the moment the database stamped it, and gives up
  after `LEADER_GIVE_UP_S`, well before the lease can expire on the server;
- every transaction of a job first checks, in SQL, that its holder and epoch still own an
  unexpired lease, and keeps a KEY SHARE lock on the lease row until it ends; a takeover needs
  FOR UPDATE on that row, so it waits until the old leader's last transaction has ended
  (`JOB_IDLE_IN_TRANSACTION_S` bounds how long a frozen one can keep it);
- a renewal is accepted only while the lease has more than `LEASE_TTL_S - LEADER_GIVE_UP_S`
  left, so a late renewal of a leader that has already given up cannot stretch the lease.
What is not fenced: a message a job sends to Redis after its transaction committed may go out
twice, once from each side of a takeover. Every such message is idempotent (a chunk applied
twice is a no-op, an event is published with its own id).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import psycopg

log = logging.getLogger(__name__)

#: The lease's lifetime after each renewal, in seconds, on the database's clock.
LEASE_TTL_S = 15.0
#: How often the leader renews its lease, in seconds.
RENEW_INTERVAL_S = 3.0
#: How long after the start of its last successful renewal the leader gives up and stops its
#: jobs, in seconds, on its own monotonic clock.
LEADER_GIVE_UP_S = 10.0
#: Seconds between a standby's attempts to take an expired lease over.
STANDBY_POLL_S = 2.0
#: How often the leader checks its own deadline, in seconds.
WATCHDOG_S = 0.25
#: The longest one lease statement may run on the server, in seconds.
LEASE_STATEMENT_S = 2.0
#: The longest a job's transaction may sit idle while it holds the lease row, in seconds: a
#: frozen leader's open transaction is ended by the server after this, so it cannot block a takeover.
JOB_IDLE_IN_TRANSACTION_S = 5.0
#: The longest a takeover may take after the leader stopped renewing, in seconds.
TAKEOVER_S_MAX = 30.0
#: The lease's name: one row per kind of leadership.
LEASE_NAME = "scheduler"

# Fencing: the leader stops before its lease can expire, with a margin for a slow watchdog,
# a slow job start and clocks that run at slightly different rates.
assert RENEW_INTERVAL_S * 3 <= LEADER_GIVE_UP_S <= LEASE_TTL_S - 3 * WATCHDOG_S - LEASE_STATEMENT_S
assert JOB_IDLE_IN_TRANSACTION_S < LEASE_TTL_S
# A renewal that lands late stretches the lease to at most LEADER_GIVE_UP_S + LEASE_TTL_S after
# the last one the leader saw; the standby notices within one poll and one statement.
assert LEADER_GIVE_UP_S + LEASE_TTL_S + STANDBY_POLL_S + LEASE_STATEMENT_S <= TAKEOVER_S_MAX

ENSURE_ROW = """
INSERT INTO scheduler_lease (name, holder, epoch, expires_at) VALUES (%(name)s, '', 0, '-infinity')
ON CONFLICT (name) DO NOTHING
"""
# An expired lease, or this process's own from an earlier term (after a PostgreSQL restart, say):
# it stopped that term's jobs, and the new epoch fences whatever of them is still running.
# FOR UPDATE waits for the KEY SHARE locks of the old term's job transactions.
TAKEABLE = """
SELECT epoch FROM scheduler_lease
 WHERE name = %(name)s AND (expires_at < clock_timestamp() OR holder = %(holder)s) FOR UPDATE
"""
TAKE = """
UPDATE scheduler_lease SET holder = %(holder)s, epoch = epoch + 1, acquired_at = clock_timestamp(),
       expires_at = clock_timestamp() + make_interval(secs => %(ttl_s)s)
 WHERE name = %(name)s AND epoch = %(epoch)s RETURNING epoch
"""
RENEW = """
UPDATE scheduler_lease SET expires_at = clock_timestamp() + make_interval(secs => %(ttl_s)s)
 WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s
   AND expires_at > clock_timestamp() + make_interval(secs => %(ttl_s)s - %(give_up_s)s)
"""
RELEASE = """
UPDATE scheduler_lease SET expires_at = clock_timestamp()
 WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s
"""
#: What a job's transaction runs first (SQLAlchemy's named parameters).
FENCE = """
SELECT epoch FROM scheduler_lease
 WHERE name = :name AND holder = :holder AND epoch = :epoch AND expires_at > clock_timestamp()
   FOR KEY SHARE
"""


class LeaseLost(Exception):
    """This instance no longer holds the lease it started a job under."""


@dataclass(frozen=True)
class Timings:
    """The lease's timings in seconds; tests shorten them, production uses the constants."""
    ttl_s: float = LEASE_TTL_S
    renew_interval_s: float = RENEW_INTERVAL_S
    give_up_s: float = LEADER_GIVE_UP_S
    standby_poll_s: float = STANDBY_POLL_S


class Deadline:
    """When the leader must stop, on its monotonic clock: `give_up_s` after the START of its last
    successful renewal (or of the takeover), since the server's expiry counts from a later moment."""

    def __init__(self, give_up_s: float, clock: Callable[[], float] = time.monotonic):
        self.give_up_s = give_up_s
        self.clock = clock
        self.stop_at = float("-inf")

    def renewed(self, sent_at: float) -> None:
        self.stop_at = max(self.stop_at, sent_at + self.give_up_s)

    def revoke(self) -> None:
        self.stop_at = float("-inf")

    def held(self) -> bool:
        return self.clock() < self.stop_at


def libpq_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def holder_name() -> str:
    """`host:pid:random`, unique per process even when pids are reused; made once per process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """One term of leadership: `acquire` blocks until this instance leads, `held` says whether it
    still may run jobs, `start_renewing` keeps it alive from a thread of its own."""

    def __init__(self, database_url: str, holder: str, timings: Timings = Timings(),
                 clock: Callable[[], float] = time.monotonic):
        self.database_url = database_url
        self.holder = holder
        self.timings = timings
        self.clock = clock
        self.deadline = Deadline(timings.give_up_s, clock)
        self.epoch: int | None = None
        self._abandoned = threading.Event()
        self._connection: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed:
            statement_ms = int(LEASE_STATEMENT_S * 1000)
            # keepalives and tcp_user_timeout notice a dead network; statement_timeout a stuck server.
            self._connection = psycopg.connect(
                libpq_url(self.database_url), autocommit=True, connect_timeout=5,
                application_name=f"wallet-scheduler-{os.getpid()}", keepalives=1, keepalives_idle=5,
                keepalives_interval=2, keepalives_count=2, tcp_user_timeout=int(self.timings.give_up_s * 1000),
                options=f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms // 2}")
        return self._connection

    def _parameters(self) -> dict:
        return {"name": LEASE_NAME, "holder": self.holder, "epoch": self.epoch, "ttl_s": self.timings.ttl_s,
                "give_up_s": self.timings.give_up_s}

    def try_acquire(self) -> bool:
        """One attempt to take the lease over; True if this instance now holds it."""
        sent_at = self.clock()
        connection = self._connect()
        connection.execute(ENSURE_ROW, {"name": LEASE_NAME})
        with connection.transaction():
            row = connection.execute(TAKEABLE, self._parameters()).fetchone()
            if row is None:
                return False
            self.epoch = connection.execute(TAKE, {**self._parameters(), "epoch": row[0]}).fetchone()[0]
        self.deadline.renewed(sent_at)
        return True

    def acquire(self) -> None:
        """Blocks until this instance holds the lease."""
        waiting_logged = False
        while True:
            try:
                if self.try_acquire():
                    log.info("scheduler: this instance is the leader (lease epoch %d, holder %s)",
                             self.epoch, self.holder)
                    return
                if not waiting_logged:
                    log.info("scheduler: another instance is the leader; waiting to take over")
                    waiting_logged = True
            except psycopg.Error as error:
                log.warning("scheduler: could not try to take the lease: %s", str(error).strip())
                self._close()
            time.sleep(self.timings.standby_poll_s)

    def renew_once(self) -> bool:
        """One renewal; False when the lease is no longer this instance's. Raises psycopg.Error."""
        sent_at = self.clock()
        renewed = self._connect().execute(RENEW, self._parameters()).rowcount == 1
        if renewed and not self._abandoned.is_set():
            self.deadline.renewed(sent_at)
        return renewed

    def _renew_loop(self) -> None:
        while not self._abandoned.is_set():
            started = self.clock()
            try:
                if not self.renew_once():
                    log.error("scheduler: the lease (epoch %s) belongs to another instance now", self.epoch)
                    self.deadline.revoke()
                    break
            except psycopg.Error as error:
                log.warning("scheduler: could not renew the lease: %s", str(error).strip())
                self._close()
            self._abandoned.wait(max(0.0, started + self.timings.renew_interval_s - self.clock()))
        self._close()

    def start_renewing(self) -> threading.Thread:
        # A daemon thread: a renewal stuck on a dead network must not keep the process alive.
        thread = threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True)
        thread.start()
        return thread

    def held(self) -> bool:
        return self.deadline.held()

    def abandon(self) -> None:
        """Ends this term: no renewal after this counts, and the renewal thread stops."""
        self._abandoned.set()
        self.deadline.revoke()

    def release(self) -> None:
        """Lets a standby take over at once (a clean shutdown); best effort."""
        self.abandon()
        try:
            with psycopg.connect(libpq_url(self.database_url), autocommit=True, connect_timeout=2,
                                 options="-c statement_timeout=2000") as connection:
                connection.execute(RELEASE, self._parameters())
        except psycopg.Error as error:
            log.warning("scheduler: could not release the lease, it expires on its own: %s", str(error).strip())

    def fence_parameters(self) -> dict:
        return {"name": LEASE_NAME, "holder": self.holder, "epoch": self.epoch}

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except psycopg.Error:
                pass
