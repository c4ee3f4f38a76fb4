"""Creating and reading users, and the API keys that act for them."""
from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import datetime, timezone

from pipeline import audit
from pipeline.audit import COMMAND_LINE, Actor
from pipeline.errors import FieldError, NotFound, ValidationFailed
from pipeline.ports import ApiKey, UnitOfWork, User
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


#: The longest lifetime `keys create --expires-in` gives a key, in days (about ten years).
KEY_EXPIRY_DAYS_MAX = 3_650
#: The longest label of a key, in characters.
KEY_LABEL_LENGTH_MAX = 200


def create_api_key(uow: UnitOfWork, scope: str, label: str | None = None, expires_in_days: int | None = None,
                   actor: Actor = COMMAND_LINE) -> str:
    """Stores a new key's hash and returns the token, which is never stored. `expires_in_days`
    (1..KEY_EXPIRY_DAYS_MAX) or None for a key that does not expire. Raises ValidationFailed."""
    scope = check_scope(scope)
    if label is not None and (not 1 <= len(label.strip()) <= KEY_LABEL_LENGTH_MAX or not storable(label)
                              or not label.isprintable()):  # a tab or newline would break `keys list`'s table
        raise ValidationFailed("the label is not valid", [FieldError(
            "label", f"1 to {KEY_LABEL_LENGTH_MAX} characters on one line, no tab or control character")])
    if expires_in_days is not None and not 1 <= expires_in_days <= KEY_EXPIRY_DAYS_MAX:
        raise ValidationFailed("the expiry is out of range", [FieldError(
            "expires_in", f"from 1 to {KEY_EXPIRY_DAYS_MAX} days")])
    token = "wp_" + secrets.token_urlsafe(32)
    with uow:
        if scope.startswith("user:") and uow.users.get(scope[5:]) is None:
            raise ValidationFailed("scope names no user", [FieldError("scope", f"no user {scope[5:]}")])
        key = uow.api_keys.add(token_sha256(token), scope, label.strip() if label else None,
                               expires_in_days * 86_400 if expires_in_days else None)
        audit.record(uow, actor, "api_key.create", "api_key", key.id, scope=scope, label=key.label,
                     expires_at=key.expires_at)
        uow.commit()
    return token


def find_api_key(uow: UnitOfWork, token: str) -> ApiKey | None:
    return find_api_key_by_sha256(uow, token_sha256(token))


def find_api_key_by_sha256(uow: UnitOfWork, digest: str) -> ApiKey | None:
    """The live key (neither revoked nor expired) whose token hashes to `digest`, noting that
    it was used now; what a dashboard session remembers instead of the token."""
    with uow:
        key = uow.api_keys.find(digest)
        uow.commit()
    return key


def api_keys(uow: UnitOfWork) -> list[ApiKey]:
    """Every key ever made, revoked and expired ones included, oldest first."""
    with uow:
        return uow.api_keys.all()


def revoke_api_key(uow: UnitOfWork, key_id: int, actor: Actor = COMMAND_LINE) -> ApiKey:
    """Revokes the key: it stops authenticating in every process within TOKEN_CACHE_S
    (web/auth.py). Revoking a revoked key changes nothing. Raises NotFound."""
    with uow:
        key = uow.api_keys.revoke(key_id)
        if key is None:
            raise NotFound(f"no API key {key_id}")
        audit.record(uow, actor, "api_key.revoke", "api_key", key_id)
        uow.commit()
    return key
