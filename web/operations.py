"""Liveness and readiness, which need no token."""
from __future__ import annotations

from apiflask import APIBlueprint
from flask import current_app, jsonify
from sqlalchemy import text

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
