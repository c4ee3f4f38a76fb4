"""Benchmark, first part: transfers through the HTTP API as `make up` serves it.

1. Seeds `wallets` users through the API (POST /users, then one deposit each), so every
   balance comes from real journal entries and the ledger invariants hold from the start.
2. pgbench's TPC-B at 16 clients: the ceiling this PostgreSQL can commit.
3. Transfers between random pairs of those users at 1, 16 and 64 concurrent clients.
4. A hot wallet: 16 clients all transferring out of one user, then a check that nothing
   was lost: sender balance + sum received + fees == the starting total, every journal
   entry sums to zero and every balance equals its postings.
Each measurement is repeated and the median of the repeats is printed.

Environment: API_URL, ADMIN_TOKEN (a token of scope admin), DATABASE_URL (the same database
the API uses, read for the checks). The API should run with TRANSFER_FEE_BPS=150.
"""
from __future__ import annotations

import os
import pathlib
import statistics
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
import requests

from bench import cpu, ledger_checks, loadgen, pgbench

#: The fee the benchmark is specified with, in basis points; another fee is reported, not refused.
TRANSFER_FEE_BPS_EXPECTED = 150
CURRENCY = "SGD"
#: What each seeded user and the hot sender start with, in major units.
SEED_AMOUNT = "100000.00"
HOT_SEED_AMOUNT = "10000000.00"
#: Targets for this 2-core machine, from the issue.
RATE_16_MIN_PER_S = 1_000
LATENCY_P99_16_MAX_MS = 50
PGBENCH_RATIO_MIN = 0.3
#: Threads that seed users and deposits through the API.
SEED_THREADS = 16
REQUEST_TIMEOUT_S = 30


@dataclass(frozen=True)
class Shape:
    """How long and how often to measure; `--quick` is a smoke test for CI."""

    wallets: int
    repeats: int
    warmup_s: float
    window_s: float
    pgbench_s: int
    clients: tuple[int, ...] = (1, 16, 64)
    hot_clients: int = 16
    pgbench_clients: int = 16


FULL = Shape(wallets=1_000, repeats=3, warmup_s=2, window_s=10, pgbench_s=15)
QUICK = Shape(wallets=100, repeats=1, warmup_s=0.5, window_s=2, pgbench_s=3)


class Api:
    def __init__(self, api_url: str, token: str):
        self.api_url = api_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    def post(self, session: requests.Session, path: str, body: dict, key: bool = False) -> dict:
        headers = {**self.headers, **({"Idempotency-Key": str(uuid.uuid4())} if key else {})}
        response = session.post(f"{self.api_url}/api/v1{path}", json=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
        if response.status_code != 201:
            raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text[:300]}")
        return response.json()


def seed_users(api: Api, count: int, amount: str, label: str) -> list[str]:
    """Creates `count` users through the API and deposits `amount` into each; their ids."""
    run_id = uuid.uuid4().hex[:10]
    sessions: dict[int, requests.Session] = {}

    def one(number: int) -> str:
        import threading
        session = sessions.setdefault(threading.get_ident(), requests.Session())
        user = api.post(session, "/users", {"name": f"{label} {number}",
                                            "email": f"{label.replace(' ', '-')}-{run_id}-{number}@bench.invalid"})
        api.post(session, "/wallet/deposit", {"user_id": user["id"], "amount": amount, "currency": CURRENCY}, key=True)
        return user["id"]

    with ThreadPoolExecutor(SEED_THREADS) as pool:
        return list(pool.map(one, range(count)))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def measure(plan: loadgen.Plan, clients: int, shape: Shape, seed: int, server: cpu.ServerCpu) -> dict:
    load = loadgen.run(plan, clients, shape.warmup_s, shape.window_s, seed, server.seconds)
    generator_share = load.generator_cpu_s / (shape.warmup_s + shape.window_s + 0.3) / os.cpu_count()
    # Cores busy with anything but this benchmark (other jobs on a shared machine), when the
    # web processes are known; otherwise their CPU would count as "other".
    other_cores = (load.machine_busy * os.cpu_count() - sum(load.server_cpu_s.values()) / shape.window_s
                   - generator_share * os.cpu_count()) if "web" in load.server_cpu_s else float("nan")
    return {"other_load_cores": other_cores,
            "cpu_us_per_transfer": {**load.server_cpu_us_per_transfer(),
                                    "generator": load.generator_cpu_s * 1e6 / max(1, load.created_all)},
            "clients": clients, "rate_per_s": load.rate_per_s, "latency_ms_p50": load.latency_ms(0.50),
            "latency_ms_p99": load.latency_ms(0.99), "statuses": load.statuses, "error_codes": load.error_codes,
            "machine_busy": load.machine_busy,
            "generator_cpu_share": generator_share,
            "load": load}


