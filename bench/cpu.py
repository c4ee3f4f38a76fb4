"""CPU time of the server's own processes, from /proc, so that a figure measured on a shared
machine can be read per transfer rather than per second.

`web`: every process in the process group that scripts/processes.sh started for gunicorn
(its pid file names the group leader). `postgres`: the backends serving the application's
database (`postgres: <user> <database> ...`), not PostgreSQL's background processes.
"""
from __future__ import annotations

import os
import pathlib
from urllib.parse import urlsplit

#: Clock ticks per second of /proc's CPU counters.
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
WEB_PID_FILE = pathlib.Path(__file__).resolve().parent.parent / ".run" / "web.pid"


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


class ServerCpu:
    """Reads the CPU seconds used so far by the web processes and the database's backends."""

    def __init__(self, database_url: str, web_pid_file: pathlib.Path = WEB_PID_FILE):
        split = urlsplit(database_url)
        self.backend_prefix = f"postgres: {split.username} {split.path.lstrip('/')} "
        try:
            self.web_group = int(web_pid_file.read_text().strip())
        except (OSError, ValueError):
            self.web_group = None

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
