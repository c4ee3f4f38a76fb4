"""`make up`'s supervision: scripts/processes.sh runs web, worker and scheduler under supervisord,
which restarts a process that dies; GET /healthz/workers says whether workers are consuming.

The stack runs exactly as `make up` starts it, but in a run folder, port, database and Redis
database of the test's own (WALLET_RUN_DIR, WALLET_API_PORT, DATABASE_URL, REDIS_URL)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis
import requests

from telemetry.heartbeats import HEARTBEAT_TTL_S, live_workers
from tests.conftest import assert_ledger_invariants, test_environ
from tests.test_bulk_end_to_end import wait_settled
from tests.test_bulk_pipeline import balances, post_file, seed_users

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "processes.sh"
#: How long a restarted program gets to be back with its worker processes consuming, in seconds.
BACK_S = 60
#: What a loaded 2-core test machine may add to a bound, in seconds.
SLOW_MACHINE_SLACK_S = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Stack:
    def __init__(self, settings):
        # A short folder: supervisord's control socket lives in it, and socket paths are limited to 107 bytes.
        self.run_dir = Path(tempfile.mkdtemp(prefix="wallet-run-"))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.environ = test_environ(WALLET_RUN_DIR=str(self.run_dir), WALLET_API_PORT=str(port), API_URL=self.url,
                                    WEB_WORKERS="1", WEB_THREADS="4", STREAMS_PER_PROCESS_MAX="2",
                                    WORKER_PROCESSES="2", WORKER_THREADS="1",
                                    PROMETHEUS_MULTIPROC_DIR=str(self.run_dir / "metrics"))
        self.redis = redis.Redis.from_url(settings.redis_url)

    def script(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), command], cwd=ROOT, env=self.environ, capture_output=True, text=True,
                              timeout=120)

    def ctl(self, *arguments: str) -> str:
        return subprocess.run([str(ROOT / ".venv/bin/supervisorctl"), "-c", str(ROOT / "scripts/supervisord.conf"),
                               *arguments], cwd=ROOT, env=self.environ, capture_output=True, text=True,
                              timeout=60).stdout

    def program_pid(self, name: str) -> int:
        return int(self.ctl("pid", name).strip())

    def worker_processes(self) -> set[int]:
        """The Dramatiq worker processes: the children of the `worker` program's main process."""
        main = self.program_pid("worker")
        output = subprocess.run(["ps", "-o", "pid=", "--ppid", str(main)], capture_output=True, text=True).stdout
        return {int(pid) for pid in output.split()}

    def heartbeat_pids(self) -> set[int]:
        return {heartbeat["pid"] for heartbeat in live_workers(self.redis)}

    def workers_health(self) -> requests.Response:
        return requests.get(f"{self.url}/healthz/workers", timeout=5)

    def log(self, name: str) -> str:
        path = self.run_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def wait_until(condition, timeout_s: float, describe) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"after {timeout_s} s: {describe()}"
        time.sleep(0.5)


@pytest.fixture
def stack(settings, clean_database):
    redis.Redis.from_url(settings.redis_url).flushdb()  # no message or heartbeat left over
    stack = Stack(settings)
    started = stack.script("start")
    assert started.returncode == 0, started.stderr
    try:
        yield stack
    finally:
        stopped = stack.script("stop")
        supervisord_log = stack.log("supervisord")
        shutil.rmtree(stack.run_dir, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr + supervisord_log


def consuming_workers(stack: Stack) -> set[int]:
    """The current worker processes, once each of them writes its heartbeat."""
    try:
        current = stack.worker_processes()
    except ValueError:  # supervisorctl prints no pid while the program is starting
        return set()
    return current if len(current) == 2 and current <= stack.heartbeat_pids() else set()


def test_a_killed_worker_process_is_restarted_and_the_next_file_is_still_credited(services, http, stack):
    wait_until(lambda: consuming_workers(stack), BACK_S, lambda: stack.log("worker"))
    before = stack.worker_processes()
    main_before = stack.program_pid("worker")

    os.kill(min(before), signal.SIGKILL)  # one of the two Dramatiq worker processes, as the OOM killer would
    # Dramatiq's main process stops the other worker and exits; supervisord starts the command again.
    wait_until(lambda: (after := consuming_workers(stack)) and not after & before, BACK_S + SLOW_MACHINE_SLACK_S,
               lambda: stack.ctl("status") + stack.log("worker"))
    assert stack.program_pid("worker") != main_before
    assert "exited: worker" in stack.log("supervisord")

    users = seed_users(services, 3)
    accepted = post_file(http, ("uuid,amount\n" + "".join(f"{user},{n + 1}.00\n" for n, user in enumerate(users))).encode())
    assert accepted.status_code == 202
    settled = wait_settled(http, accepted.json["activity_id"])
    assert settled["status"] == "COMPLETED"
    assert balances(services.engine) == {user: (n + 1) * 100 for n, user in enumerate(users)}
    assert_ledger_invariants(services.engine)


def test_killed_web_and_scheduler_processes_are_restarted_too(stack):
    for name in ("web", "scheduler"):
        pid = stack.program_pid(name)
        os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: "RUNNING" in stack.ctl("status", name) and stack.program_pid(name) != pid,
                   BACK_S, lambda: stack.ctl("status") + stack.log(name))
    wait_until(lambda: requests.get(f"{stack.url}/healthz", timeout=5).status_code == 200, BACK_S,
               lambda: stack.log("web"))


