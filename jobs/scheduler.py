"""APScheduler jobs. Each one has a bounded amount of work per run and only reads the
database or sends messages; `coalesce` and `max_instances=1` keep a slow run from piling up.

Only the holder of the leadership lease runs jobs (`jobs/leadership.py`). An instance that
cannot renew its lease before its own deadline (frozen, cut off from the database, or the
database restarting) stops its jobs and goes back to waiting, before a standby may take over;
each job also checks the lease when it starts and in its own transactions (`jobs/fencing.py`).
"""
from __future__ import annotations

import functools
import logging
import signal
import time

from apscheduler.schedulers.background import BackgroundScheduler

import bootstrap
from jobs import bulk_credit, events, holds, webhooks
from jobs.fencing import FencedServices
from jobs.leadership import WATCHDOG_S, Lease, LeaseLost, Timings, holder_name
from telemetry import exporter, logs, metrics

log = logging.getLogger(__name__)


def reconcile(services) -> None:
    from actors.reconciliation import reconcile as reconcile_actor
    from pipeline import reconciliation
    from pipeline.audit import SCHEDULER

    reconcile_actor.send(reconciliation.start(services.uow(), full=False, actor=SCHEDULER))


def with_request_id(name: str, job):
    """Runs `job` under a request id of its own (`job-<name>-<hex>`), which its log lines and
    the messages it sends carry on into the workers; skips it when the lease is no longer held."""

    @functools.wraps(job)
    def run(services):
        if not services.lease.held():
            log.warning("scheduler: %s not run: this instance no longer holds the lease", name)
            return None
        token = logs.REQUEST_ID.set(f"job-{name}-{logs.new_request_id()[:12]}")
        log.debug("scheduler: %s started under lease epoch %d", name, services.lease.epoch)
        try:
            return job(services)
        except LeaseLost as error:
            log.warning("scheduler: %s stopped: %s", name, error)
            return None
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
    scheduler.add_job(with_request_id("expire_holds", holds.expire_holds), "interval",
                      seconds=settings.scheduler_sweep_interval_s, args=[services], id="expire_holds")
    scheduler.add_job(with_request_id("publish_events", events.publish_events), "interval",
                      seconds=events.INTERVAL_S, args=[services], id="publish_events")
    scheduler.add_job(with_request_id("dispatch_webhooks", webhooks.dispatch_webhooks), "interval",
                      seconds=webhooks.INTERVAL_S, args=[services], id="dispatch_webhooks")
    return scheduler


def lead(services, holder: str, timings: Timings = Timings()) -> None:
    """Waits for the lease, runs the jobs while it is held, and returns once it is lost."""
    lease = Lease(services.settings.database_url, holder, timings)
    lease.acquire()
    lease.start_renewing()
    scheduler = build_scheduler(FencedServices(services, lease))
    scheduler.start()
    try:
        while lease.held():
            time.sleep(WATCHDOG_S)
        log.error("scheduler: lost the lease (epoch %d): jobs stopped; waiting to lead again", lease.epoch)
    except BaseException:
        lease.release()
        raise
    finally:
        lease.abandon()
        scheduler.shutdown(wait=False)


def _exit_on_term(signum, frame):
    # SystemExit unwinds lead(), which releases the lease so that a standby takes over at once.
    raise SystemExit(0)


def main() -> None:
    logs.configure(logs.level_from_environ())
    metrics.process_started("scheduler")
    signal.signal(signal.SIGTERM, _exit_on_term)
    services = bootstrap.services()
    metrics.initialise(services.settings.supported_currencies)
    port = exporter.port_from_environ()
    if port is not None:  # a container of its own (telemetry/exporter.py)
        exporter.serve(port)
    holder = holder_name()
    while True:
        lead(services, holder)
