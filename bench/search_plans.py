"""The lists of issue 11 on 1,000,000 rows: every filter's query plan and its time.

In a database of its own (`wallet_bench_search`), generated with set-based SQL (triggers
skipped, as in bench/reconciliation.py): 1,000,000 users with a wallet each, 1,000,000
journal entries with two postings each (kinds, references and activities mixed in, spread
over 200 days), 1,000,000 bulk activities (two totals rows each) and 1,000,000 audit events
by 20 API keys. Each list is then
read through its real storage method (storage/search.py, storage/bulk/reads.py,
storage/audit.py) with each filter, first page and a page further on. A query runs ten
times on one connection, so psycopg prepares it from the sixth run on (its
prepare_threshold, 5) and PostgreSQL may switch to a generic plan, as in the API; the
median of the last five runs is printed with the indexes of the query's plan (EXPLAIN
ANALYZE with the captured parameters) and whether any plan step scans a table whole.

The baseline, measured in the same run: the primary-key lookup of one row of the same
table, the floor of any indexed read. The check: no sequential scan on a large table.
"""
from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy import event, text

from bench.reconciliation import generated_database
from pipeline.config import Settings
from storage.audit import SqlAuditTrail
from storage.bulk import SqlBulkCredits
from storage.engine import make_engine
from storage.search import SqlSearch

DATABASE = "wallet_bench_search"
ROWS = 1_000_000
RUNS, TIMED_RUNS = 10, 5
PAGE = 21  #: a page of 20 and one more, as the API reads it
#: Tables of a few rows, which PostgreSQL rightly reads whole (the audit list joins the keys).
SMALL_TABLES = {"api_keys"}

_GENERATE = [
    "INSERT INTO users (id, name, email, external_id, created_at)"
    " SELECT gen_random_uuid(), 'bench', 'bench-' || g || '@example.test', 'ext-' || g,"
    "        now() - make_interval(secs => (:n - g) * 17.28e6 / :n) FROM generate_series(1, :n) g",
    "INSERT INTO wallets (user_id, currency) SELECT id, 'SGD' FROM users",
    "INSERT INTO wallets (system_name, shard, currency) VALUES ('bank', 0, 'SGD')",
    "CREATE TEMP TABLE plan AS SELECT w.id AS wallet_id, w.user_id, gen_random_uuid() AS entry_id,"
    " row_number() OVER () AS g FROM wallets w WHERE w.user_id IS NOT NULL",
    "INSERT INTO journal_entries (id, kind, currency, amount, to_user_id, reference, activity_id, created_at)"
    " SELECT entry_id, (ARRAY['deposit', 'deposit', 'deposit', 'transfer', 'withdrawal'])[1 + g % 5], 'SGD', 100,"
    "        user_id, CASE WHEN g % 10 = 0 THEN 'ref-' || g END,"
    "        CASE WHEN g % 100 = 0 THEN gen_random_uuid() END, now() - make_interval(secs => (:n - g) * 17.28e6 / :n)"
    "   FROM plan",
    "INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
    " SELECT entry_id, wallet_id, 'SGD', 100, 100 FROM plan",
    "INSERT INTO postings (journal_entry_id, wallet_id, currency, amount, balance_after)"
    " SELECT p.entry_id, b.id, 'SGD', -100, -100 * p.g FROM plan p, wallets b WHERE b.system_name = 'bank'",
    "INSERT INTO bulk_activities (id, status, file_name, created_at, completed_at)"
    " SELECT gen_random_uuid(), s.status, 'payout-' || g || '.csv', t.at,"
    "        CASE WHEN s.status IN ('COMPLETED', 'CANCELLED') THEN t.at END"
    "   FROM generate_series(1, :n) g,"
    "        LATERAL (SELECT CASE WHEN g % 1000 = 0 THEN 'AWAITING_APPROVAL' WHEN g % 50 = 0 THEN 'CANCELLED'"
    "                             ELSE 'COMPLETED' END AS status) s,"
    "        LATERAL (SELECT now() - make_interval(secs => (:n - g) * 17.28e6 / :n) AS at) t",
    # Per-currency totals as the trigger of migration 0017 appends them: a delta per statement.
    "INSERT INTO bulk_activity_totals (activity_id, currency, valid_amount, credited_amount, failed_amount,"
    " cancelled_amount) SELECT id, 'SGD', 100, d, 0, 0 FROM bulk_activities, (VALUES (0), (100)) deltas (d)",
    "INSERT INTO api_keys (scope, token_sha256, label) SELECT 'operator', md5(g::text), 'bench ' || g"
    " FROM generate_series(1, 20) g",
    "INSERT INTO audit_events (at, actor_type, api_key_id, action, object_type, object_id)"
    " SELECT now() - make_interval(secs => (:n - g) * 17.28e6 / :n), 'api_key', 1 + g % 20,"
    "        (ARRAY['bulk_credit.upload', 'bulk_credit.approve', 'hold.capture', 'wallet.freeze'])[1 + g % 4],"
    "        'activity', 'object-' || g FROM generate_series(1, :n) g",
]


