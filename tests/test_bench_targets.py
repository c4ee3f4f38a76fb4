"""bench/targets.py: issue 12's table divides each figure by its baseline from the same run."""
from bench import targets


def parts(seconds_100k: float, floor_100k: float, rate_16: float, pgbench: float, hot: list[float]) -> dict:
    return {
        "bulk": {"end_to_end": {100_000: {"median_seconds": seconds_100k, "median_rate_per_s": 100_000 / seconds_100k},
                                1_000_000: {"median_seconds": 90.0, "median_rate_per_s": 11_111}},
                 "floors": {100_000: {"seconds": floor_100k}, 1_000_000: {"seconds": 30.0}},
                 "workers": {"one_process_rate_per_s": 8_000, "two_processes_rate_per_s": 12_800, "two_over_one": 1.6},
                 "cores": {"one_per_s": 1.0, "two_per_s": 1.7, "two_over_one": 1.7}},
        "transfers": {"transfers": {"16": {"rate_per_s": rate_16, "latency_ms_p99": 60.0}},
                      "pgbench_tps_median": pgbench, "hot_wallet": [{"rate_per_s": r} for r in hot]},
        "scaleout": {"chunk_rows_per_s": {"1": {"median_per_s": 5_000, "ratio_to_1": 1.0},
                                          "2": {"median_per_s": 6_000, "ratio_to_1": 1.2},
                                          "4": {"median_per_s": 7_000, "ratio_to_1": 1.4}}},
    }


def by_workload(rows: list[dict]) -> dict:
    return {row["workload"]: row for row in rows}


def test_each_figure_is_divided_by_the_baseline_of_the_same_run_and_judged_against_the_goal():
    rows = by_workload(targets.lines(parts(12.0, 4.0, 900.0, 3_000.0, [400.0, 520.0, 610.0])))
    assert rows["bulk credit, 100,000 rows"]["ratio"] == 3.0 and rows["bulk credit, 100,000 rows"]["met"] is False
    million = rows["bulk credit, 1,000,000 rows"]
    assert million["ratio"] == 3.0 and million["met"] is False and "3.00 x the goal" in million["goal"]
    assert rows["transfers, 16 clients"]["ratio"] == 0.3 and rows["transfers, 16 clients"]["met"] is False  # 900 < 1,000/s
    assert rows["transfers, 16 clients, p99"]["met"] is False
    hot = rows["hot wallet, 16 clients"]
    assert hot["figure"] == "520.0/s" and hot["met"] is True
    assert rows["2 worker processes against 1 (bench.bulk)"]["met"] is True
    assert rows["2 worker processes against 1 (bench.scaleout)"]["ratio"] == 1.2
    assert rows["2 worker processes against 1 (bench.scaleout)"]["met"] is False
    assert rows["4 worker processes against 1 (bench.scaleout)"]["met"] is None  # the issue sets no goal for 4
    ceiling = rows["2 PostgreSQL connections against 1, CPU only"]
    assert ceiling["ratio"] == 1.7 and ceiling["met"] is None  # a baseline, not a goal


def test_a_goal_is_met_at_its_limit():
    rows = by_workload(targets.lines(parts(10.0, 4.0, 1_000.0, 3_000.0, [500.0])))
    assert rows["bulk credit, 100,000 rows"]["met"] is True  # exactly 2.5 times the floor
    assert rows["transfers, 16 clients"]["met"] is True and rows["hot wallet, 16 clients"]["met"] is True


def test_a_part_that_did_not_run_is_named_not_judged():
    rows = targets.lines({})
    assert [row["figure"] for row in rows] == ["not run", "not run", "not run"]
    assert all(row["met"] is None and row["ratio"] is None for row in rows)