def summarise(runs: list[dict]) -> dict:
    return {"clients": runs[0]["clients"], "repeats": len(runs),
            "rate_per_s": _median([run["rate_per_s"] for run in runs]),
            "latency_ms_p50": _median([run["latency_ms_p50"] for run in runs]),
            "latency_ms_p99": _median([run["latency_ms_p99"] for run in runs]),
            "rates_per_s": [round(run["rate_per_s"], 1) for run in runs],
            "machine_busy": _median([run["machine_busy"] for run in runs]),
            "generator_cpu_share": _median([run["generator_cpu_share"] for run in runs]),
            "other_load_cores": _median([run["other_load_cores"] for run in runs]),
            "cpu_us_per_transfer": {name: _median([run["cpu_us_per_transfer"].get(name, float("nan")) for run in runs])
                                    for name in runs[0]["cpu_us_per_transfer"]},
            "non_201": sum(sum(count for status, count in run["statuses"].items() if status != 201) for run in runs),
            "error_codes": {code: sum(run["error_codes"].get(code, 0) for run in runs)
                            for code in {code for run in runs for code in run["error_codes"]}}}


def hot_wallet_state(database_url: str, sender: str, receivers: list[str]) -> dict:
    with psycopg.connect(ledger_checks.libpq_url(database_url), autocommit=True) as connection:
        sender_id, sender_balance = connection.execute(
            "SELECT id, balance FROM wallets WHERE user_id = %s AND currency = %s", (sender, CURRENCY)).fetchone()
        received = connection.execute(
            "SELECT coalesce(sum(balance), 0) FROM wallets WHERE user_id = ANY(%s::uuid[]) AND currency = %s",
            (receivers, CURRENCY)).fetchone()[0]
        entries = connection.execute(
            "SELECT count(*) FROM journal_entries WHERE from_user_id = %s", (sender,)).fetchone()[0]
    return {"wallet_id": sender_id, "sender": sender_balance, "receivers": received, "entries": entries}


def fees_posted(database_url: str, entry_ids: list[str]) -> int:
    with psycopg.connect(ledger_checks.libpq_url(database_url), autocommit=True) as connection:
        return connection.execute(
            "SELECT coalesce(sum(p.amount), 0) FROM postings p JOIN wallets w ON w.id = p.wallet_id"
            " WHERE p.journal_entry_id = ANY(%s::uuid[]) AND w.system_name = 'fees'", (entry_ids,)).fetchone()[0]


def hot_wallet_run(api: Api, database_url: str, receivers: list[str], shape: Shape, repeat: int,
                   server: cpu.ServerCpu) -> dict:
    """All transfers leave one freshly funded sender; then the money is counted."""
    sender = seed_users(api, 1, HOT_SEED_AMOUNT, "bench hot sender")[0]
    before = hot_wallet_state(database_url, sender, receivers)
    plan = loadgen.Plan(api.api_url, api.headers["Authorization"][7:], [sender], receivers)
    run = measure(plan, shape.hot_clients, shape, seed=900 + repeat, server=server)
    load: loadgen.Load = run.pop("load")
    after = hot_wallet_state(database_url, sender, receivers)
    received = after["receivers"] - before["receivers"]
    fees = fees_posted(database_url, load.entry_ids)
    checks = {
        "sender + received + fees == starting total": after["sender"] + received + fees == before["sender"],
        "sender paid what the 201 answers say": before["sender"] - after["sender"] == load.moved_minor_all + load.fees_minor_all,
        "receivers got what the 201 answers say": received == load.moved_minor_all,
        "fees posted == fees answered": fees == load.fees_minor_all,
        "one journal entry per 201 answer": after["entries"] - before["entries"] == load.created_all,
        "every balance_after of the sender is its running sum": ledger_checks.running_balance_breaks(
            database_url, before["wallet_id"]) == 0,
    }
    return {**run, "transfers": load.created_all, "starting_minor": before["sender"], "sender_minor": after["sender"],
            "received_minor": received, "fees_minor": fees, "checks": checks}


