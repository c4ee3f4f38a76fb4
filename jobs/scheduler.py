"""APScheduler jobs. Each one has a bounded amount of work per run and only reads the
database or sends messages; `coalesce` and `max_instances=1` keep a slow run from piling up."""
from __future__ import annotations

import logging
import os

from apscheduler.schedulers.blocking import BlockingScheduler

import bootstrap
from jobs.leadership import still_leader, wait_for_leadership

log = logging.getLogger(__name__)

#: How often the leader checks that it still holds its lock, in seconds.
LEADERSHIP_CHECK_S = 2


def reconcile(services) -> None:
    from actors.reconciliation import reconcile as reconcile_actor
    from pipeline import reconciliation

    reconcile_actor.send(reconciliation.start(services.uow(), full=False))


def build_scheduler(services, lock_connection) -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone="UTC", job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 30})

    def guard_leadership():
        if not still_leader(lock_connection):
            # Another instance may hold the lock by now: stop at once rather than run twice.
            log.error("scheduler: lost the leadership lock; exiting")
            os._exit(3)

    scheduler.add_job(guard_leadership, "interval", seconds=LEADERSHIP_CHECK_S, id="leadership")
    scheduler.add_job(reconcile, "interval", seconds=services.settings.reconcile_interval_s,
                      args=[services], id="reconcile")
    for job in _bulk_jobs():
        scheduler.add_job(job.run, "interval", seconds=job.interval_s, args=[services], id=job.name)
    return scheduler


def _bulk_jobs():
    try:
        from jobs import bulk_credit
    except ImportError:
        return []
    return bulk_credit.JOBS


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    services = bootstrap.services()
    lock_connection = wait_for_leadership(services.settings.database_url)
    build_scheduler(services, lock_connection).start()
