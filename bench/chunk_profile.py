"""Where a bulk-credit chunk's time goes: per statement, per trigger, WAL, and what chunks wait on.

    python -m bench.chunk_profile [--rows 100000] [--workers 1 2] [--sides before after] [--explain-rows 10000]

Runs bench/bulk_compare.py's workload (the same driver, the same files: a reference on every
row, the default funding account topped up on the `after` side) for each side and number of
worker processes, on databases of its own (`<DATABASE_URL's name>_prof_before`, `_prof_after`),
and reads from the server what the chunks did:

- pg_stat_statements (track = all, so the statements inside trigger functions are counted
  apart, and COMMIT with its deferred triggers and WAL flush): time, calls, rows, WAL bytes;
- pg_stat_user_functions (track_functions = pl): time inside each PL/pgSQL trigger function;
- pg_stat_wal: WAL bytes and records of the whole run (upload included), per row;
- pg_stat_activity and pg_locks sampled every SAMPLE_S while the chunks run: what the active
  backends of the database wait on (no wait event = on CPU), and for lock waits which lock
  and which statement holds it;
- with --explain-rows, one more run (1 worker) with auto_explain (log_analyze,
  log_nested_statements, log_triggers) whose plans are copied from the server log into
  bench/results/chunk_explain-<side>.log.

The server must preload pg_stat_statements and auto_explain (shared_preload_libraries);
run it on a server of its own, since the settings above are changed with ALTER SYSTEM and
pg_stat_wal is the whole server's. Environment as bench/bulk_compare.py: DATABASE_URL,
REDIS_URL, BENCH_COMPARE_REDIS_DB, BENCH_BASELINE_COMMIT, BENCH_AFTER_TREE. Writes
bench/results/chunk_profile-<time>.json and prints the tables bench/README.md quotes.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from bench import bulk_compare as compare
from bench.chunk_report import label, report
from bench.ledger_checks import libpq_url

#: How often the active backends and their locks are read while chunks run, in seconds.
SAMPLE_S = 0.02
#: Statements shown per run, by total time.
TOP_STATEMENTS = 16
RESULTS = Path(__file__).parent / "results"
SETTINGS = {"pg_stat_statements.track": "all", "pg_stat_statements.track_utility": "on",
            "track_functions": "pl", "track_io_timing": "on"}
#: Statements of 5 ms or more: not the foreign keys' 10,000 one-row queries a chunk, whose
#: plans would be most of the log (they are counted by pg_stat_statements all the same).
EXPLAIN = {"auto_explain.log_min_duration": "5", "auto_explain.log_analyze": "on",
           "auto_explain.log_nested_statements": "on", "auto_explain.log_triggers": "on",
           "auto_explain.log_buffers": "on", "auto_explain.log_wal": "on"}


def admin(database_url: str, database: str = "postgres") -> psycopg.Connection:
    url = make_url(database_url).set(database=database).render_as_string(hide_password=False)
    return psycopg.connect(libpq_url(url), autocommit=True)


def configure(database_url: str, extra: dict[str, str], reset: list[str]) -> None:
    with admin(database_url) as connection:
        for name, value in {**SETTINGS, **extra}.items():
            connection.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        for name in reset:
            connection.execute(f"ALTER SYSTEM RESET {name}")
        connection.execute("SELECT pg_reload_conf()")
        libraries = connection.execute("SHOW shared_preload_libraries").fetchone()[0]
    assert "pg_stat_statements" in libraries and "auto_explain" in libraries, \
        f"the server preloads {libraries!r}: add pg_stat_statements and auto_explain, then restart it"


class Sampler(threading.Thread):
    """Counts what the database's active client backends wait on, every SAMPLE_S."""

    QUERY = """
    SELECT a.pid, coalesce(a.wait_event_type || ':' || a.wait_event, 'CPU'),
           left(regexp_replace(a.query, '\\s+', ' ', 'g'), 60),
           (SELECT string_agg(DISTINCT l.locktype || ' ' || coalesce(l.relation::regclass::text, '') || ' '
                              || l.mode, ', ')
              FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted),
           (SELECT string_agg(left(regexp_replace(b.query, '\\s+', ' ', 'g'), 60), ' | ')
              FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(a.pid)))
      FROM pg_stat_activity a
     WHERE a.datname = %s AND a.state = 'active' AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
       AND a.query NOT LIKE 'SELECT status, successful_records FROM bulk_activities%%'
    """

    def __init__(self, database_url: str):
        super().__init__(daemon=True)
        self.database = make_url(database_url).database
        self.connection = admin(database_url)
        self.stop = threading.Event()
        self.samples = 0
        self.waits: Counter = Counter()
        self.locks: Counter = Counter()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples += 1
            for _, wait, query, lock, blocker in self.connection.execute(self.QUERY, (self.database,)).fetchall():
                self.waits[wait] += 1
                if lock:
                    self.locks[f"{lock} | waiting: {query} | held by: {blocker}"] += 1
            time.sleep(SAMPLE_S)
        self.connection.close()


