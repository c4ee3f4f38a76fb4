"""APScheduler jobs. Each one has a bounded amount of work per run and only reads the
database or sends messages; `coalesce` and `max_instances=1` keep a slow run from piling up.

Only the holder of the leadership lock runs jobs. An instance that loses its lock (its
database connection broke, say, during a PostgreSQL restart) stops its jobs at once and
goes back to waiting, so two instances never run jobs at the same time.
"""
from __future__ import annotations

import functools
import logging
import time

from apscheduler.schedulers.background import BackgroundScheduler

import bootstrap
from jobs import bulk_credit, events
from jobs.leadership import still_leader, wait_for_leadership
from telemetry import logs, metrics

log = logging.getLogger(__name__)

#: How often the leader checks that it still holds its lock, in seconds.
LEADERSHIP_CHECK_S = 2


def reconcile(services) -> None:
    from actors.reconciliation import reconcile as reconcile_actor
    from pipeline import reconciliation

    reconcile_actor.send(reconciliation.start(services.uow(), full=False))


def with_request_id(name: str, job):
    """Runs `job` under a request id of its own (`job-<name>-<hex>`), which its log lines and
    the messages it sends carry on into the workers."""

    @functools.wraps(job)
    def run(*args):
        token = logs.REQUEST_ID.set(f"job-{name}-{logs.new_request_id()[:12]}")
        try:
            return job(*args)
        finally:
            logs.REQUEST_ID.reset(token)

    return run


def build_scheduler(services) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
    settings = services.settings
    scheduler.add_job(with_request_id("reconcile", reconcile), "interval", seconds=settings.reconcile_interval_s,
                      args=[services], id="reconcile")
    for job in bulk_credit.JOBS:
        scheduler.add_job(with_request_id(job.name, job.run), "interval", seconds=job.interval_s(settings),
                          args=[services], id=job.name)
    scheduler.add_job(with_request_id("publish_events", events.publish_events), "interval",
                      seconds=events.INTERVAL_S, args=[services], id="publish_events")
    return scheduler


def lead(services) -> None:
    """Waits for the lock, runs the jobs while it is held, and returns once it is lost."""
    lock_connection = wait_for_leadership(services.settings.database_url)
    scheduler = build_scheduler(services)
    scheduler.start()
    try:
        while still_leader(lock_connection):
            time.sleep(LEADERSHIP_CHECK_S)
        log.error("scheduler: lost the leadership lock; stopping jobs and waiting again")
    finally:
        scheduler.shutdown(wait=False)
        lock_connection.close()


def main() -> None:
    logs.configure(logs.level_from_environ())
    metrics.process_started("scheduler")
    services = bootstrap.services()
    while True:
        lead(services)
