"""What this machine gives a second process: the ceiling for "2 worker processes against 1".

A chunk is CPU work in PostgreSQL (bench/README.md, "Where a bulk-credit chunk's time goes"),
so the same pure-CPU query (a sum over a generated series: no table, no lock, no WAL) is run
by 1 connection and then by 2 at once, the counts taking turns over the rounds. The ratio of
their rates is what 2 workers could gain at best on these cores, measured in the same run:
on 2 virtual cores that share a physical one, or on a machine others are using, it is far
below 2.
"""
from __future__ import annotations

import statistics
import threading
import time

import psycopg

from bench.ledger_checks import libpq_url

QUERY = "SELECT sum(i) FROM generate_series(1, 2000000) i"
QUERIES_PER_CONNECTION = 8


def _rate(database_url: str, connections: int) -> float:
    """Queries per second with `connections` connections each running QUERIES_PER_CONNECTION."""
    ready = threading.Barrier(connections + 1)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(libpq_url(database_url)) as connection:
                connection.execute(QUERY)  # warm: the backend is started and planned before timing
                ready.wait()
                for _ in range(QUERIES_PER_CONNECTION):
                    connection.execute(QUERY).fetchone()
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)
            ready.abort()

    threads = [threading.Thread(target=run) for _ in range(connections)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return connections * QUERIES_PER_CONNECTION / (time.monotonic() - started)


def two_over_one(database_url: str, rounds: int = 3) -> dict:
    """{"one_per_s", "two_per_s", "two_over_one"}: medians of `rounds` alternating rounds."""
    rates: dict[int, list[float]] = {1: [], 2: []}
    for round_ in range(rounds):
        for connections in ((1, 2) if round_ % 2 == 0 else (2, 1)):
            rates[connections].append(_rate(database_url, connections))
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"  the same CPU-only query in PostgreSQL, 2 connections against 1: {two / one:.2f} times"
          f" ({two:.2f} against {one:.2f} queries/s)", flush=True)
    return {"one_per_s": one, "two_per_s": two, "two_over_one": two / one, "runs_per_s": rates}
