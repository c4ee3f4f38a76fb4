"""Reconciliation at scale: a full pass over 1,000,000 wallets with 2,000,000 postings,
and an incremental pass after 10,000 new postings.

The ledger is generated in its own database with set-based SQL (1,000,000 deposits, each a
journal entry with a user posting and a `bank` posting). Generation bypasses the
triggers for speed, but writes a consistent ledger: every run must come back clean.
The baseline, in the same run on the same PostgreSQL, is the floor of any check: one
sequential scan that sums every posting.

Targets on a 2-core machine: full at most 15 s, incremental at most 1 s.
"""
from __future__ import annotations

import dataclasses
import statistics
import time

from sqlalchemy import create_engine, text

from pipeline import reconciliation
from pipeline.config import Settings
from storage.engine import make_engine
from storage.migrate import upgrade
from storage.reconciliation import WORK_MEM_MB
from storage.unit_of_work import SqlUnitOfWork

DATABASE = "wallet_bench_reconcile"
FULL_TARGET_S, INCREMENTAL_TARGET_S = 15.0, 1.0
#: Deposits (journal entries of two postings) before the full pass, and after it.
WALLETS, NEW_DEPOSITS = 1_000_000, 5_000
SHARDS = 8

_GENERATE = [
    "INSERT INTO users (id, name, email, created_at)"
    " SELECT gen_random_uuid(), 'bench', 'bench-' || g || '@example.test', now() FROM generate_series(1, :n) g",
    "INSERT INTO wallets (system_name, shard, currency) SELECT 'bank', s, 'SGD' FROM generate_series(0, :shards - 1) s",
    "CREATE TEMP TABLE plan AS SELECT u.id AS user_id, gen_random_uuid() AS entry_id, 100 + (row_number() OVER ()) % 9900 AS amount,"
    " (row_number() OVER ()) % :shards AS shard FROM users u WHERE NOT EXISTS (SELECT 1 FROM wallets w WHERE w.user_id = u.id)",
    "INSERT INTO wallets (user_id, currency, balance) SELECT user_id, 'SGD', amount FROM plan",
    "INSERT INTO journal_entries (id, kind, currency, amount, to_user_id) SELECT entry_id, 'deposit', 'SGD', amount, user_id FROM plan",
    "INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
    " SELECT p.entry_id, w.id, 'SGD', p.amount, p.amount FROM plan p JOIN wallets w ON w.user_id = p.user_id",
    "INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
    " SELECT p.entry_id, b.id, 'SGD', -p.amount,"
    "        b.balance - sum(p.amount) OVER (PARTITION BY b.id ORDER BY p.entry_id)"
    "   FROM plan p JOIN wallets b ON b.system_name = 'bank' AND b.shard = p.shard ORDER BY b.id, p.entry_id",
    "UPDATE wallets b SET balance = b.balance - t.total FROM (SELECT shard, sum(amount) AS total FROM plan GROUP BY shard) t"
    " WHERE b.system_name = 'bank' AND b.shard = t.shard",
]


def _admin_url(settings: Settings, database: str) -> str:
    return settings.database_url.rsplit("/", 1)[0] + "/" + database


