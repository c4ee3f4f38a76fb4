"""Per-request telemetry: the request id, the latency histogram, one access log line; and GET /metrics.

The request id comes from an incoming X-Request-Id header when it is safe to log (see
`telemetry.logs.sane_request_id`), else it is made here; it is returned in the response's
X-Request-Id header, is in every log line written while the request runs, and travels in
the Dramatiq messages the request sends.
"""
from __future__ import annotations

import logging
import time

from apiflask import APIBlueprint
from flask import Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry

from telemetry.logs import REQUEST_ID, sane_request_id
from telemetry.metrics import HTTP_REQUEST_DURATION, scrape
from storage.monitoring import make_state_engine
from telemetry.queues import QueueDepthCollector
from telemetry.state import StateCollector

log = logging.getLogger("wallet.http")

REQUEST_ID_HEADER = "X-Request-Id"
#: The route label of a request that matched no URL rule (a 404), so raw paths never become labels.
UNMATCHED_ROUTE = "<unmatched>"
#: Methods that are labels as they are; any other (a client may send any token) counts as OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

blueprint = APIBlueprint("operations_metrics", __name__, tag="Operations")


@blueprint.get("/metrics")
def metrics():
    registry = current_app.extensions.get("wallet.queue_registry")
    if registry is None:
        services = current_app.extensions["wallet"]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(QueueDepthCollector(services.redis))
        registry.register(StateCollector(make_state_engine(services.settings.database_url)))
        current_app.extensions["wallet.queue_registry"] = registry
    body, content_type = scrape(registry)
    return Response(body, content_type=content_type)


def _start_request():
    g.request_started_s = time.perf_counter()
    g.request_id = sane_request_id(request.headers.get(REQUEST_ID_HEADER))
    g.request_id_token = REQUEST_ID.set(g.request_id)


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    started_s = g.get("request_started_s")
    if started_s is not None:
        elapsed_s = time.perf_counter() - started_s
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        method = request.method if request.method in METHODS else "OTHER"
        HTTP_REQUEST_DURATION.labels(method, route, str(response.status_code)).observe(elapsed_s)
        log.info("%s %s %d", method, route, response.status_code,
                 extra={"method": method, "route": route, "status": response.status_code,
                        "duration_ms": round(elapsed_s * 1000, 2)})
    return response


def _end_request(error=None):
    token = g.pop("request_id_token", None)
    if token is not None:
        try:
            REQUEST_ID.reset(token)
        except ValueError:  # a streamed response ends in another context; nothing of ours is left there
            pass


def register(app: Flask) -> None:
    """Installs the hooks first, so the request id is set before any other hook logs."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)
    app.register_blueprint(blueprint)
