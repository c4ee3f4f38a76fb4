"""Real processes for the end-to-end tests: each in its own session, so that stopping it
reaches the children that gunicorn and dramatiq fork."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import test_environ

ROOT = Path(__file__).resolve().parent.parent
#: How long a worker gets to say it is ready, in seconds.
WORKER_START_S = 30


class Process:
    def __init__(self, log_path: Path, command: list[str], environ: dict[str, str]):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def kill_hard(self) -> None:
        """kill -9 of the whole process group, as a crashed machine would do."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()

    def tail(self) -> str:
        return self.log_path.read_bytes()[-3000:].decode(errors="replace")


class Worker(Process):
    """One `dramatiq actors --processes 1 --threads 1` command: a main process and its worker."""

    def __init__(self, log_path: Path, **environ: str):
        super().__init__(log_path, [sys.executable, "-m", "dramatiq", "actors", "--processes", "1", "--threads", "1"],
                         test_environ(**environ))

    def wait_ready(self) -> "Worker":
        deadline = time.monotonic() + WORKER_START_S
        while b"ready for action" not in self.log_path.read_bytes():
            assert self.process.poll() is None, f"worker exited: {self.tail()}"
            assert time.monotonic() < deadline, f"worker not ready: {self.tail()}"
            time.sleep(0.1)
        return self
