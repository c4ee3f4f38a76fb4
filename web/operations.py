"""Liveness, readiness and the workers' health, which need no token."""
from __future__ import annotations

from apiflask import APIBlueprint
from flask import current_app, jsonify
from sqlalchemy import text

from telemetry.heartbeats import HEARTBEAT_TTL_S, live_workers

blueprint = APIBlueprint("operations", __name__, tag="Operations")


@blueprint.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz():
    services = current_app.extensions["wallet"]
    checks = {}
    try:
        with services.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:  # any failure means not ready; the reason is shown
        checks["database"] = f"unreachable: {type(error).__name__}"
    try:
        services.redis.ping()
        checks["redis"] = "ok"
    except Exception as error:
        checks["redis"] = f"unreachable: {type(error).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), 200 if ready else 503


@blueprint.get("/healthz/workers")
def healthz_workers():
    """200 while at least one Dramatiq worker process wrote its heartbeat in the last
    HEARTBEAT_TTL_S seconds, with how many did (`workers`); 503 when none did (all workers
    stopped consuming) or Redis is unreachable. Separate from /readyz on purpose: a web
    process can serve requests with every worker down, so it stays ready."""
    try:
        workers = live_workers(current_app.extensions["wallet"].redis)
    except Exception as error:  # Redis unreachable, or a heartbeat we cannot read: not healthy
        return jsonify({"status": "unavailable", "checks": {"workers": f"unknown: {type(error).__name__}"}}), 503
    # Only a count: hosts and pids are no business of an unauthenticated caller.
    body = {"workers": len(workers), "heartbeat_ttl_s": HEARTBEAT_TTL_S}
    if not workers:
        return jsonify({"status": "unavailable", "checks": {
            "workers": f"no worker heartbeat in the last {HEARTBEAT_TTL_S:g} s"}, **body}), 503
    return jsonify({"status": "ok", "checks": {"workers": "ok"}, **body})
