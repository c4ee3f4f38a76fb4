"""Errors as application/problem+json (RFC 9457), with a stable `code` in each."""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from pipeline.errors import Rejected, TransientFault

log = logging.getLogger(__name__)


def problem(status: int, code: str, detail: str, errors: list | None = None) -> dict:
    body = {
        "type": f"urn:wallet-pipeline:problem:{code}",
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    return body


def refusal_body(refusal: Rejected) -> dict:
    errors = [{"field": error.field, "message": error.message} for error in refusal.errors]
    return problem(refusal.status, refusal.code, refusal.detail, errors)


def problem_response(body: dict, headers: dict | None = None) -> Response:
    response = jsonify(body)
    response.status_code = body["status"]
    response.mimetype = "application/problem+json"
    response.headers.update(headers or {})
    return response


class HttpProblem(Exception):
    """A refusal that belongs to HTTP rather than to the domain (a missing header, say)."""

    def __init__(self, status: int, code: str, detail: str, errors: list | None = None):
        super().__init__(detail)
        self.body = problem(status, code, detail, errors)


def register(app: Flask) -> None:
    @app.errorhandler(Rejected)
    def on_refusal(refusal: Rejected):
        return problem_response(refusal_body(refusal))

    @app.errorhandler(TransientFault)
    def on_transient_fault(fault: TransientFault):
        # A read that met a restarting database or a lost connection: the same request
        # is likely to work in a moment (writes retry inside their use case first).
        log.warning("transient fault: %s", fault)
        return problem_response(problem(503, "temporarily_unavailable", "the database is busy or restarting; try"
                                                                        " again shortly"), {"Retry-After": "1"})

    @app.errorhandler(HttpProblem)
    def on_http_problem(error: HttpProblem):
        return problem_response(error.body)

    @app.errorhandler(HTTPException)
    def on_http_exception(error: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            error.code, (error.name or "error").lower().replace(" ", "_"))
        # The exception's own headers (a 405's Allow, a 401's WWW-Authenticate), not its HTML's Content-Type.
        headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
        return problem_response(problem(error.code or 500, code, error.description or error.name), headers)

    @app.errorhandler(Exception)
    def on_bug(error: Exception):
        log.exception("unhandled error")
        return problem_response(problem(500, "internal_error", "an unexpected error happened; it has been logged"))
