"""Dramatiq actors; `dramatiq actors` imports this package.

The broker is made here, at import of `actors` and nowhere else, from REDIS_URL, with
every option stated rather than left to Dramatiq's defaults. What the broker does after
a worker dies matters to us (read in dramatiq/brokers/redis.py and its dispatch.lua):
a dead worker's unacknowledged messages (the one it was running and those it had
prefetched) go back to their queue only when another consumer runs queue maintenance,
which happens on a random `maintenance_chance` per million commands, and only for
workers silent for `heartbeat_timeout`. That can take many minutes, so we never rely
on it: the database records which chunks are still PENDING and until when a sent
message is presumed alive (`bulk_chunks.leased_until`), and lost chunks are sent again
from there. A redelivery that does happen is harmless, since applying a chunk twice is
a no-op.
"""
from __future__ import annotations

import importlib
import importlib.util

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Callbacks, CurrentMessage, Pipelines, Retries, ShutdownNotifications, TimeLimit

from pipeline.config import Settings
from telemetry import exporter, logs, metrics
from telemetry.heartbeats import WorkerHeartbeats
from telemetry.messages import MessageOutcomes, RequestIds

#: A worker silent for this long is presumed dead, in milliseconds.
HEARTBEAT_TIMEOUT_MS = 60_000
#: Commands per million that also run queue maintenance (requeue dead workers' messages).
MAINTENANCE_CHANCE_PER_MILLION = 1_000
#: How long dead-lettered messages are kept in Redis, in milliseconds (3 days).
DEAD_MESSAGE_TTL_MS = 3 * 24 * 3600 * 1000
#: The modules whose actors a worker runs; each is imported if it exists.
ACTOR_MODULES = ("bulk_credit", "reconciliation", "webhooks")


def middleware() -> list:
    # RequestIds first and MessageOutcomes before Retries: see telemetry/messages.py.
    return [RequestIds(), AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(),
            MessageOutcomes(), Retries(), CurrentMessage()]


def redis_broker(redis_url: str) -> RedisBroker:
    # WorkerHeartbeats tells GET /healthz/workers that this worker process is still consuming.
    return RedisBroker(url=redis_url, middleware=[*middleware(), WorkerHeartbeats(redis_url)],
                       heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
                       maintenance_chance=MAINTENANCE_CHANCE_PER_MILLION, dead_message_ttl=DEAD_MESSAGE_TTL_MS)


def _broker(settings: Settings) -> dramatiq.Broker:
    # A stub broker lets tests run actors in-process with no Redis (dramatiq.Worker over it).
    if settings.redis_url.startswith("stub:"):
        return StubBroker(middleware=middleware())
    broker = redis_broker(settings.redis_url)
    port = exporter.port_from_environ()
    if port is not None:  # a container of its own: its processes serve their metrics (telemetry/exporter.py)
        broker.add_middleware(exporter.MetricsEndpoint(port))
    return broker


logs.configure(logs.level_from_environ())
_settings = Settings.from_environ()
metrics.initialise(_settings.supported_currencies)
broker = _broker(_settings)
dramatiq.set_broker(broker)

for _name in ACTOR_MODULES:
    if importlib.util.find_spec(f"actors.{_name}") is not None:
        importlib.import_module(f"actors.{_name}")
