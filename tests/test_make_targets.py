"""`make test` runs on a PostgreSQL and a Redis of its own (ports and folder), so that a
developer's `make up` keeps running untouched through it (issue 11, item 6)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def dry_run(target: str, **environ: str) -> str:
    """The commands `make` would run for `target`, with only PATH from this environment: the
    variables `make test` itself exported must not leak into what is checked."""
    result = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", **environ})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_test_starts_and_uses_servers_of_its_own_never_those_of_make_up():
    commands = dry_run("test")
    services = [line for line in commands.splitlines() if "services.sh start" in line]
    pytest = [line for line in commands.splitlines() if "bin/pytest" in line]

    assert services and all("WALLET_PG_PORT='54339'" in line and "WALLET_REDIS_PORT='63809'" in line
                            and "/.run/test'" in line for line in services), services
    assert pytest and "@127.0.0.1:54339/wallet_test" in pytest[0] and "127.0.0.1:63809/1" in pytest[0]
    assert "WALLET_RUN_DIR=" in pytest[0]  # the chaos tests restart these servers, and only these
    assert not re.search(r"\b(54329|63799)\b", commands), "make test names the servers of make up"


def test_make_up_keeps_the_development_servers():
    commands = dry_run("up")
    assert "54339" not in commands and "/.run/test" not in commands


def test_the_test_servers_follow_their_own_settings_not_make_ups():
    commands = dry_run("test", WALLET_PG_PORT="60001", WALLET_TEST_PG_PORT="60002")
    assert "60002" in commands and "60001" not in commands
