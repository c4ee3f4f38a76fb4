"""Benchmark, bulk credit before and after issue 9 (funding reservation, references across files).

Both sides run in this process's run, on this machine, with one harness, so that only the
application code differs:

- before: the commit named by BASELINE_COMMIT, extracted with `git archive` into a temporary
  folder. It is main just before issue 9 was merged: every change of issue 8, none of issue 9.
  Its `reference` check is within the file only, and `bulk_funding` may go negative.
- after: this checkout as it is (HEAD plus any uncommitted change), with the `default` funding
  account topped up beforehand, so that each upload reserves its whole total (one journal
  entry) and claims every row's reference across all activities of the account.

Each side gets a fresh database migrated by its own code (`<DATABASE_URL's name>_cmp_before`
and `_cmp_after`), the same users each with an empty wallet, and 2 worker processes of its own
code (`dramatiq actors --processes 2 --threads 1`, as `make up` runs them) on a Redis database
of their own, started before each run and stopped after it. A run is bench/compare_driver.py
in the side's code: it uploads the CSV in process (the use case the API calls, without HTTP)
and times it from the first byte read to the last row settled. The same file, `uuid,amount,
reference` with a new reference on every row, is paid by both sides; the sides alternate
which goes first, run by run, so that a load that drifts falls on both.

Environment: DATABASE_URL (its server; the two databases are dropped and made again),
REDIS_URL (its server) and BENCH_COMPARE_REDIS_DB, BENCH_BASELINE_COMMIT to compare with
another commit, BENCH_AFTER_TREE to measure another tree than this checkout as the after side
(`git archive` of a commit, say), BENCH_COMPARE_SIZES=100000,1000000 and
BENCH_COMPARE_REPEATS=3 for other sizes, BENCH_KEEP_DATABASES=1 to keep the databases afterwards.
"""
from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from bench.ledger_checks import libpq_url

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "compare_driver.py"
#: main just before issue 9 was merged (the second parent of 5f055c7, "Merge branch 'main'
#: into i9"): issue 8 complete, nothing of issue 9. Its first commit's parent, 9722b55, lacks
#: issue 8's later bulk changes, so comparing with it would charge issue 9 for them.
BASELINE_COMMIT = "653b711"
#: The issue's target: no more than 10% slower than before.
SLOWER_MAX = 1.10
#: Redis database (of REDIS_URL's server) of the benchmark's own workers; make up's are on 0.
COMPARE_REDIS_DB = 4
WORKER_PROCESSES = 2
#: How long workers get to say they are ready, and to stop, in seconds.
WORKER_START_S = 60
WORKER_STOP_S = 30
SIDES = ("before", "after")


@dataclass(frozen=True)
class Shape:
    sizes: tuple[int, ...]
    repeats: int


FULL = Shape(sizes=(100_000, 1_000_000), repeats=3)
QUICK = Shape(sizes=(10_000, 20_000), repeats=1)


