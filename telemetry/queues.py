"""Queue depth per Dramatiq queue, read from Redis when /metrics is scraped.

The Redis broker (dramatiq/brokers/redis.py and its dispatch.lua) keeps, under its
namespace `dramatiq`:
- `dramatiq:<queue>`: a list of the ids of messages ready to run;
- `dramatiq:<queue>.DQ`: the same for delayed messages (retries waiting out their backoff);
- `dramatiq:<queue>.XQ`: a sorted set of dead-lettered message ids.
Messages a worker has taken but not acknowledged are in per-worker sets and not counted.

The work per scrape is bounded: three commands per declared queue in one pipeline, with a
short timeout; an unreachable Redis yields no samples and a warning, not a failed scrape.
"""
from __future__ import annotations

import logging

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: The key prefix of RedisBroker's default namespace.
NAMESPACE = "dramatiq"
#: The queues our actors declare (actors/bulk_credit.py, actors/reconciliation.py).
QUEUE_NAMES = ("bulk_credit", "reconciliation")


class QueueDepthCollector(Collector):
    def __init__(self, redis_client, queue_names=QUEUE_NAMES):
        self.redis = redis_client
        self.queue_names = tuple(queue_names)
        assert len(self.queue_names) <= 32, "a scrape reads a bounded number of queues"

    def collect(self):
        family = GaugeMetricFamily("wallet_dramatiq_queue_messages",
                                   "Messages waiting in each Dramatiq queue, by state (ready, delayed, dead).",
                                   labels=["queue", "state"])
        try:
            pipeline = self.redis.pipeline(transaction=False)
            for queue in self.queue_names:
                pipeline.llen(f"{NAMESPACE}:{queue}")
                pipeline.llen(f"{NAMESPACE}:{queue}.DQ")
                pipeline.zcard(f"{NAMESPACE}:{queue}.XQ")
            counts = pipeline.execute()
        except Exception as error:  # a scrape must still answer when Redis is down
            log.warning("queue depth unavailable: %s", type(error).__name__)
            return
        for index, queue in enumerate(self.queue_names):
            for offset, state in enumerate(("ready", "delayed", "dead")):
                family.add_metric([queue, state], counts[3 * index + offset])
        yield family

    def describe(self):
        return []  # the family is made on collect; describing nothing keeps registration free of I/O
