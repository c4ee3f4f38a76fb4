"""Benchmark part: the scale-out curve, measured in one run, each figure as a ratio to 1 process.

1. Bulk-credit chunk throughput with 1, 2 and 4 worker processes (`dramatiq actors
   --processes N --threads 1`, started here on a Redis database of their own): a file is
   uploaded in process with its chunk messages held back, then released at once, and timed
   to the last row settled. Only chunk application is timed, as in bench/bulk.py.
2. Transfers per second at 16 clients (bench/loadgen.py) against 1, 2 and 4 gunicorn web
   processes of 8 threads each (the `make up` worker class and gunicorn.conf.py), started
   here on a port of their own.

The process counts take turns (1, 2, 4, 1, 2, 4, ...), so a machine whose speed drifts
during the run charges every count alike; the median of the repeats is printed, and each
count's ratio to the 1-process median. On a 2-core machine 4 processes cannot beat 2 by much:
the curve says where one host stops, the README's "Scaling out" where many hosts would. On a machine shared with other jobs, more
processes also take a larger share of its cores from them: read the ratios with the load.

Environment: DATABASE_URL, REDIS_URL (their servers are used, with Redis database
BENCH_SCALEOUT_REDIS_DB and API port BENCH_SCALEOUT_PORT), ADMIN_TOKEN (an admin token the
started web processes accept: they use the same database).
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import bootstrap
from bench import bulk, loadgen, transfers
from pipeline.config import Settings

ROOT = Path(__file__).resolve().parent.parent
#: Redis database (of REDIS_URL's server) for the worker processes started here.
REDIS_DB = int(os.environ.get("BENCH_SCALEOUT_REDIS_DB", "5"))
#: Port of the web processes started here.
WEB_PORT = int(os.environ.get("BENCH_SCALEOUT_PORT", "8097"))
#: Threads of each web process, as `make up` runs them.
WEB_THREADS = 8
#: Seconds a started web server gets to answer GET /healthz, and a stopped one to exit.
WEB_START_S_MAX = 60
STOP_S_MAX = 30
#: Seconds the started worker processes get to import the app and connect.
WORKER_START_S = 4


@dataclass(frozen=True)
class Shape:
    processes: tuple[int, ...]
    repeats: int
    #: Rows of each bulk file: a multiple of the chunk size, enough chunks for 4 workers.
    chunk_file_rows: int
    wallets: int
    clients: int
    warmup_s: float
    window_s: float


FULL = Shape(processes=(1, 2, 4), repeats=3, chunk_file_rows=100_000, wallets=1_000, clients=16,
             warmup_s=2, window_s=10)
QUICK = Shape(processes=(1, 2, 4), repeats=1, chunk_file_rows=20_000, wallets=100, clients=16,
              warmup_s=0.5, window_s=2)


def _stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_S_MAX)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_S_MAX)


def chunk_rate(services, users: list[str], directory: Path, processes: int, run: int) -> float:
    """Rows per second that `processes` worker processes apply one file's chunks at."""
    from actors import redis_broker
    from actors.bulk_credit import ChunkMessages
    from pipeline.bulk.upload import upload

    base, _, _ = services.settings.redis_url.rpartition("/")
    redis_url = f"{base}/{REDIS_DB}"
    path = directory / f"scaleout-{processes}-{run}.csv"
    bulk.write_csv(path, users, 60 + run * 7 + processes)
    environ = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": services.settings.database_url}
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    worker = subprocess.Popen([sys.executable, "-m", "dramatiq", "actors", "--processes", str(processes),
                               "--threads", "1"], cwd=ROOT, env=environ, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(WORKER_START_S)
        held = _Holding()
        with path.open("rb") as source:
            uploaded = upload(services.uow, held, services.settings, source, path.name)
        started = time.monotonic()
        ChunkMessages(redis_broker(redis_url)).send(held.chunk_ids)
        bulk.wait_settled(lambda activity_id: _status(services, activity_id), uploaded.activity.id)
        return len(users) / (time.monotonic() - started)
    finally:
        _stop_group(worker)
        path.unlink(missing_ok=True)


class _Holding:
    """Holds the chunk messages back, so that only chunk application is timed."""

    def __init__(self):
        self.chunk_ids: list[int] = []

    def send(self, chunk_ids) -> None:
        self.chunk_ids.extend(chunk_ids)


def _status(services, activity_id: str) -> dict:
    with services.uow() as uow:
        return {"status": uow.bulk.activity(activity_id).status}


def start_web(processes: int) -> subprocess.Popen:
    """gunicorn as the Procfile runs it, with `processes` workers; waits until it is healthy."""
    environ = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--workers", str(processes), "--threads", str(WEB_THREADS),
         "--bind", f"127.0.0.1:{WEB_PORT}", "api:create_app()"],
        cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + WEB_START_S_MAX
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
        if server.poll() is not None:
            break
    _stop_group(server)
    raise RuntimeError(f"gunicorn with {processes} workers did not answer /healthz on port {WEB_PORT}")


