"""Bearer tokens: API keys stored hashed, looked up once a minute at most per process, so a
revoked key stops working in every process within TOKEN_CACHE_S, and an expiring key at its
expiry."""
from __future__ import annotations

import functools
import threading
import time
from datetime import datetime, timezone

from flask import current_app, g, request

from pipeline.access import Principal
from pipeline.users import find_api_key_by_sha256, token_sha256
from web.problems import HttpProblem

#: How long a process trusts a token it has looked up, in seconds.
TOKEN_CACHE_S = 60
#: Tokens remembered per process; the cache is cleared when it fills up.
TOKEN_CACHE_ENTRIES_MAX = 10_000

_cache: dict[str, tuple[float, Principal | None]] = {}
_cache_lock = threading.Lock()


def _principal_for(token: str) -> Principal | None:
    return principal_for_sha256(token_sha256(token))


def principal_for_sha256(digest: str) -> Principal | None:
    """The principal of the key whose token hashes to `digest`, or None; cached per process."""
    now = time.monotonic()
    cached = _cache.get(digest)
    if cached and cached[0] > now:
        return cached[1]
    found = find_api_key_by_sha256(current_app.extensions["wallet"].uow(), digest)
    principal = Principal(found.id, found.scope) if found else None
    trusted_s = TOKEN_CACHE_S
    if found is not None and found.expires_at is not None:  # an expiring key is not trusted past its expiry
        trusted_s = min(trusted_s, (found.expires_at - datetime.now(timezone.utc)).total_seconds())
    with _cache_lock:
        if len(_cache) >= TOKEN_CACHE_ENTRIES_MAX:
            _cache.clear()
        _cache[digest] = (now + trusted_s, principal)
    return principal


def authenticated(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpProblem(401, "unauthenticated", "send Authorization: Bearer <token>")
        principal = _principal_for(token.strip())
        if principal is None:
            raise HttpProblem(401, "unauthenticated", "the token is not valid")
        g.principal = principal
        return view(*args, **kwargs)

    return wrapper


def allow(permitted: bool) -> None:
    if not permitted:
        raise HttpProblem(403, "forbidden", f"the scope {g.principal.scope} does not allow this")