def test_the_workers_health_is_503_while_no_worker_consumes_and_200_when_they_are_back(stack):
    wait_until(lambda: stack.workers_health().json()["workers"] == 2, BACK_S, lambda: stack.log("worker"))
    assert stack.workers_health().status_code == 200

    stack.ctl("stop", "worker")
    wait_until(lambda: stack.workers_health().status_code == 503, HEARTBEAT_TTL_S + SLOW_MACHINE_SLACK_S,
               lambda: stack.workers_health().text)
    body = stack.workers_health().json()
    assert body["status"] == "unavailable" and body["workers"] == 0
    assert "no worker heartbeat" in body["checks"]["workers"]
    ready = requests.get(f"{stack.url}/readyz", timeout=5)
    assert ready.status_code == 200  # the web process itself stays ready to serve

    stack.ctl("start", "worker")
    wait_until(lambda: stack.workers_health().json()["workers"] == 2, BACK_S, lambda: stack.log("worker"))
    assert stack.workers_health().json() == {"status": "ok", "checks": {"workers": "ok"}, "workers": 2,
                                             "heartbeat_ttl_s": HEARTBEAT_TTL_S}


def test_stopping_the_stack_leaves_none_of_its_processes_running(settings):
    stack = Stack(settings)
    try:
        assert stack.script("start").returncode == 0
        groups = [stack.program_pid(name) for name in ("web", "worker", "scheduler")]
        supervisord = int((stack.run_dir / "supervisord.pid").read_text())
        assert stack.script("stop").returncode == 0
        for group in [*groups, supervisord]:
            with pytest.raises(ProcessLookupError):
                os.killpg(group, 0)
        assert stack.script("status").returncode == 3
    finally:
        stack.script("stop")
        shutil.rmtree(stack.run_dir, ignore_errors=True)


# The heartbeat and the endpoint in this process --------------------------------------------

class FakeThread:
    def __init__(self, alive: bool):
        self.alive = alive

    def is_alive(self) -> bool:
        return self.alive


class FakeWorker:
    def __init__(self, consumer_alive: bool = True, worker_alive: bool = True):
        self.consumers = {"bulk_credit": FakeThread(consumer_alive)}
        self.workers = [FakeThread(worker_alive)]


@pytest.mark.parametrize("consumer_alive, worker_alive, expected", [
    (True, True, True), (False, True, False), (True, False, False)])
def test_a_worker_is_consuming_only_while_all_its_consumer_and_worker_threads_are_alive(
        consumer_alive, worker_alive, expected):
    from telemetry.heartbeats import consuming

    assert consuming(FakeWorker(consumer_alive, worker_alive)) is expected


def test_a_worker_writes_its_heartbeat_after_boot_and_removes_it_at_shutdown(settings):
    from telemetry.heartbeats import WorkerHeartbeats

    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    middleware = WorkerHeartbeats(settings.redis_url)
    middleware.after_worker_boot(None, FakeWorker())
    wait_until(lambda: os.getpid() in {h["pid"] for h in live_workers(client)}, 5, lambda: live_workers(client))
    assert 0 < client.pttl(middleware.key) <= HEARTBEAT_TTL_S * 1000

    middleware.before_worker_shutdown(None, FakeWorker())
    assert live_workers(client) == []


def test_a_worker_whose_consumer_thread_died_writes_no_heartbeat(settings):
    from telemetry.heartbeats import WorkerHeartbeats

    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    middleware = WorkerHeartbeats(settings.redis_url)
    middleware.after_worker_boot(None, FakeWorker(consumer_alive=False))
    time.sleep(1)
    middleware.stopped.set()
    assert live_workers(client) == []


def test_the_workers_health_is_503_when_redis_is_unreachable():
    from api import create_app
    from pipeline.config import Settings

    app = create_app(Settings.from_environ(test_environ(REDIS_URL="redis://127.0.0.1:9/0")))
    try:
        response = app.test_client().get("/healthz/workers")
    finally:
        app.extensions["wallet"].engine.dispose()
    assert response.status_code == 503
    assert response.get_json()["checks"]["workers"].startswith("unknown")
