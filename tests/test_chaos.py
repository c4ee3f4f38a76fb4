"""Chaos: faults during a bulk credit with two real worker processes and the scheduler.

Each fault strikes while the file is being applied: (i) kill -9 of every worker, then new
ones; (ii) a Redis restart with no persistence, so every queued message is lost; (iii) a
PostgreSQL restart. Each run must end COMPLETED within 3 minutes of the fault, with every
balance exact and a clean full reconciliation.

`make test` runs the short form (20,000 rows); `make chaos` runs 100,000 rows. `make chaos`
also cancels a 100,000-row file in the middle of its run (its 20,000-row form is in
tests/test_funding.py).
"""
from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from actors import redis_broker
from actors.bulk_credit import ChunkMessages
from pipeline import reconciliation
from pipeline.bulk.upload import upload
from tests.conftest import assert_ledger_invariants, test_environ
from tests.processes import Worker
from tests.test_funding import cancel_in_the_middle_of_a_run
from tests.test_bulk_pipeline import balances, funding_total, query, seed_users

ROOT = Path(__file__).resolve().parent.parent
#: The brief's bound on recovery, from the fault to COMPLETED, in seconds.
RECOVERY_S_MAX = 180
SHORT_ROWS, FULL_ROWS = 20_000, 100_000


def chaos_environ(rows: int) -> dict[str, str]:
    # A short lease finds lost chunks fast; it must still outlast a message's wait in the queue.
    return {"BULK_CREDIT_CHUNK_ROWS": "1000" if rows <= SHORT_ROWS else "2500",
            "CHUNK_LEASE_S": "8" if rows <= SHORT_ROWS else "20",
            "SCHEDULER_SWEEP_INTERVAL_S": "1", "RECONCILE_INTERVAL_S": "3600"}


class Stack:
    """Two worker processes and a scheduler, restartable."""

    def __init__(self, tmp_path: Path, environ: dict[str, str]):
        self.tmp_path, self.environ = tmp_path, environ
        self.workers: list[Worker] = []
        self.logs = (tmp_path / "scheduler.log").open("ab")
        self.scheduler = subprocess.Popen([sys.executable, "-m", "jobs"], cwd=ROOT, env=test_environ(**environ),
                                          stdout=self.logs, stderr=subprocess.STDOUT)

    def start_workers(self) -> None:
        new = [Worker(self.tmp_path / f"worker-{len(self.workers) + n}.log", **self.environ) for n in range(2)]
        self.workers.extend(new)
        for worker in new:
            worker.wait_ready()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.scheduler.kill()
        self.scheduler.wait(timeout=10)
        self.logs.close()


def kill_every_worker(stack: Stack) -> None:
    for worker in stack.workers:
        if worker.process.poll() is None:
            worker.kill_hard()
    stack.start_workers()


def services_script(command: str, timeout_s: int) -> None:
    """Runs scripts/services.sh on the servers this test uses: the ports of its DATABASE_URL
    and REDIS_URL, the folder of WALLET_RUN_DIR (`make test` sets it to .run/test)."""
    environ = test_environ()
    ports = {"WALLET_PG_PORT": make_url(environ["DATABASE_URL"]).port,
             "WALLET_REDIS_PORT": redis.connection.parse_url(environ["REDIS_URL"]).get("port", 6379)}
    subprocess.run(["bash", "scripts/services.sh", command], cwd=ROOT, check=True, timeout=timeout_s,
                   env={**environ, **{name: str(port) for name, port in ports.items()}})


def restart_redis(stack: Stack) -> None:
    services_script("restart-redis", 60)


def restart_postgres(stack: Stack) -> None:
    services_script("restart-postgres", 120)


FAULTS = {"kill_every_worker": kill_every_worker, "restart_redis": restart_redis, "restart_postgres": restart_postgres}


@pytest.fixture
def chaos_rows(request) -> int:
    return FULL_ROWS if request.config.getoption("--run-chaos") else SHORT_ROWS


def activity_state(engine, activity_id) -> tuple:
    return query(engine, "SELECT status, successful_records, failed_records, pending_records FROM bulk_activities"
                         " WHERE id = :a", a=activity_id)[0]


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OperationalError:  # PostgreSQL may be restarting right now
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.mark.chaos
@pytest.mark.parametrize("fault", FAULTS)
def test_a_bulk_credit_survives_the_fault_and_completes_exactly(fault, services, engine, settings, clean_database,
                                                                 tmp_path, chaos_rows):
    environ = chaos_environ(chaos_rows)
    redis.Redis.from_url(settings.redis_url).flushdb()
    users = seed_users(services, chaos_rows)
    amounts = {user: (n % 997 + 1) * 10 for n, user in enumerate(users)}
    content = ("uuid,amount\n" + "".join(f"{u},{a // 100}.{a % 100:02d}\n" for u, a in amounts.items())).encode()
    stack = Stack(tmp_path, environ)
    try:
        stack.start_workers()
        upload_settings = dataclasses.replace(settings, bulk_credit_chunk_rows=int(environ["BULK_CREDIT_CHUNK_ROWS"]),
                                              chunk_lease_s=int(environ["CHUNK_LEASE_S"]))
        activity_id = upload(services.uow, ChunkMessages(redis_broker(settings.redis_url)), upload_settings,
                             io.BytesIO(content), "chaos.csv").activity.id
        wait_until(lambda: activity_state(engine, activity_id)[1] > 0, 60, "the first settled rows")
        assert activity_state(engine, activity_id)[3] > 0, "the file settled before the fault could strike"

        struck_at = time.monotonic()
        FAULTS[fault](stack)
        wait_until(lambda: activity_state(engine, activity_id)[0] == "COMPLETED", RECOVERY_S_MAX,
                   f"COMPLETED after {fault}")
        recovery_s = time.monotonic() - struck_at
    finally:
        stack.stop()

    print(f"\nchaos {fault}: {chaos_rows} rows, COMPLETED {recovery_s:.1f} s after the fault")
    assert activity_state(engine, activity_id) == ("COMPLETED", chaos_rows, 0, 0)
    assert balances(engine) == amounts
    assert funding_total(engine) == -sum(amounts.values())
    assert query(engine, "SELECT count(*) FROM postings WHERE bulk_row_id IS NOT NULL")[0][0] == chaos_rows
    assert_ledger_invariants(engine)
    run = reconciliation.run(services.uow(), reconciliation.start(services.uow(), full=True))
    assert (run["status"], run["mismatches"]) == ("clean", [])


@pytest.mark.chaos
@pytest.mark.chaos_full
def test_cancelling_a_large_file_in_the_middle_of_a_run_with_real_workers_leaves_the_ledger_exact(
        services, engine, http, workers, clean_database):
    cancel_in_the_middle_of_a_run(services, engine, http, workers, rows=FULL_ROWS, chunk_rows=2_500)