def vacuum(database_url: str) -> None:
    with admin(database_url, make_url(database_url).database) as connection:
        connection.execute("VACUUM (FREEZE, ANALYZE)")


def reset_stats(database_url: str) -> None:
    with admin(database_url, make_url(database_url).database) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        connection.execute("SELECT pg_stat_statements_reset(), pg_stat_reset(), pg_stat_reset_shared('wal')")


def read_stats(database_url: str) -> dict:
    with admin(database_url, make_url(database_url).database) as connection:
        statements = connection.execute("""
            SELECT toplevel, calls, round(total_exec_time::numeric, 1), rows, wal_bytes::bigint, wal_records,
                   shared_blks_hit, shared_blks_read, shared_blks_dirtied, regexp_replace(query, '\\s+', ' ', 'g')
              FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
             ORDER BY total_exec_time DESC""").fetchall()
        functions = connection.execute(
            "SELECT funcname, calls, round(total_time::numeric, 1), round(self_time::numeric, 1)"
            " FROM pg_stat_user_functions ORDER BY total_time DESC").fetchall()
        wal = connection.execute("SELECT wal_records, wal_fpi, wal_bytes::bigint, wal_sync, wal_write"
                                 " FROM pg_stat_wal").fetchone()
        # The run's own activity: the newest one.
        chunks = connection.execute("SELECT count(*) FROM bulk_chunks WHERE state = 'DONE' AND activity_id ="
                                    " (SELECT id FROM bulk_activities ORDER BY created_at DESC LIMIT 1)").fetchone()[0]
    found = [dict(zip(("toplevel", "calls", "total_ms", "rows", "wal_bytes", "wal_records", "hit", "read", "dirtied",
                       "query"), row)) for row in statements]
    for statement in found:
        statement["total_ms"] = float(statement["total_ms"])
        statement["label"] = label(statement["query"])
        statement["query"] = statement["query"][:200]
    return {"statements": found,
            "functions": [dict(zip(("function", "calls", "total_ms", "self_ms"), row)) for row in functions],
            "wal": dict(zip(("records", "full_page_images", "bytes", "syncs", "writes"), wal)),
            "chunks_done": chunks}


def profile_run(side: compare.Side, processes: int, users: list[str], directory: Path, tag: str) -> dict:
    path = directory / f"{tag}.csv"
    compare.write_csv(path, users, f"{tag}-{uuid.uuid4().hex[:8]}", int(time.time()))
    with compare.Workers(side, directory / f"workers-{tag}.log", processes) as workers:
        # The driver vacuums before it times; vacuum first here so that its WAL is not the run's.
        vacuum(side.database_url)
        reset_stats(side.database_url)
        sampler = Sampler(side.database_url)
        sampler.start()
        try:
            figures = side.driver("run", str(path), str(len(users)), str(workers.process.pid))
        finally:
            sampler.stop.set()
            sampler.join()
    stats = read_stats(side.database_url)
    path.unlink()
    total = sum(sampler.waits.values()) or 1
    return {**figures, **stats, "processes": processes, "samples": sampler.samples,
            "waits_share": {wait: round(count / total, 3) for wait, count in sampler.waits.most_common()},
            "lock_waits": dict(sampler.locks.most_common(12)),
            "active_backends_mean": round(total / max(sampler.samples, 1), 2)}


