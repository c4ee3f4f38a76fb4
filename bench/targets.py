"""Issue 12's table: every figure of `make bench` against the baseline measured in the same run.

Called by `python -m bench` after its parts, with their results. Each line names the figure,
the baseline it is divided by (a measurement of this run, never a stored number), the ratio,
the issue's goal and whether it is met. A line whose part did not run says so.

Goals (issue 12, "Performance: bulk credits near the floor, transfers at 1,000 per second"):

- bulk credit, 100,000 rows: end to end at most 2.5 times the raw-SQL floor's time
  (bench/bulk_baselines.py `floor`, the same rows on the same server);
- bulk credit, 1,000,000 rows: at most 30 s end to end; its floor is printed beside it;
- transfers through HTTP at 16 clients: at least 1,000/s, p99 at most 50 ms, at least 0.3
  of pgbench's TPC-B rate at 16 clients on the same server;
- hot wallet (every transfer from one sender, 16 clients): at least 500/s;
- 2 worker processes against 1 (chunk application only): at least 1.5 times.
"""
from __future__ import annotations

import math

FLOOR_RATIO_MAX = 2.5
MILLION_ROWS = 1_000_000
MILLION_SECONDS_MAX = 30
TRANSFERS_MIN_PER_S = 1_000
TRANSFERS_P99_MAX_MS = 50
PGBENCH_RATIO_MIN = 0.3
HOT_WALLET_MIN_PER_S = 500
TWO_WORKERS_RATIO_MIN = 1.5


def lines(parts: dict) -> list[dict]:
    """The table's rows: {workload, figure, baseline, ratio, goal, met}; ratio and met are
    None where the part that measures them did not run (or failed)."""
    rows: list[dict] = []
    rows += _bulk(parts.get("bulk") or {})
    rows += _transfers(parts.get("transfers") or {})
    rows += _workers(parts.get("bulk") or {}, parts.get("scaleout") or {})
    return rows


def _row(workload: str, figure: str, baseline: str, ratio: float | None, goal: str, met: bool | None) -> dict:
    return {"workload": workload, "figure": figure, "baseline": baseline, "ratio": ratio, "goal": goal, "met": met}


def _bulk(bulk: dict) -> list[dict]:
    end_to_end, floors = bulk.get("end_to_end") or {}, bulk.get("floors") or {}
    rows = []
    for size in sorted(end_to_end, key=int):
        ours, floor = end_to_end[size], floors.get(size) or floors.get(str(size))
        seconds = ours["median_seconds"]
        ratio = seconds / floor["seconds"] if floor else None
        workload = f"bulk credit, {int(size):,} rows"
        if int(size) >= MILLION_ROWS:
            rows.append(_row(workload, f"{seconds:.1f} s end to end",
                             f"floor {floor['seconds']:.1f} s" if floor else "floor not run",
                             ratio, f"<= {MILLION_SECONDS_MAX} s ({seconds / MILLION_SECONDS_MAX:.2f} x the goal)",
                             seconds <= MILLION_SECONDS_MAX))
        else:
            rows.append(_row(workload, f"{seconds:.2f} s, {ours['median_rate_per_s']:,.0f} rows/s",
                             f"floor {floor['seconds']:.2f} s" if floor else "floor not run", ratio,
                             f"<= {FLOOR_RATIO_MAX} x the floor", ratio is not None and ratio <= FLOOR_RATIO_MAX))
    return rows or [_row("bulk credit", "not run", "", None, "", None)]


def _transfers(transfers: dict) -> list[dict]:
    at_16 = (transfers.get("transfers") or {}).get("16")
    if not at_16:
        return [_row("transfers, 16 clients", "not run", "", None, "", None)]
    pgbench = transfers["pgbench_tps_median"]
    rate, p99 = at_16["rate_per_s"], at_16["latency_ms_p99"]
    ratio = rate / pgbench
    hot = [run["rate_per_s"] for run in transfers.get("hot_wallet") or []]
    hot_rate = sorted(hot)[len(hot) // 2] if hot else math.nan
    return [
        _row("transfers, 16 clients", f"{rate:,.1f}/s", f"pgbench {pgbench:,.0f} tps", ratio,
             f">= {PGBENCH_RATIO_MIN} of pgbench, >= {TRANSFERS_MIN_PER_S:,}/s",
             ratio >= PGBENCH_RATIO_MIN and rate >= TRANSFERS_MIN_PER_S),
        _row("transfers, 16 clients, p99", f"{p99:.1f} ms", f"goal {TRANSFERS_P99_MAX_MS} ms",
             p99 / TRANSFERS_P99_MAX_MS, f"<= {TRANSFERS_P99_MAX_MS} ms", p99 <= TRANSFERS_P99_MAX_MS),
        _row("hot wallet, 16 clients", f"{hot_rate:,.1f}/s", f"pgbench {pgbench:,.0f} tps", hot_rate / pgbench,
             f">= {HOT_WALLET_MIN_PER_S}/s", hot_rate >= HOT_WALLET_MIN_PER_S),
    ]


def _workers(bulk: dict, scaleout: dict) -> list[dict]:
    rows = []
    workers = bulk.get("workers")
    if workers:
        ratio = workers["two_over_one"]
        rows.append(_row("2 worker processes against 1 (bench.bulk)",
                         f"{workers['two_processes_rate_per_s']:,.0f} rows/s",
                         f"1 process {workers['one_process_rate_per_s']:,.0f} rows/s", ratio,
                         f">= {TWO_WORKERS_RATIO_MIN} x", ratio >= TWO_WORKERS_RATIO_MIN))
    ceiling = bulk.get("cores")
    if ceiling:
        rows.append(_row("2 PostgreSQL connections against 1, CPU only", f"{ceiling['two_per_s']:.2f} queries/s",
                         f"1 connection {ceiling['one_per_s']:.2f} queries/s", ceiling["two_over_one"],
                         "(the ceiling for 2 workers here)", None))
    for kind, unit in (("chunk_rows_per_s", "rows/s"), ("transfers_per_s", "transfers/s")):
        curve = scaleout.get(kind) or {}
        one = curve.get("1")
        for processes in sorted((p for p in curve if p != "1"), key=int):
            figures = curve[processes]
            name = "worker" if kind.startswith("chunk") else "web"
            goal = f">= {TWO_WORKERS_RATIO_MIN} x" if name == "worker" and processes == "2" else "(no goal)"
            met = figures["ratio_to_1"] >= TWO_WORKERS_RATIO_MIN if goal != "(no goal)" else None
            rows.append(_row(f"{processes} {name} processes against 1 (bench.scaleout)",
                             f"{figures['median_per_s']:,.0f} {unit}",
                             f"1 process {one['median_per_s']:,.0f} {unit}", figures["ratio_to_1"], goal, met))
    return rows or [_row("worker processes", "not run", "", None, "", None)]


def report(parts: dict, load: dict) -> list[dict]:
    """Prints the table and returns its rows; `load` holds the load averages seen by the run."""
    rows = lines(parts)
    print(f"\n== issue 12: each figure against its baseline from this run (load average "
          f"{load.get('min', math.nan):.1f} to {load.get('max', math.nan):.1f} on {load.get('cores')} cores) ==")
    print(f"{'workload':<48} {'figure':<28} {'baseline':<26} {'ratio':>6}  {'goal':<40} met")
    for row in rows:
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}"
        met = {True: "yes", False: "MISSED", None: "-"}[row["met"]]
        print(f"{row['workload']:<48} {row['figure']:<28} {row['baseline']:<26} {ratio:>6}  {row['goal']:<40} {met}")
    return rows
