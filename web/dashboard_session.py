"""The dashboard's session: sign-in with an API key, and one CSRF token per session.

Keys of scope operator and admin sign in to operate (upload, retry, cancel), approver and
admin to approve or reject (web/dashboard_payouts.py); every one of them reads everything. A
key of scope user:<id> signs in to that user's own page, and nothing else (web/dashboard_self.py).

A session lives on the server, in Redis: signing in stores a random session id under
SESSION_KEY with the SHA-256 of the API key's token, for SESSION_HOURS; signing out
deletes it, so a saved copy of the cookie is worth nothing afterwards. The cookie is
Flask's signed cookie, keyed by SECRET_KEY (see pipeline/config.py), so every gunicorn
worker reads the cookies the others wrote; it holds the session id and the CSRF token,
never the API key nor its digest. Each request looks the key up again (web/auth.py caches
that for a minute), so a deleted key ends its sessions within a minute. Every POST carries
the session's CSRF token in a form field or in the X-CSRF-Token header; the cookie is also
SameSite=Lax and HttpOnly.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

import redis
from flask import Flask, current_app, request, session

from pipeline.access import Principal
from pipeline.users import token_sha256
from web.auth import principal_for_sha256
from web.problems import HttpProblem

#: How long a sign-in lasts, in hours; Flask checks the signed timestamp on every request.
SESSION_HOURS = 8
#: The longest token the sign-in form accepts, in characters; ours are 46.
TOKEN_LENGTH_MAX = 200
CSRF_FIELD = "csrf_token"
SESSION_ID_FIELD = "session_id"
#: The Redis key of a session, by the SHA-256 of its id: Redis never holds an id a cookie could replay.
SESSION_KEY = "wallet.dashboard.session:{id_sha256}"
CSRF_HEADER = "X-CSRF-Token"


class SignInRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def configure(app: Flask) -> None:
    """Keys the session cookie; called once, when the dashboard blueprint is registered."""
    app.secret_key = app.extensions["wallet"].settings.session_secret_key
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS))


def sign_in(token: str) -> Principal:
    """Starts a fresh session for an operator, approver, admin or user key; refuses any other."""
    token = token.strip()
    if not token or len(token) > TOKEN_LENGTH_MAX:
        raise SignInRefused(401, "This API key is not valid.")
    digest = token_sha256(token)
    principal = principal_for_sha256(digest)
    if principal is None:
        raise SignInRefused(401, "This API key is not valid.")
    if not may_use_dashboard(principal):
        raise SignInRefused(403, f"A key of scope {principal.scope} cannot use the dashboard: "
                                 "sign in with an operator, approver, admin or user key.")
    session.clear()  # a new session id and CSRF token at each sign-in: no session fixation
    session_id = secrets.token_urlsafe(32)
    _store(lambda client: client.set(_key(session_id), digest, ex=SESSION_HOURS * 3600))
    session.permanent = True
    session[SESSION_ID_FIELD] = session_id
    session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return principal


def sign_out() -> None:
    """Ends the session on the server too: its cookie, replayed, signs nobody in."""
    session_id = session.get(SESSION_ID_FIELD)
    if isinstance(session_id, str):
        _store(lambda client: client.delete(_key(session_id)))
    session.clear()


def signed_in() -> Principal | None:
    """The principal of this session, while it exists on the server and its key may still use the dashboard."""
    session_id = session.get(SESSION_ID_FIELD)
    if not isinstance(session_id, str):
        return None
    digest = _store(lambda client: client.get(_key(session_id)))
    if digest is None:
        return None
    principal = principal_for_sha256(digest.decode())
    return principal if principal is not None and may_use_dashboard(principal) else None


def may_use_dashboard(principal: Principal) -> bool:
    """Operators, approvers and admins, the keys that read everything; and `user:` keys, which
    web/dashboard.py lets into their own page only (web/dashboard_self.py)."""
    return principal.may_read_all() or principal.user_id is not None


def _key(session_id: str) -> str:
    return SESSION_KEY.format(id_sha256=hashlib.sha256(session_id.encode()).hexdigest())


def _store(command):
    """Runs `command` on the app's Redis; unreachable, the page says so (503) rather than sign anyone out."""
    try:
        return command(current_app.extensions["wallet"].redis)
    except redis.RedisError as error:
        raise HttpProblem(503, "temporarily_unavailable",
                          f"the dashboard's sessions are unreachable: {type(error).__name__}") from error


def csrf_token() -> str:
    """The session's CSRF token, made on first use (the sign-in form needs one too)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def csrf_ok() -> bool:
    expected = session.get(CSRF_FIELD)
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    return isinstance(expected, str) and hmac.compare_digest(expected.encode(), sent.encode())
