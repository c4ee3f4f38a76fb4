"""The ceiling: pgbench's built-in TPC-B script against the same PostgreSQL server.

TPC-B updates three balances, inserts one history row and reads one balance per database
transaction, much like a transfer, but with no HTTP, no Python and no idempotency key. Its
rate is what this machine's PostgreSQL can commit; the transfers are compared to it.

The scale factor is the number of clients, as pgbench's documentation advises: with the
default scale of 1 every transaction updates the same `pgbench_branches` row and the run
measures contention on that row (about half the rate here) rather than the server.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from urllib.parse import urlsplit

#: The database pgbench fills; never the application's own.
DATABASE = "wallet_pgbench"
#: The longest one pgbench command may take, in seconds.
COMMAND_TIMEOUT_S = 300


def binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise FileNotFoundError(f"{name} is not installed (Debian: postgresql-contrib or postgresql-client)")
    return candidates[-1]


def _environ(database_url: str) -> dict[str, str]:
    split = urlsplit(database_url)
    environ = dict(os.environ)
    environ.update(PGHOST=split.hostname or "127.0.0.1", PGPORT=str(split.port or 5432),
                   PGUSER=split.username or "postgres")
    if split.password:
        environ["PGPASSWORD"] = split.password
    return environ


def _run(command: list[str], environ: dict[str, str]) -> str:
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout + done.stderr


def initialise(database_url: str, scale: int) -> None:
    """(Re)creates the pgbench tables at `scale` in their own database."""
    environ = _environ(database_url)
    exists = _run([binary("psql"), "-d", "postgres", "-tAc",
                   f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"], environ)
    if exists.strip() != "1":
        _run([binary("createdb"), DATABASE], environ)
    _run([binary("pgbench"), "-i", "-q", "-s", str(scale), DATABASE], environ)


def tps(database_url: str, clients: int, threads: int, duration_s: int) -> float:
    """One TPC-B run; its transactions per second, without the connection time."""
    output = _run([binary("pgbench"), "-c", str(clients), "-j", str(threads), "-T", str(duration_s), DATABASE],
                  _environ(database_url))
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", output)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps: {output[-500:]}")
    return float(match[1])
