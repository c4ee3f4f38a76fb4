"""CPU time of the server's own processes, from /proc, so that a figure measured on a shared
machine can be read per transfer rather than per second.

`web`: every process in gunicorn's process group, which supervisord started for
scripts/processes.sh (`scripts/processes.sh pid web` names the group leader; a pid file when given). `postgres`: the backends serving the application's
database (`postgres: <user> <database> ...`), not PostgreSQL's background processes.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
from urllib.parse import urlsplit

#: Clock ticks per second of /proc's CPU counters.
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
ROOT = pathlib.Path(__file__).resolve().parent.parent
#: A pid file naming gunicorn's group leader; when it does not exist, scripts/processes.sh is asked.
WEB_PID_FILE = ROOT / ".run" / "web.pid"


def web_group(web_pid_file: pathlib.Path) -> int | None:
    try:
        return int(web_pid_file.read_text().strip())
    except (OSError, ValueError):
        pass
    answer = subprocess.run([str(ROOT / "scripts" / "processes.sh"), "pid", "web"], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    return int(answer.stdout) if answer.returncode == 0 and answer.stdout.strip().isdigit() else None


def _processes():
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        # fields[0] is the state: the group is fields[2], user and system ticks fields[11] and fields[12].
        yield int(fields[2]), int(fields[11]) + int(fields[12]), command


def group_seconds(group: int) -> float:
    """CPU seconds used so far by the live processes of one process group (a worker command
    started in a session of its own, say)."""
    return sum(ticks for found, ticks, _ in _processes() if found == group) / TICKS_PER_S


class ServerCpu:
    """Reads the CPU seconds used so far by the web processes and the database's backends."""

    def __init__(self, database_url: str, web_pid_file: pathlib.Path = WEB_PID_FILE):
        split = urlsplit(database_url)
        self.backend_prefix = f"postgres: {split.username} {split.path.lstrip('/')} "
        self.web_group = web_group(web_pid_file)

    def seconds(self) -> dict[str, float]:
        web = postgres = 0
        for group, ticks, command in _processes():
            if self.web_group is not None and group == self.web_group:
                web += ticks
            elif command.startswith(self.backend_prefix):
                postgres += ticks
        found = {"postgres": postgres / TICKS_PER_S}
        if self.web_group is not None:
            found["web"] = web / TICKS_PER_S
        return found
