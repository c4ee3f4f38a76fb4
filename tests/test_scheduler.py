"""Exactly one scheduler instance runs jobs; another takes over when it dies."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from jobs.leadership import SCHEDULER_LOCK_KEY
from tests.conftest import test_environ

ROOT = Path(__file__).resolve().parent.parent
#: How long a takeover may take, in seconds: the brief says "within seconds".
TAKEOVER_S_MAX = 10


def start_scheduler(log_path: Path) -> subprocess.Popen:
    environ = test_environ(RECONCILE_INTERVAL_S="3600")
    return subprocess.Popen([sys.executable, "-m", "jobs"], cwd=ROOT, env=environ,
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def leader_pid(engine) -> int | None:
    with engine.connect() as connection:
        name = connection.execute(text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.objid = :key AND l.granted"
            "   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"key": SCHEDULER_LOCK_KEY}
        ).scalar_one_or_none()
    return int(name.rsplit("-", 1)[1]) if name else None


def wait_for_leader(engine, candidates: set[int], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = leader_pid(engine)
        if pid in candidates:
            return pid
        time.sleep(0.2)
    raise AssertionError(f"no leader among {candidates} after {timeout_s} s")


def test_only_one_of_two_schedulers_leads_and_the_other_takes_over_when_it_is_killed(engine, tmp_path):
    first = start_scheduler(tmp_path / "first.log")
    second = start_scheduler(tmp_path / "second.log")
    processes = {first.pid: first, second.pid: second}
    try:
        leader = wait_for_leader(engine, set(processes), timeout_s=20)
        follower = (set(processes) - {leader}).pop()
        time.sleep(3)  # the follower has had time to try, and must still be waiting
        assert leader_pid(engine) == leader
        follower_log = (tmp_path / ("first.log" if follower == first.pid else "second.log")).read_text()
        assert "waiting to take over" in follower_log
        assert "Running job" not in follower_log

        killed_at = time.monotonic()
        os.kill(leader, signal.SIGKILL)
        processes[leader].wait(timeout=10)
        assert wait_for_leader(engine, {follower}, timeout_s=TAKEOVER_S_MAX) == follower
        print(f"takeover after {time.monotonic() - killed_at:.1f} s")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
