"""Exactly one scheduler instance runs jobs; another takes over within the lease's bound when
the leader dies, freezes or is cut off from the database, and the old leader stops its jobs."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import text

from jobs.leadership import LEADER_GIVE_UP_S, TAKEOVER_S_MAX
from pipeline import wallets
from pipeline.money import currency
from tests.conftest import test_environ
from tests.tcp_proxy import PausableProxy

ROOT = Path(__file__).resolve().parent.parent
#: What a loaded 2-core test machine may add to a bound, in seconds.
SLOW_MACHINE_SLACK_S = 5
#: How long a scheduler process gets to start and take a free lease, in seconds.
START_S = 30
#: How long a stopped leader gets to notice and log that it lost its lease, in seconds.
NOTICE_S = 10
#: What a job logs (at DEBUG) each time it starts.
JOB_STARTED = re.compile(r"scheduler: \w+ started under lease epoch (\d+)")


class Scheduler:
    def __init__(self, log_path: Path, **environ: str):
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobs"], cwd=ROOT,
            env=test_environ(RECONCILE_INTERVAL_S="3600", LOG_LEVEL="DEBUG", **environ),
            stdout=log_path.open("w"), stderr=subprocess.STDOUT)
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def schedulers(tmp_path, clean_database):
    started: list[Scheduler] = []

    def start(name: str, **environ: str) -> Scheduler:
        started.append(Scheduler(tmp_path / f"{name}.log", **environ))
        return started[-1]

    yield start
    for scheduler in started:
        scheduler.stop()


def lease(engine) -> tuple[int | None, int]:
    """The pid of the lease's holder if its lease is live, and the lease's epoch."""
    with engine.connect() as connection:
        row = connection.execute(text(
            "SELECT holder, epoch, expires_at > clock_timestamp() FROM scheduler_lease")).one_or_none()
    if row is None:
        return None, 0
    holder, epoch, live = row
    return (int(holder.split(":")[1]) if live and holder else None), epoch


def wait_for_leader(engine, candidates: set[int], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid, _ = lease(engine)
        if pid in candidates:
            return pid
        time.sleep(0.2)
    raise AssertionError(f"no leader among {candidates} after {timeout_s} s (lease: {lease(engine)})")


def wait_for_text(scheduler: Scheduler, pattern: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not re.search(pattern, scheduler.log()):
        assert time.monotonic() < deadline, f"{pattern!r} not in the log after {timeout_s} s: {scheduler.log()[-3000:]}"
        time.sleep(0.2)


def deposit(services) -> None:
    """A deposit to a new user: one row in the event outbox, which only the leader's publisher empties."""
    user_id = str(uuid.uuid4())
    with services.uow() as uow:
        uow.bulk.copy_users([(user_id, "Scheduler test", f"{user_id}@example.test")])
        wallets.deposit(uow, services.settings, user_id, wallets.MoneyRequest(currency("SGD"), 1_000, None))
        uow.commit()