def generate(settings: Settings, rows: int) -> Settings:
    began = time.monotonic()
    bench_settings = generated_database(settings, DATABASE, _GENERATE, {"n": rows})
    print(f"search: generated {rows:,} users, entries (x2 postings), activities and audit events"
          f" in {time.monotonic() - began:.0f} s", flush=True)
    return bench_settings


def _samples(connection) -> dict[str, Any]:
    """Filter values that exist: a middle row of each table, and a time range 150 days back."""
    one = lambda sql: connection.exec_driver_sql(sql).scalar_one()  # noqa: E731
    now = datetime.now(timezone.utc)
    return {"email": one("SELECT email FROM users ORDER BY seq OFFSET 500 LIMIT 1"),
            "external_id": one("SELECT external_id FROM users ORDER BY seq OFFSET 700 LIMIT 1"),
            "user_id": one("SELECT user_id::text FROM wallets WHERE user_id IS NOT NULL LIMIT 1"),
            "reference": one("SELECT reference FROM journal_entries WHERE reference IS NOT NULL LIMIT 1"),
            "activity_id": one("SELECT activity_id::text FROM journal_entries WHERE activity_id IS NOT NULL LIMIT 1"),
            "object_id": one("SELECT object_id FROM audit_events ORDER BY id OFFSET 900 LIMIT 1"),
            "after": now - timedelta(days=151), "before": now - timedelta(days=150),
            "entry_id": one("SELECT id::text FROM journal_entries LIMIT 1")}


