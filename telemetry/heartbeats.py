"""Worker heartbeats: each Dramatiq worker process says in Redis that it is still consuming.

A thread in every worker process writes `wallet:worker-heartbeat:<host>:<pid>` every
`HEARTBEAT_INTERVAL_S`, with a TTL of `HEARTBEAT_TTL_S`, but only while the worker's consumer
and worker threads are all alive. A worker process that died, hangs, or lost its consumers
stops writing, and its key expires. `GET /healthz/workers` (web/operations.py) counts the keys
that are still there.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

import dramatiq
import redis

log = logging.getLogger(__name__)

#: Every heartbeat key starts with this.
KEY_PREFIX = "wallet:worker-heartbeat:"
#: How often a worker process writes its heartbeat, in seconds.
HEARTBEAT_INTERVAL_S = 5.0
#: How long a heartbeat counts, in seconds: a worker silent for longer is reported down.
HEARTBEAT_TTL_S = 15.0
#: The most heartbeat keys one health check reads; more workers than this count as this many.
HEARTBEATS_READ_MAX = 1_000
#: The Redis client's socket timeouts, in seconds.
REDIS_TIMEOUT_S = 2.0

# Two heartbeats may be lost in a row before a live worker is reported down.
assert HEARTBEAT_INTERVAL_S * 3 <= HEARTBEAT_TTL_S


def consuming(worker: dramatiq.Worker) -> bool:
    """True while every consumer thread and every worker thread of `worker` is alive."""
    threads = [*worker.consumers.values(), *worker.workers]
    return bool(threads) and all(thread.is_alive() for thread in threads)


class WorkerHeartbeats(dramatiq.Middleware):
    """Writes this worker process's heartbeat from a daemon thread, from boot to shutdown."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self.key = f"{KEY_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self.stopped = threading.Event()

    def after_worker_boot(self, broker, worker) -> None:
        # The key is made here, not in __init__: `dramatiq` forks its worker processes after import.
        self.key = f"{KEY_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self.client = redis.Redis.from_url(self.redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                           socket_connect_timeout=REDIS_TIMEOUT_S)
        threading.Thread(target=self._beat, args=(worker,), name="worker-heartbeat", daemon=True).start()

    def before_worker_shutdown(self, broker, worker) -> None:
        self.stopped.set()
        try:
            self.client.delete(self.key)
        except redis.RedisError:
            pass  # it expires on its own

    def _beat(self, worker) -> None:
        while not self.stopped.is_set():
            if consuming(worker):
                value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": time.time(),
                                    "queues": sorted(worker.consumers), "threads": len(worker.workers)})
                try:
                    self.client.set(self.key, value, px=int(HEARTBEAT_TTL_S * 1000))
                except redis.RedisError as error:
                    log.warning("worker heartbeat not written: %s", error)
            else:
                log.error("worker heartbeat withheld: a consumer or worker thread has stopped")
            self.stopped.wait(HEARTBEAT_INTERVAL_S)


def live_workers(client: redis.Redis) -> list[dict]:
    """The heartbeats that have not expired, at most HEARTBEATS_READ_MAX: dicts with `host`,
    `pid`, `at` (Unix seconds), `queues`, `threads`. Raises redis.RedisError."""
    keys = []
    for key in client.scan_iter(match=f"{KEY_PREFIX}*", count=HEARTBEATS_READ_MAX):
        keys.append(key)
        if len(keys) >= HEARTBEATS_READ_MAX:
            break
    values = client.mget(keys) if keys else []
    return [json.loads(value) for value in values if value is not None]