def outbox_rows(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM event_outbox")).scalar_one()


def wait_for_empty_outbox(engine, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while outbox_rows(engine):
        assert time.monotonic() < deadline, f"the outbox still holds {outbox_rows(engine)} rows after {timeout_s} s"
        time.sleep(0.2)


def leader_and_standby(engine, first: Scheduler, second: Scheduler) -> tuple[Scheduler, Scheduler]:
    by_pid = {first.pid: first, second.pid: second}
    leader = by_pid[wait_for_leader(engine, set(by_pid), START_S)]
    return leader, (second if leader is first else first)


def test_only_one_of_two_schedulers_leads_and_the_other_takes_over_when_it_is_killed(engine, schedulers):
    leader, standby = leader_and_standby(engine, schedulers("first"), schedulers("second"))
    wait_for_text(standby, "waiting to take over", START_S)
    time.sleep(3)  # the standby has had time to try, and must still be waiting
    assert lease(engine) == (leader.pid, 1)
    assert JOB_STARTED.search(leader.log())
    assert not JOB_STARTED.search(standby.log())

    leader.process.kill()
    leader.process.wait(timeout=10)
    assert wait_for_leader(engine, {standby.pid}, TAKEOVER_S_MAX + SLOW_MACHINE_SLACK_S) == standby.pid
    assert lease(engine) == (standby.pid, 2)


def test_a_frozen_leader_is_replaced_within_30_s_and_runs_no_job_once_it_wakes_up(services, schedulers):
    engine = services.engine
    leader, standby = leader_and_standby(engine, schedulers("first"), schedulers("second"))
    deposit(services)
    wait_for_empty_outbox(engine, START_S)  # the leader's publisher runs

    os.kill(leader.pid, signal.SIGSTOP)
    deposit(services)
    assert wait_for_leader(engine, {standby.pid}, TAKEOVER_S_MAX + SLOW_MACHINE_SLACK_S) == standby.pid
    wait_for_empty_outbox(engine, START_S)  # published by the new leader while the old one is frozen
    _, epoch = lease(engine)
    assert epoch == 2

    woke_at = len(leader.log())
    os.kill(leader.pid, signal.SIGCONT)
    wait_for_text(leader, r"lost the lease \(epoch 1\): jobs stopped", NOTICE_S)
    deposit(services)
    wait_for_empty_outbox(engine, START_S)
    time.sleep(3)
    assert lease(engine) == (standby.pid, 2)  # the old leader took nothing back
    assert not JOB_STARTED.search(leader.log()[woke_at:])
    assert set(JOB_STARTED.findall(standby.log())) == {"2"}
    assert leader.process.poll() is None and "Traceback" not in leader.log()


def test_a_leader_cut_off_from_the_database_stops_its_jobs_and_a_standby_takes_over(services, schedulers):
    engine = services.engine
    url = urlsplit(services.settings.database_url)
    proxy = PausableProxy((url.hostname, url.port))
    try:
        through_proxy = urlunsplit(url._replace(netloc=f"{url.username}@127.0.0.1:{proxy.port}"))
        leader = schedulers("cut-off", DATABASE_URL=through_proxy)
        wait_for_leader(engine, {leader.pid}, START_S)
        standby = schedulers("standby")
        wait_for_text(standby, "waiting to take over", START_S)

        proxy.pause()
        cut_at = time.monotonic()
        wait_for_text(leader, r"lost the lease \(epoch 1\): jobs stopped", LEADER_GIVE_UP_S + SLOW_MACHINE_SLACK_S)
        stopped_after_s = time.monotonic() - cut_at
        assert lease(engine)[0] in (leader.pid, None)  # it stopped while the server still had its lease
        assert wait_for_leader(engine, {standby.pid}, TAKEOVER_S_MAX + SLOW_MACHINE_SLACK_S) == standby.pid
        print(f"leader stopped after {stopped_after_s:.1f} s, takeover after {time.monotonic() - cut_at:.1f} s")
        deposit(services)
        wait_for_empty_outbox(engine, START_S)

        stopped_at = leader.log().index("jobs stopped")
        proxy.resume()
        time.sleep(LEADER_GIVE_UP_S)
        assert lease(engine) == (standby.pid, 2)
        assert not JOB_STARTED.search(leader.log()[stopped_at:])
    finally:
        proxy.close()


def test_a_leader_stopped_with_sigterm_releases_its_lease_for_the_standby(engine, schedulers):
    leader, standby = leader_and_standby(engine, schedulers("first"), schedulers("second"))
    wait_for_text(standby, "waiting to take over", START_S)

    leader.process.terminate()
    assert leader.process.wait(timeout=NOTICE_S) == 0
    # Without the release the lease would stay the leader's, live, for up to LEASE_TTL_S.
    assert lease(engine)[0] in (None, standby.pid)
    assert wait_for_leader(engine, {standby.pid}, START_S) == standby.pid