def cases(s: dict[str, Any], rows: int) -> list[tuple[str, str, Callable]]:
    """(list, filter, call(connection)) for each filter of API.md's lists, and the baselines."""
    long_ago = (s["before"], "ffffffff-ffff-ffff-ffff-ffffffffffff")
    middle = f"halfway, page {rows // 2 // (PAGE - 1):,}"
    entries = lambda filters, before=None: lambda c: SqlSearch(c).entries(filters, before, PAGE)  # noqa: E731
    activities = lambda filters, before=None: lambda c: SqlBulkCredits(c).list_activities(  # noqa: E731
        {"statuses": None, "file_name": None, "created_after": None, "created_before": None, **filters}, before, PAGE)
    audit = lambda before_id=None, **filters: lambda c: SqlAuditTrail(c).page(  # noqa: E731
        {"api_key_id": None, "actor_type": None, "action": None, "object_id": None, **filters}, before_id, PAGE)
    return [
        ("baseline", "journal entry by id", lambda c: c.execute(
            text("SELECT * FROM journal_entries WHERE id = CAST(:id AS uuid)"), {"id": s["entry_id"]}).all()),
        ("users", "newest", lambda c: SqlSearch(c).users({}, None, PAGE)),
        ("users", "email", lambda c: SqlSearch(c).users({"email": s["email"]}, None, PAGE)),
        ("users", "external_id", lambda c: SqlSearch(c).users({"external_id": s["external_id"]}, None, PAGE)),
        ("users", middle, lambda c: SqlSearch(c).users({}, rows // 2, PAGE)),
        ("transactions", "newest", entries({})),
        ("transactions", "reference", entries({"reference": s["reference"]})),
        ("transactions", "activity_id", entries({"activity_id": s["activity_id"]})),
        ("transactions", "user_id", entries({"user_id": s["user_id"]})),
        ("transactions", "kind=withdrawal", entries({"kind": "withdrawal"})),
        ("transactions", "150 days back, 1 day", entries({"created_after": s["after"], "created_before": s["before"]})),
        ("transactions", "kind + days", entries({"kind": "transfer", "created_after": s["after"],
                                                 "created_before": s["before"]})),
        ("transactions", "newest, from 150 days back", entries({}, long_ago)),
        ("activities", "newest", activities({})),
        ("activities", "status=AWAITING_APPROVAL", activities({"statuses": ["AWAITING_APPROVAL"]})),
        ("activities", "file_name part", activities({"file_name": "yout-77777"})),
        ("activities", "150 days back, 1 day", activities({"created_after": s["after"], "created_before": s["before"]})),
        ("activities", middle, activities({}, rows // 2)),
        ("audit events", "newest", audit()),
        ("audit events", "actor", audit(api_key_id=7)),
        ("audit events", "action", audit(action="wallet.freeze")),
        ("audit events", "object_id", audit(object_id=s["object_id"])),
        ("audit events", middle, audit(before_id=rows // 2)),
    ]


def measure(engine, call: Callable) -> tuple[float, str, bool]:
    """Median milliseconds of the last TIMED_RUNS of RUNS calls on one connection; the indexes
    the last statement's plan reads; whether a plan step scans a table whole."""
    captured: list[tuple[str, Any]] = []
    with engine.connect() as connection:
        listener = lambda conn, cursor, statement, params, context, many: captured.append(  # noqa: E731
            (statement, params))
        times = []
        event.listen(connection, "before_cursor_execute", listener)
        for _ in range(RUNS):
            captured.clear()
            began = time.perf_counter()
            call(connection)
            times.append((time.perf_counter() - began) * 1000)
        event.remove(connection, "before_cursor_execute", listener)
        statement, params = captured[-1]
        plan = connection.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).scalar_one()
        connection.rollback()
    nodes = list(_nodes(plan[0]["Plan"]))
    indexes = sorted({node["Index Name"] for node in nodes if "Index Name" in node})
    whole = sorted({node["Relation Name"] for node in nodes if node["Node Type"] == "Seq Scan"
                    and node["Relation Name"] not in SMALL_TABLES})
    return statistics.median(times[-TIMED_RUNS:]), ", ".join(indexes) or "-", ", ".join(whole)


def _nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def main(quick: bool = False) -> dict:
    rows = 100_000 if quick else ROWS
    settings = generate(Settings.from_environ(), rows)
    engine = make_engine(settings)
    with engine.connect() as connection:
        samples = _samples(connection)
    results, baseline_ms = [], None
    print(f"{'list':<13} {'filter':<26} {'median ms':>9} {'x baseline':>10}  scans whole table  indexes", flush=True)
    for name, label, call in cases(samples, rows):
        median_ms, indexes, whole = measure(engine, call)
        baseline_ms = baseline_ms or median_ms
        results.append({"list": name, "filter": label, "median_ms": round(median_ms, 2),
                        "ratio": round(median_ms / baseline_ms, 1), "indexes": indexes, "seq_scan": whole})
        print(f"{name:<13} {label:<26} {median_ms:>9.2f} {median_ms / baseline_ms:>9.1f}x  {whole or 'no':<17}"
              f"  {indexes}", flush=True)
    engine.dispose()
    scans = [f"{r['list']}: {r['filter']}" for r in results if r["seq_scan"]]
    print(f"search: {len(results) - 1} list queries on {rows:,} rows each; sequential scans: {scans or 'none'}")
    return {"rows": rows, "queries": results, "seq_scans": scans}


if __name__ == "__main__":
    print(json.dumps(main(quick=True), indent=2))