def fee_bps_of(api: Api, users: list[str]) -> float:
    """The server's fee, probed with one transfer of 100.00."""
    answer = api.post(requests.Session(), "/wallet/transfer", {"from_user_id": users[0], "to_user_id": users[1],
                                                              "amount": "100.00", "currency": CURRENCY}, key=True)
    return loadgen.minor_of(answer["fee"], 2) * 10_000 / 10_000  # fee / amount, both in cents, in bps


def main(quick: bool = False) -> dict:
    shape = QUICK if quick else FULL
    api_url = os.environ.get("API_URL", "http://127.0.0.1:8088")
    database_url = os.environ.get("DATABASE_URL", "postgresql+psycopg://wallet@127.0.0.1:54329/wallet")
    token = os.environ.get("ADMIN_TOKEN") or ""
    assert token, "ADMIN_TOKEN must hold a token of scope admin (make bench sets it)"
    api = Api(api_url, token)
    server = cpu.ServerCpu(database_url, pathlib.Path(os.environ.get("BENCH_WEB_PID_FILE", cpu.WEB_PID_FILE)))
    print(f"transfers: seeding {shape.wallets} users with {SEED_AMOUNT} {CURRENCY} each through {api_url}", flush=True)
    users = seed_users(api, shape.wallets, SEED_AMOUNT, "bench user")
    fee_bps = fee_bps_of(api, users)
    if fee_bps != TRANSFER_FEE_BPS_EXPECTED:
        print(f"transfers: WARNING the API charges {fee_bps:g} bps, the benchmark is specified with "
              f"TRANSFER_FEE_BPS={TRANSFER_FEE_BPS_EXPECTED}", flush=True)
    pgbench.initialise(database_url, scale=shape.pgbench_clients)
    pgbench_tps = [pgbench.tps(database_url, shape.pgbench_clients, 2, shape.pgbench_s) for _ in range(shape.repeats)]
    print(f"transfers: pgbench TPC-B, {shape.pgbench_clients} clients: {[round(value) for value in pgbench_tps]} tps",
          flush=True)
    plan = loadgen.Plan(api_url, token, users, users)
    runs: dict[int, list[dict]] = {clients: [] for clients in shape.clients}
    for repeat in range(shape.repeats):
        for clients in shape.clients:
            run = measure(plan, clients, shape, seed=repeat * 10 + clients, server=server)
            run.pop("load")
            runs[clients].append(run)
            print(f"transfers: repeat {repeat + 1}, {clients:>2} clients: {run['rate_per_s']:7.1f}/s, "
                  f"p50 {run['latency_ms_p50']:.1f} ms, p99 {run['latency_ms_p99']:.1f} ms", flush=True)
    hot = [hot_wallet_run(api, database_url, users, shape, repeat, server) for repeat in range(shape.repeats)]
    invariants = ledger_checks.violations(database_url)
    return report(shape, fee_bps, statistics.median(pgbench_tps), pgbench_tps,
                  {clients: summarise(found) for clients, found in runs.items()}, hot, invariants)


