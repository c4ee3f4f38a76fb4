"""A /metrics endpoint of their own for the worker and the scheduler, when METRICS_PORT is set.

Locally (`make up`) every process writes its samples to one PROMETHEUS_MULTIPROC_DIR and the
web's /metrics adds them all up, so no other endpoint is needed. In containers each service
has its own folder (docker-compose.yml: a tmpfs per container, empty at every start), so a
Prometheus scrapes each container: the web on its API port, the worker and the scheduler on
METRICS_PORT.

A worker container runs several Dramatiq processes (`--processes`), forked from one main
process; each of them calls `serve()` when it boots, and the first to bind the port serves
the samples of all of them (they share the folder); the others find the port taken and
leave it. A worker process that dies makes Dramatiq stop the others, so the container
restarts whole, with a new serving process.
"""
from __future__ import annotations

import logging
import os

import dramatiq
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

log = logging.getLogger(__name__)

#: Where the endpoint listens: every interface of the container.
METRICS_ADDRESS = "0.0.0.0"


def port_from_environ(environ=None) -> int | None:
    """METRICS_PORT (1..65535), or None when unset or empty. Raises ValueError otherwise."""
    raw = (os.environ if environ is None else environ).get("METRICS_PORT", "").strip()
    if not raw:
        return None
    port = int(raw)
    if not 1 <= port <= 65_535:
        raise ValueError(f"METRICS_PORT must be within 1..65535, not {raw}")
    return port


def _registry() -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def serve(port: int) -> bool:
    """Serves GET /metrics on `port` from a daemon thread; False when another process already does."""
    try:
        start_http_server(port, addr=METRICS_ADDRESS, registry=_registry())
    except OSError as error:
        log.info("metrics: port %d not bound by this process (%s); another one serves it", port, error.strerror)
        return False
    log.info("metrics: serving /metrics on port %d", port)
    return True


class MetricsEndpoint(dramatiq.Middleware):
    """Serves the worker container's metrics on `port` from the first worker process that boots."""

    def __init__(self, port: int):
        self.port = port

    def after_worker_boot(self, broker, worker) -> None:
        serve(self.port)