@dataclass(frozen=True)
class Side:
    name: str
    tree: Path
    label: str
    database_url: str
    redis_url: str

    def environ(self) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
                "PYTHONPATH": str(self.tree), "BULK_CREDIT_APPROVAL": "none"}

    def driver(self, *arguments: str) -> dict:
        done = subprocess.run([sys.executable, str(DRIVER), str(self.tree), *arguments], cwd=self.tree,
                              env=self.environ(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: compare_driver {' '.join(arguments)} failed:\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def git(*arguments: str) -> str:
    return subprocess.run(["git", *arguments], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def extract(commit: str, folder: Path) -> None:
    """The commit's files, without touching this repository's worktrees or branches."""
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")


def database_urls(database_url: str) -> dict[str, str]:
    url = make_url(database_url)
    return {side: url.set(database=f"{url.database}_cmp_{side}").render_as_string(hide_password=False)
            for side in SIDES}


def recreate(database_url: str, drop_only: bool = False) -> None:
    url = make_url(database_url)
    admin = url.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(libpq_url(admin), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        if not drop_only:
            connection.execute(f'CREATE DATABASE "{url.database}"')


class Workers:
    """The side's own `dramatiq actors` command, in its own session, logging to a file."""

    def __init__(self, side: Side, log_path: Path, processes: int = WORKER_PROCESSES):
        self.log_path = log_path
        self.processes = processes
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "actors", "--processes", str(processes), "--threads", "1"],
            cwd=side.tree, env=side.environ(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def __enter__(self) -> "Workers":
        deadline = time.monotonic() + WORKER_START_S
        while self.log_path.read_bytes().count(b"ready for action") < self.processes:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"workers did not start: {self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        return self

    def __exit__(self, *_) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=WORKER_STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=WORKER_STOP_S)
        self.log.close()


def write_csv(path: Path, users: list[str], tag: str, run: int) -> None:
    """Every row with a reference never used before; a new amount per run, so that no file is
    found as a duplicate of another."""
    amount = f"1.{run % 100:02d}"
    with path.open("w") as out:
        out.write("uuid,amount,reference\n")
        out.writelines(f"{user},{amount},{tag}-{number}\n" for number, user in enumerate(users))


def main(quick: bool = False) -> dict:
    shape = QUICK if quick else FULL
    if os.environ.get("BENCH_COMPARE_SIZES"):
        shape = Shape(tuple(int(size) for size in os.environ["BENCH_COMPARE_SIZES"].split(",")),
                      int(os.environ.get("BENCH_COMPARE_REPEATS", shape.repeats)))
    baseline = os.environ.get("BENCH_BASELINE_COMMIT", BASELINE_COMMIT)
    commit = git("rev-parse", "--verify", f"{baseline}^{{commit}}")
    head = git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if git("status", "--porcelain",
                                                                                   "--untracked-files=no") else "")
    urls = database_urls(os.environ["DATABASE_URL"])
    # BENCH_AFTER_TREE: a copy of another checkout (say `git archive` of a commit) as the after side.
    after_tree = Path(os.environ.get("BENCH_AFTER_TREE", ROOT))
    after_label = f"{head} (this checkout)" if after_tree == ROOT else f"the tree in {after_tree}"
    redis_base = os.environ.get("REDIS_URL", "redis://127.0.0.1:63799/0").rpartition("/")[0]
    redis_url = f"{redis_base}/{os.environ.get('BENCH_COMPARE_REDIS_DB', COMPARE_REDIS_DB)}"
    results: dict = {"baseline_commit": commit, "head": head, "load_average_start": os.getloadavg(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as scratch:
        directory = Path(scratch)
        (directory / "before").mkdir()
        extract(commit, directory / "before")
        sides = {"before": Side("before", directory / "before", f"commit {commit[:7]} (main before issue 9)",
                                urls["before"], redis_url),
                 "after": Side("after", after_tree, after_label, urls["after"], redis_url)}
        print(f"  before: {sides['before'].label}\n  after:  {sides['after'].label}, default funding account"
              " topped up, a reference on every row", flush=True)
        users = [str(uuid.uuid4()) for _ in range(max(shape.sizes))]
        users_path = directory / "users.txt"
        users_path.write_text("\n".join(users) + "\n")
        for side in sides.values():
            recreate(side.database_url)
            side.driver("migrate")
            seeded = side.driver("seed", str(users_path))
            print(f"  {side.name}: database migrated by its own code, {seeded['users']:,} users seeded"
                  f" in {seeded['seconds']:.1f} s", flush=True)
        try:
            for size in shape.sizes:
                results["sizes"][size] = measure(sides, users[:size], shape.repeats, directory)
        finally:
            if not os.environ.get("BENCH_KEEP_DATABASES"):
                for side in sides.values():
                    recreate(side.database_url, drop_only=True)
    results["load_average_end"] = os.getloadavg()
    report(results, sides)
    return results


def measure(sides: dict[str, Side], users: list[str], repeats: int, directory: Path) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for repeat in range(repeats):
        path = directory / f"credits-{len(users)}-{repeat}.csv"
        write_csv(path, users, f"bench-{len(users)}-{repeat}", repeat)
        for name in (SIDES if repeat % 2 == 0 else SIDES[::-1]):
            with Workers(sides[name], directory / f"workers-{name}.log") as workers:
                figures = sides[name].driver("run", str(path), str(len(users)), str(workers.process.pid))
            runs[name].append(figures)
            parts = ", ".join(f"{part} {used:.1f}" for part, used in figures["cpu_parts_s"].items())
            print(f"  {len(users):>9,} rows, {name:<6}: {figures['seconds']:6.1f} s (upload {figures['upload_s']:.1f} s),"
                  f" {figures['rate_per_s']:,.0f} rows/s; CPU {figures['cpu_s']:.1f} s ({parts});"
                  f" load {os.getloadavg()[0]:.1f}", flush=True)
        path.unlink()
    figures = {"runs": runs}
    for measure_name in ("seconds", "upload_s", "cpu_s"):
        medians = {name: statistics.median(run[measure_name] for run in runs[name]) for name in sides}
        figures[f"median_{measure_name}"] = medians
        figures[f"after_over_before_{measure_name}"] = medians["after"] / medians["before"]
    figures["median_rate_per_s"] = {name: len(users) / figures["median_seconds"][name] for name in sides}
    return figures


def report(results: dict, sides: dict[str, Side]) -> None:
    print(f"\nbulk credit before and after issue 9 (same run, same harness: in-process upload of"
          f" uuid,amount,reference with a new reference on every row, {WORKER_PROCESSES} worker processes"
          f" each, timed to the last row settled):\n  before = {sides['before'].label}\n  after  ="
          f" {sides['after'].label}, with the funding reservation and the cross-file reference claim\n"
          f"  CPU = the upload process, the workers and their PostgreSQL backends: on a shared machine the"
          f" steadier measure of the work each side does")
    target = f"target at most {100 * (SLOWER_MAX - 1):+.0f}%"
    for size, figures in results["sizes"].items():
        seconds, cpu, rate = figures["median_seconds"], figures["median_cpu_s"], figures["median_rate_per_s"]
        ratio, cpu_ratio = figures["after_over_before_seconds"], figures["after_over_before_cpu_s"]
        print(f"  {size:>9,} rows, medians of {len(figures['runs']['after'])}: before {seconds['before']:.1f} s"
              f" ({rate['before']:,.0f} rows/s), after {seconds['after']:.1f} s ({rate['after']:,.0f} rows/s):"
              f" time after/before {ratio:.3f}, {100 * (ratio - 1):+.1f}% ({target}:"
              f" {'met' if ratio <= SLOWER_MAX else 'MISSED'}); CPU {cpu['before']:.1f} s against {cpu['after']:.1f} s,"
              f" {100 * (cpu_ratio - 1):+.1f}%; upload {figures['median_upload_s']['before']:.1f} s against"
              f" {figures['median_upload_s']['after']:.1f} s")
    start, end = results["load_average_start"], results["load_average_end"]
    print(f"  load average (1, 5, 15 min): {start[0]:.2f} {start[1]:.2f} {start[2]:.2f} at the start,"
          f" {end[0]:.2f} {end[1]:.2f} {end[2]:.2f} at the end", flush=True)