def generated_database(settings: Settings, database: str, statements: list[str], params: dict) -> Settings:
    """`database` made again on settings' server, migrated, filled by `statements` (set-based SQL,
    triggers skipped: setup only) and vacuumed; the settings that point at it."""
    admin = create_engine(_admin_url(settings, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        connection.exec_driver_sql(f"CREATE DATABASE {database}")
    admin.dispose()
    bench_settings = dataclasses.replace(settings, database_url=_admin_url(settings, database))
    engine = make_engine(bench_settings)
    upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        for statement in statements:
            connection.execute(text(statement), params)
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return bench_settings


def generate(settings: Settings, wallets: int) -> Settings:
    began = time.monotonic()
    bench_settings = generated_database(settings, DATABASE, _GENERATE, {"n": wallets, "shards": SHARDS})
    print(f"reconciliation: generated {wallets:,} wallets and {2 * wallets:,} postings in {time.monotonic() - began:.0f} s")
    return bench_settings


def add_deposits(settings: Settings, count: int) -> None:
    """New deposits, through the ledger's triggers, into wallets that already exist."""
    engine = make_engine(settings)
    with engine.begin() as connection:
        connection.execute(text(
            "CREATE TEMP TABLE plan ON COMMIT DROP AS SELECT w.id AS wallet_id, w.balance, gen_random_uuid() AS entry_id,"
            " 500 AS amount FROM wallets w WHERE w.user_id IS NOT NULL ORDER BY random() LIMIT :n"), {"n": count})
        connection.execute(text("INSERT INTO journal_entries (id, kind, currency, amount)"
                                " SELECT entry_id, 'deposit', 'SGD', amount FROM plan"))
        connection.execute(text(
            "INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
            " SELECT entry_id, wallet_id, 'SGD', amount, balance + amount FROM plan"))
        connection.execute(text(
            "INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
            " SELECT p.entry_id, b.id, 'SGD', -p.amount, b.balance - sum(p.amount) OVER (ORDER BY p.entry_id)"
            "   FROM plan p CROSS JOIN (SELECT id, balance FROM wallets WHERE system_name = 'bank' AND shard = 0) b"
            "  ORDER BY p.entry_id"))
        connection.execute(text("UPDATE wallets w SET balance = w.balance + p.amount FROM plan p WHERE w.id = p.wallet_id"))
        connection.execute(text("UPDATE wallets SET balance = balance - :total WHERE system_name = 'bank' AND shard = 0"),
                           {"total": 500 * count})
    engine.dispose()


def timed_run(settings: Settings, full: bool) -> tuple[float, dict]:
    engine = make_engine(settings)
    began = time.monotonic()
    run = reconciliation.run(SqlUnitOfWork(engine), reconciliation.start(SqlUnitOfWork(engine), full))
    elapsed = time.monotonic() - began
    engine.dispose()
    return elapsed, run


def floor_s(settings: Settings) -> float:
    engine = make_engine(settings)
    began = time.monotonic()
    with engine.connect() as connection:
        connection.exec_driver_sql(f"SET work_mem = '{WORK_MEM_MB}MB'")  # as much memory as a run gets
        connection.execute(text("SELECT wallet_id, sum(amount) FROM postings GROUP BY wallet_id")).fetchall()
    elapsed = time.monotonic() - began
    engine.dispose()
    return elapsed


def main(quick: bool = False) -> dict:
    wallets = 50_000 if quick else WALLETS
    runs = 1 if quick else 3
    settings = generate(Settings.from_environ(), wallets)
    fulls, floors = [], []
    for _ in range(runs):
        floors.append(floor_s(settings))
        elapsed, run = timed_run(settings, full=True)
        assert run["status"] == "clean", run["mismatches"][:5]
        assert run["wallets_checked"] == wallets + SHARDS
        fulls.append(elapsed)
    incrementals = []
    for _ in range(runs):
        add_deposits(settings, NEW_DEPOSITS)
        elapsed, run = timed_run(settings, full=False)
        incrementals.append(elapsed)
        checked = run["wallets_checked"]
    full_s, incremental_s, floor = (statistics.median(values) for values in (fulls, incrementals, floors))
    print(f"reconciliation: full pass over {wallets:,} wallets / {2 * wallets:,} postings: median {full_s:.2f} s"
          f" (target <= {FULL_TARGET_S:.0f} s); floor (one GROUP BY over postings) {floor:.2f} s,"
          f" ratio {full_s / floor:.1f}x")
    print(f"reconciliation: incremental after {2 * NEW_DEPOSITS:,} new postings ({checked:,} wallets checked):"
          f" median {incremental_s:.2f} s (target <= {INCREMENTAL_TARGET_S:.0f} s)")
    return {"wallets": wallets, "postings": 2 * wallets, "full_s_median": full_s, "full_s_runs": fulls,
            "floor_s_median": floor, "full_over_floor": full_s / floor, "incremental_postings": 2 * NEW_DEPOSITS,
            "incremental_s_median": incremental_s, "incremental_s_runs": incrementals}
