"""Runs every benchmark part in order and writes their figures to bench/results/<time>.json.

    python -m bench            # the full benchmark, as `make bench` runs it
    python -m bench --quick    # a short smoke run for CI
"""
from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import os
import sys
import threading
import time
import traceback
from datetime import datetime, timezone

from bench import targets

#: The parts in the order they run; a part whose module does not exist yet is skipped.
PARTS = ("bench.transfers", "bench.bulk", "bench.bulk_compare", "bench.reconciliation", "bench.search_plans",
         "bench.scaleout")
RESULTS_DIR = pathlib.Path(__file__).parent / "results"
#: How often the machine's load average is sampled during the run, in seconds.
LOAD_SAMPLE_S = 10


class LoadWatch(threading.Thread):
    """Samples the 1-minute load average while the benchmark runs: its figures mean little
    without it on a 2-core machine other jobs may share."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[float] = [os.getloadavg()[0]]
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(LOAD_SAMPLE_S):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        return {"cores": os.cpu_count(), "min": min(self.samples), "max": max(self.samples),
                "samples": len(self.samples)}


def load(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, for a CI smoke test")
    parser.add_argument("--only", choices=[name.split(".")[1] for name in PARTS], action="append",
                        help="run only this part (repeatable)")
    options = parser.parse_args(argv)
    started = datetime.now(timezone.utc)
    results: dict = {"started_at": started.isoformat(), "quick": options.quick, "parts": {}}
    failed = False
    watch = LoadWatch()
    watch.start()
    for name in PARTS:
        short = name.split(".")[1]
        if options.only and short not in options.only:
            continue
        module = load(name)
        if module is None:
            print(f"bench: {name} does not exist yet, skipped", flush=True)
            continue
        print(f"\n##### {name} #####", flush=True)
        began = time.monotonic()
        try:
            results["parts"][short] = module.main(quick=options.quick)
        except Exception:
            traceback.print_exc()
            results["parts"][short] = {"error": traceback.format_exc()}
            failed = True
        print(f"bench: {name} took {time.monotonic() - began:.0f} s (load average now "
              f"{os.getloadavg()[0]:.1f})", flush=True)
    watch.stopped.set()
    results["load_average"] = watch.summary()
    results["finished_at"] = datetime.now(timezone.utc).isoformat()
    results["issue_12"] = targets.report(results["parts"], results["load_average"])
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{started:%Y%m%dT%H%M%SZ}{'-quick' if options.quick else ''}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nbench: results written to {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
