"""A light HTTP load generator: a few processes, each an asyncio loop of keep-alive connections
writing pre-formatted HTTP/1.1 requests on raw sockets.

Why not `requests` in threads: on a 2-core machine the generator shares the CPU with gunicorn
and PostgreSQL, and `requests` spends several hundred microseconds of CPU per call, which
would be measured as the server's slowness. Here a request costs the generator tens of
microseconds; `Load.generator_cpu_s` reports what it really used, so the cost stays visible.

Clocks: every process reads `time.perf_counter_ns()`, which on Linux is CLOCK_MONOTONIC and
so comparable across processes. A run has a warm-up (connections open, server pools fill)
and then a measured window; only requests that *finish* inside the window count.
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

#: The longest the generator waits for one response, in seconds; a slower answer is an error.
RESPONSE_TIMEOUT_S = 30
#: The most response bytes the generator reads for one request.
RESPONSE_BYTES_MAX = 1024 * 1024
#: Connections one generator process drives; more clients means more processes.
CONNECTIONS_PER_PROCESS_MAX = 32
#: Generator processes at most; on 2 cores more would only steal CPU from the server.
PROCESSES_MAX = 2


@dataclass(frozen=True)
class Plan:
    """What every connection sends: transfers from `senders` to `receivers`, chosen at random."""

    api_url: str
    token: str
    senders: list[str]
    receivers: list[str]
    currency: str = "SGD"
    #: Amounts are drawn uniformly from this range, in minor units.
    amount_minor_min: int = 100
    amount_minor_max: int = 9_999
    minor_units: int = 2


@dataclass
class Load:
    """The outcome of one run, merged over every generator process."""

    clients: int
    window_s: float
    latencies_ns: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    error_codes: dict[str, int] = field(default_factory=dict)
    #: Sums over the transfers answered 201 inside the window and outside it (warm-up, drain).
    moved_minor_all: int = 0
    fees_minor_all: int = 0
    created_all: int = 0
    entry_ids: list[str] = field(default_factory=list)
    generator_cpu_s: float = 0.0
    #: The share of all cores' time that was not idle during the window, from /proc/stat.
    machine_busy: float = float("nan")
    #: CPU seconds each named server process group used during the window.
    server_cpu_s: dict[str, float] = field(default_factory=dict)

    def server_cpu_us_per_transfer(self) -> dict[str, float]:
        return {name: seconds * 1e6 / self.created if self.created else float("nan")
                for name, seconds in self.server_cpu_s.items()}

    @property
    def created(self) -> int:
        return len(self.latencies_ns)

    @property
    def rate_per_s(self) -> float:
        return self.created / self.window_s

    def latency_ms(self, quantile: float) -> float:
        if not self.latencies_ns:
            return float("nan")
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] / 1e6


def minor_of(text: str, minor_units: int) -> int:
    units, _, fraction = text.partition(".")
    return int(units + fraction.ljust(minor_units, "0"))


def _request_bytes(plan: Plan, host: str, rng: random.Random) -> tuple[bytes, int]:
    sender = rng.choice(plan.senders)
    receiver = rng.choice(plan.receivers)
    while receiver == sender:
        receiver = rng.choice(plan.receivers)
    amount_minor = rng.randint(plan.amount_minor_min, plan.amount_minor_max)
    digits = str(amount_minor).rjust(plan.minor_units + 1, "0")
    amount = f"{digits[:-plan.minor_units]}.{digits[-plan.minor_units:]}" if plan.minor_units else digits
    body = json.dumps({"from_user_id": sender, "to_user_id": receiver, "amount": amount,
                       "currency": plan.currency}).encode()
    head = (f"POST /api/v1/wallet/transfer HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {plan.token}\r\nContent-Type: application/json\r\n"
            f"Idempotency-Key: {uuid.uuid4()}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body, amount_minor


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    assert length <= RESPONSE_BYTES_MAX, "response too large"
    return status, await reader.readexactly(length)


async def _connection(plan: Plan, seed: int, start_ns: int, window_start_ns: int, window_end_ns: int,
                      out: dict) -> None:
    split = urlsplit(plan.api_url)
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection(split.hostname, split.port or 80)
    await asyncio.sleep(max(0, start_ns - time.perf_counter_ns()) / 1e9)
    try:
        while time.perf_counter_ns() < window_end_ns:
            request, amount_minor = _request_bytes(plan, split.netloc, rng)
            began = time.perf_counter_ns()
            writer.write(request)
            status, body = await asyncio.wait_for(_read_response(reader), RESPONSE_TIMEOUT_S)
            ended = time.perf_counter_ns()
            inside = window_start_ns <= ended <= window_end_ns
            if status == 201:
                answer = json.loads(body)
                out["moved"] += amount_minor
                out["fees"] += minor_of(answer["fee"], plan.minor_units)
                out["created_all"] += 1
                out["entry_ids"].append(answer["id"])
                if inside:
                    out["latencies"].append(ended - began)
            else:
                code = json.loads(body).get("code", "?") if body.startswith(b"{") else "?"
                out["errors"][code] = out["errors"].get(code, 0) + 1
            if inside:
                out["statuses"][status] = out["statuses"].get(status, 0) + 1
    finally:
        writer.close()


def _process(plan: Plan, connections: int, seed: int, start_ns: int, window_start_ns: int,
             window_end_ns: int, results) -> None:
    out = {"latencies": [], "statuses": {}, "errors": {}, "moved": 0, "fees": 0, "created_all": 0,
           "entry_ids": []}

    async def main():
        await asyncio.gather(*(
            _connection(plan, seed * 1000 + number, start_ns, window_start_ns, window_end_ns, out)
            for number in range(connections)))

    asyncio.run(main())
    times = os.times()
    out["cpu_s"] = times.user + times.system
    results.put(out)


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot; idle and iowait count as not busy."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def run(plan: Plan, clients: int, warmup_s: float, window_s: float, seed: int = 1,
        server_cpu: Callable[[], dict[str, float]] | None = None) -> Load:
    """Drives `clients` concurrent keep-alive connections for `warmup_s` then `window_s` seconds.

    `server_cpu`, when given, reads CPU seconds used so far by named server processes; their
    use during the window is reported per transfer.
    """
    assert 1 <= clients <= PROCESSES_MAX * CONNECTIONS_PER_PROCESS_MAX
    processes = min(PROCESSES_MAX, clients)
    shares = [clients // processes + (1 if index < clients % processes else 0) for index in range(processes)]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_ns = time.perf_counter_ns() + 300_000_000  # time for every process to connect
    window_start_ns = start_ns + int(warmup_s * 1e9)
    window_end_ns = window_start_ns + int(window_s * 1e9)
    workers = [context.Process(target=_process, args=(plan, share, seed * 100 + index, start_ns, window_start_ns,
                                                     window_end_ns, results), daemon=True)
               for index, share in enumerate(shares)]
    for worker in workers:
        worker.start()
    time.sleep(max(0, window_start_ns - time.perf_counter_ns()) / 1e9)
    busy_before, server_before = _cpu_ticks(), server_cpu() if server_cpu else {}
    time.sleep(max(0, window_end_ns - time.perf_counter_ns()) / 1e9)
    busy_after, server_after = _cpu_ticks(), server_cpu() if server_cpu else {}
    outs = [results.get(timeout=warmup_s + window_s + RESPONSE_TIMEOUT_S + 30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    load = Load(clients, window_s)
    total = busy_after[1] - busy_before[1]
    load.machine_busy = (busy_after[0] - busy_before[0]) / total if total else float("nan")
    load.server_cpu_s = {name: server_after[name] - server_before[name] for name in server_after}
    for out in outs:
        load.latencies_ns.extend(out["latencies"])
        for status, count in out["statuses"].items():
            load.statuses[status] = load.statuses.get(status, 0) + count
        for code, count in out["errors"].items():
            load.error_codes[code] = load.error_codes.get(code, 0) + count
        load.moved_minor_all += out["moved"]
        load.fees_minor_all += out["fees"]
        load.created_all += out["created_all"]
        load.entry_ids.extend(out["entry_ids"])
        load.generator_cpu_s += out["cpu_s"]
    return load