def explain_run(side: compare.Side, users: list[str], directory: Path, database_url: str) -> Path:
    """One run with auto_explain on; the plans of this run's chunk statements, from the server log."""
    with admin(database_url) as connection:
        # scripts/services.sh logs to <data directory>/server.log (pg_ctl -l), not by the logging collector.
        data, collected = connection.execute(
            "SELECT current_setting('data_directory'), pg_current_logfile()").fetchone()
    log_path = Path(data) / (collected or "server.log")
    start = log_path.stat().st_size if log_path.exists() else 0
    configure(database_url, EXPLAIN, [])
    try:
        run = profile_run(side, 1, users, directory, f"explain-{side.name}")
    finally:
        configure(database_url, {}, list(EXPLAIN))
    out = RESULTS / f"chunk_explain-{side.name}.log"
    with log_path.open("rb") as log:
        log.seek(start)
        out.write_bytes(log.read())
    print(f"  {side.name}: auto_explain of a {len(users):,}-row run ({run['seconds']:.1f} s) in {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.chunk_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sides", nargs="+", choices=compare.SIDES, default=list(compare.SIDES))
    parser.add_argument("--explain-rows", type=int, default=0, help="also an auto_explain run of this many rows")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    options = parser.parse_args(argv)
    database_url = os.environ["DATABASE_URL"]
    configure(database_url, {}, [])
    url = make_url(database_url)
    redis_base = os.environ.get("REDIS_URL", "redis://127.0.0.1:63799/0").rpartition("/")[0]
    redis_url = f"{redis_base}/{os.environ.get('BENCH_COMPARE_REDIS_DB', compare.COMPARE_REDIS_DB)}"
    baseline = os.environ.get("BENCH_BASELINE_COMMIT", compare.BASELINE_COMMIT)
    commit = compare.git("rev-parse", "--verify", f"{baseline}^{{commit}}")
    results: dict = {"started_at": datetime.now(timezone.utc).isoformat(), "baseline_commit": commit,
                     "head": compare.git("rev-parse", "--short", "HEAD"), "load_average_start": os.getloadavg(),
                     "runs": {}}
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chunk-profile-") as scratch:
        directory = Path(scratch)
        sides = {}
        for name in options.sides:
            tree = Path(os.environ.get("BENCH_AFTER_TREE", compare.ROOT))
            if name == "before":
                tree = directory / "before"
                tree.mkdir()
                compare.extract(commit, tree)
            database = url.set(database=f"{url.database}_prof_{name}").render_as_string(hide_password=False)
            sides[name] = compare.Side(name, tree, name, database, redis_url)
        users = [str(uuid.uuid4()) for _ in range(max(options.rows, options.explain_rows))]
        (directory / "users.txt").write_text("\n".join(users) + "\n")
        for side in sides.values():
            compare.recreate(side.database_url)
            side.driver("migrate")
            side.driver("seed", str(directory / "users.txt"))
        try:
            for processes in options.workers:
                for side in sides.values():
                    key = f"{side.name}, {processes} worker{'s' if processes > 1 else ''}"
                    results["runs"][key] = profile_run(side, processes, users[:options.rows], directory,
                                                       f"{side.name}-{processes}")
                    print(f"  {key}: {results['runs'][key]['seconds']:.1f} s, load {os.getloadavg()[0]:.1f}",
                          flush=True)
            if options.explain_rows:
                for side in sides.values():
                    explain_run(side, users[:options.explain_rows], directory, database_url)
        finally:
            if not options.keep:
                for side in sides.values():
                    compare.recreate(side.database_url, drop_only=True)
    results["load_average_end"] = os.getloadavg()
    report(results)
    start, end = results["load_average_start"], results["load_average_end"]
    print(f"\nload average (1, 5, 15 min): {start[0]:.2f} {start[1]:.2f} {start[2]:.2f} at the start,"
          f" {end[0]:.2f} {end[1]:.2f} {end[2]:.2f} at the end")
    path = RESULTS / f"chunk_profile-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results in {path}")
    return results


if __name__ == "__main__":
    main()
