"""Creating and reading users, and the API keys that act for them."""
from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import datetime, timezone

from pipeline.errors import FieldError, NotFound, ValidationFailed
from pipeline.ports import UnitOfWork, User
from pipeline.text import storable

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
SCOPES = ("admin", "operator", "approver")


def create_user(uow: UnitOfWork, name: object, email: object, external_id: object = None) -> User:
    errors = []
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200 or not storable(name):
        errors.append(FieldError("name", "must be a string of 1 to 200 characters"))
    if not isinstance(email, str) or len(email) > 320 or not _EMAIL.fullmatch(email) or not storable(email):
        errors.append(FieldError("email", "must be an email address such as ana@example.com"))
    if external_id is not None and (not isinstance(external_id, str) or not 1 <= len(external_id) <= 200
                                    or not storable(external_id)):
        errors.append(FieldError("external_id", "must be a string of 1 to 200 characters"))
    if errors:
        raise ValidationFailed("the user is not valid", errors)
    user = User(str(uuid.uuid4()), name.strip(), email.strip().lower(), external_id, datetime.now(timezone.utc))
    with uow:
        uow.users.add(user)
        uow.commit()
    return user


def get_user(uow: UnitOfWork, user_id: str) -> User:
    with uow:
        user = uow.users.get(user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


def token_sha256(token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def check_scope(scope: str) -> str:
    if scope in SCOPES:
        return scope
    if scope.startswith("user:"):
        try:
            return f"user:{uuid.UUID(scope[5:])}"
        except ValueError:
            pass
    raise ValidationFailed("scope must be admin, operator, approver or user:<uuid>", [FieldError("scope", "unknown scope")])


def create_api_key(uow: UnitOfWork, scope: str) -> str:
    """Stores a new key's hash and returns the token, which is never stored."""
    scope = check_scope(scope)
    token = "wp_" + secrets.token_urlsafe(32)
    with uow:
        uow.api_keys.add(token_sha256(token), scope)
        uow.commit()
    return token


def find_api_key(uow: UnitOfWork, token: str) -> tuple[int, str] | None:
    return find_api_key_by_sha256(uow, token_sha256(token))


def find_api_key_by_sha256(uow: UnitOfWork, digest: str) -> tuple[int, str] | None:
    """The key whose token hashes to `digest`: what a dashboard session remembers instead of the token."""
    with uow:
        return uow.api_keys.find(digest)