def transfer_run(plan: loadgen.Plan, shape: Shape, processes: int, seed: int) -> dict:
    server = start_web(processes)
    try:
        load = loadgen.run(plan, shape.clients, shape.warmup_s, shape.window_s, seed)
    finally:
        _stop_group(server)
    return {"rate_per_s": load.rate_per_s, "latency_ms_p99": load.latency_ms(0.99),
            "non_201": sum(count for status, count in load.statuses.items() if status != 201)}


def curve(runs: dict[int, list[float]]) -> dict[str, dict]:
    """Per process count: the median rate, its ratio to the 1-process median, and the median of
    the ratios round by round (each against the 1-process run of the same round, minutes
    apart), which a machine whose speed drifts during the run disturbs less."""
    medians = {processes: statistics.median(rates) for processes, rates in runs.items()}
    base = min(medians)
    one = medians[base]
    return {str(processes): {"median_per_s": median, "runs_per_s": [round(rate, 1) for rate in runs[processes]],
                             "ratio_to_1": median / one if one else float("nan"),
                             "round_ratio_to_1": statistics.median(
                                 rate / first if first else float("nan")
                                 for rate, first in zip(runs[processes], runs[base]))}
            for processes, median in medians.items()}


def main(quick: bool = False) -> dict:
    shape = QUICK if quick else FULL
    token = os.environ.get("ADMIN_TOKEN") or ""
    assert token, "ADMIN_TOKEN must hold a token of scope admin (make bench sets it)"
    services = bootstrap.services(Settings.from_environ())
    chunks: dict[int, list[float]] = {processes: [] for processes in shape.processes}
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as scratch:
        users = bulk.seed(services, shape.chunk_file_rows, Path(scratch))
        bulk.fund(services)
        for run in range(shape.repeats):
            for processes in shape.processes:
                rate = chunk_rate(services, users, Path(scratch), processes, run)
                chunks[processes].append(rate)
                print(f"scaleout: run {run + 1}, {processes} worker process(es): {rate:,.0f} rows/s", flush=True)
    services.engine.dispose()
    web: dict[int, list[dict]] = {processes: [] for processes in shape.processes}
    seeder = start_web(2)
    try:
        api = transfers.Api(f"http://127.0.0.1:{WEB_PORT}", token)
        wallets = transfers.seed_users(api, shape.wallets, transfers.SEED_AMOUNT, "scaleout user")
    finally:
        _stop_group(seeder)
    plan = loadgen.Plan(f"http://127.0.0.1:{WEB_PORT}", token, wallets, wallets)
    for run in range(shape.repeats):
        for processes in shape.processes:
            found = transfer_run(plan, shape, processes, seed=700 + run * 10 + processes)
            web[processes].append(found)
            print(f"scaleout: run {run + 1}, {processes} web process(es): {found['rate_per_s']:,.1f} transfers/s,"
                  f" p99 {found['latency_ms_p99']:.1f} ms, non-201 {found['non_201']}", flush=True)
    results = {"shape": vars(shape), "cores": os.cpu_count(), "load_average": os.getloadavg(),
               "chunk_rows_per_s": curve(chunks),
               "transfers_per_s": curve({processes: [run["rate_per_s"] for run in runs] for processes, runs in web.items()}),
               "transfers_p99_ms": {str(processes): statistics.median(run["latency_ms_p99"] for run in runs)
                                    for processes, runs in web.items()},
               "transfers_non_201": sum(run["non_201"] for runs in web.values() for run in runs)}
    report(shape, results)
    return results


def report(shape: Shape, results: dict) -> None:
    print(f"\n== scale-out on {results['cores']} cores, median of {shape.repeats}, load average "
          f"{results['load_average'][0]:.1f} ==")
    print(f"bulk-credit chunk application, {shape.chunk_file_rows:,}-row files:")
    for processes, figures in results["chunk_rows_per_s"].items():
        print(f"  {processes} worker process(es): {figures['median_per_s']:>9,.0f} rows/s  "
              f"{figures['ratio_to_1']:.2f} x 1 process (round by round {figures['round_ratio_to_1']:.2f})"
              f"  {figures['runs_per_s']}")
    print(f"transfers through HTTP, {shape.clients} clients, {WEB_THREADS} threads per web process:")
    for processes, figures in results["transfers_per_s"].items():
        print(f"  {processes} web process(es): {figures['median_per_s']:>9,.1f} transfers/s  "
              f"{figures['ratio_to_1']:.2f} x 1 process (round by round {figures['round_ratio_to_1']:.2f})  "
              f"p99 {results['transfers_p99_ms'][processes]:.1f} ms  "
              f"{figures['runs_per_s']}")
    if results["transfers_non_201"]:
        print(f"  WARNING: {results['transfers_non_201']} transfers were not answered 201")