def report(shape: Shape, fee_bps: float, pgbench_median: float, pgbench_tps: list[float], summaries: dict,
           hot: list[dict], invariants: dict) -> dict:
    print(f"\n== transfers through the HTTP API ({shape.wallets} wallets, fee {fee_bps:g} bps, "
          f"median of {shape.repeats} x {shape.window_s:g} s) ==")
    print(f"{'clients':>7} {'transfers/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'CPU busy':>9} {'other':>6} {'non-201':>8}"
          f"   CPU per transfer (us): web, postgres, load generator")
    for summary in summaries.values():
        per = summary["cpu_us_per_transfer"]
        print(f"{summary['clients']:>7} {summary['rate_per_s']:>12.1f} {summary['latency_ms_p50']:>8.1f} "
              f"{summary['latency_ms_p99']:>8.1f} {summary['machine_busy']:>9.0%} {summary['other_load_cores']:>6.2f}"
              f" {summary['non_201']:>8}"
              f"   {per.get('web', float('nan')):.0f}, {per['postgres']:.0f}, {per['generator']:.0f}")
    print(f"CPU busy: share of the {os.cpu_count()} cores in use during the window, by any process; other: cores"
          " busy with work that is not this benchmark's (web, PostgreSQL backends, load generator)")
    at_16 = summaries.get(16)
    ratio = at_16["rate_per_s"] / pgbench_median if at_16 else float("nan")
    print(f"pgbench TPC-B ({shape.pgbench_clients} clients, scale {shape.pgbench_clients}): "
          f"{pgbench_median:.0f} tps (runs {[round(value) for value in pgbench_tps]})")
    print(f"ratio transfers/s at 16 clients to pgbench tps: {ratio:.2f}")
    if at_16 and "web" in at_16["cpu_us_per_transfer"]:
        cpu_us = sum(at_16["cpu_us_per_transfer"].values())
        print(f"CPU-bound ceiling at 16 clients: {cpu_us:.0f} us of CPU per transfer (web + postgres + generator),"
              f" so {os.cpu_count()} otherwise idle cores allow at most {os.cpu_count() * 1e6 / cpu_us:.0f} transfers/s")
    hot_rate = _median([run["rate_per_s"] for run in hot])
    hot_p99 = _median([run["latency_ms_p99"] for run in hot])
    hot_ok = all(all(run["checks"].values()) for run in hot)
    print(f"hot wallet ({shape.hot_clients} clients, one sender): {hot_rate:.1f} transfers/s, "
          f"p50 {_median([run['latency_ms_p50'] for run in hot]):.1f} ms, p99 {hot_p99:.1f} ms")
    for run in hot:
        print(f"  {run['transfers']} transfers: start {run['starting_minor'] / 100:.2f} = sender {run['sender_minor'] / 100:.2f}"
              f" + received {run['received_minor'] / 100:.2f} + fees {run['fees_minor'] / 100:.2f}: "
              f"{'nothing lost' if all(run['checks'].values()) else 'MISMATCH'}")
        for name, passed in run["checks"].items():
            if not passed:
                print(f"    FAILED: {name}")
    for name, count in invariants.items():
        print(f"  ledger: {name}: {count}")
    targets = {
        f"rate at 16 clients >= {RATE_16_MIN_PER_S}/s": bool(at_16) and at_16["rate_per_s"] >= RATE_16_MIN_PER_S,
        f"p99 at 16 clients <= {LATENCY_P99_16_MAX_MS} ms": bool(at_16) and at_16["latency_ms_p99"] <= LATENCY_P99_16_MAX_MS,
        f"ratio to pgbench >= {PGBENCH_RATIO_MIN}": ratio >= PGBENCH_RATIO_MIN,
        "hot wallet lost nothing": hot_ok,
        "ledger invariants hold": not any(invariants.values()),
    }
    for name, met in targets.items():
        print(f"target {'met    ' if met else 'MISSED '} {name}")
    return {"shape": vars(shape), "fee_bps": fee_bps, "pgbench_tps_median": pgbench_median, "pgbench_tps": pgbench_tps,
            "transfers": {str(clients): summary for clients, summary in summaries.items()},
            "ratio_to_pgbench_16": ratio, "hot_wallet": hot, "ledger_violations": invariants, "targets": targets,
            "web": {name: os.environ.get(name) for name in ("WEB_WORKERS", "WEB_THREADS", "DATABASE_POOL_SIZE")}}
