"""Idempotent requests: the key and a hash of the request are stored in the same database
transaction as the money the request moves, together with the answer to replay.

A refusal (not enough money, say) is an answer too: it is stored, inside a savepoint
that undid everything else the request wrote, and replayed like a success.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from pipeline.errors import IdempotencyKeyReused, Rejected
from pipeline.ports import UnitOfWork
from pipeline.retrying import with_retries

T = TypeVar("T")
Answer = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class IdempotentRequest:
    api_key_id: int
    key: str
    request_sha256: str


def request_sha256(method: str, path: str, body: object) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def answer_once(
    uow_factory: Callable[[], UnitOfWork],
    attempts_max: int,
    request: IdempotentRequest,
    act: Callable[[UnitOfWork], T],
    render: Callable[[T], Answer],
    render_refusal: Callable[[Rejected], Answer],
) -> tuple[Answer, bool]:
    """Runs `act` at most once per key; returns the answer and whether it was replayed."""

    def attempt() -> tuple[Answer, bool]:
        uow = uow_factory()
        with uow:
            stored = uow.idempotency.claim(request.api_key_id, request.key, request.request_sha256)
            if stored is not None:
                if stored.request_sha256 != request.request_sha256:
                    raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
                return (stored.status_code, stored.body), True
            try:
                with uow.savepoint():
                    answer = render(act(uow))
            except Rejected as refusal:
                if refusal.status >= 500:
                    raise
                answer = render_refusal(refusal)
            uow.idempotency.complete(request.api_key_id, request.key, *answer)
            uow.commit()
            return answer, False

    return with_retries(attempts_max, attempt)
