"""Users, API keys and stored idempotent responses."""
from __future__ import annotations

import json
from typing import Any

import psycopg.errors
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from pipeline.errors import Conflict, IdempotencyKeyInProgress
from pipeline.ports import ApiKey, StoredResponse, User
from storage import driver


class SqlUsers:
    def __init__(self, connection: Connection):
        self.connection = connection

    def add(self, user: User) -> None:
        """Raises Conflict naming the field when the email or external_id is taken.

        The duplicate never reaches PostgreSQL as a unique violation: that error's DETAIL
        (`Key (email)=(...)`) would write the email into the server's own log.
        """
        inserted = self.connection.execute(
            text("INSERT INTO users (id, name, email, external_id, created_at)"
                 " VALUES (:id, :name, :email, :external_id, :created_at)"
                 " ON CONFLICT DO NOTHING RETURNING 1"),
            {key: value for key, value in vars(user).items() if key != "closed_at"},
        ).scalar_one_or_none()
        if inserted is None:
            taken_email = self.connection.execute(
                text("SELECT EXISTS (SELECT 1 FROM users WHERE email = :email)"), {"email": user.email}).scalar_one()
            raise Conflict(f"a user with this {'email' if taken_email else 'external_id'} already exists")

    def get(self, user_id: str) -> User | None:
        row = self.connection.execute(
            text("SELECT id::text, name, email, external_id, created_at, closed_at FROM users WHERE id = :id"),
            {"id": user_id},
        ).one_or_none()
        return User(*row) if row else None

    def existing(self, user_ids: list[str]) -> set[str]:
        rows = self.connection.execute(
            text("SELECT id::text FROM users WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": user_ids}
        )
        return {row[0] for row in rows}


_KEY_COLUMNS = "id, scope, label, created_at, expires_at, last_used_at, revoked_at"


class SqlApiKeys:
    def __init__(self, connection: Connection):
        self.connection = connection

    def add(self, token_sha256: str, scope: str, label: str | None = None,
            expires_in_s: int | None = None) -> ApiKey:
        return ApiKey(*self.connection.execute(text(
            "INSERT INTO api_keys (token_sha256, scope, label, expires_at)"
            " VALUES (:hash, :scope, :label, now() + make_interval(secs => CAST(:expires_in_s AS bigint)))"
            f" RETURNING {_KEY_COLUMNS}"),
            {"hash": token_sha256, "scope": scope, "label": label, "expires_in_s": expires_in_s}).one())

    def find(self, token_sha256: str) -> ApiKey | None:
        """The live key (not revoked, not expired) with this hash; notes that it was used."""
        row = self.connection.execute(text(
            "UPDATE api_keys SET last_used_at = now() WHERE token_sha256 = :hash AND revoked_at IS NULL"
            f" AND (expires_at IS NULL OR expires_at > now()) RETURNING {_KEY_COLUMNS}"),
            {"hash": token_sha256}).one_or_none()
        return ApiKey(*row) if row else None

    def is_live(self, key_id: int) -> bool:
        """Neither revoked nor expired; the row is locked against a revocation until commit."""
        return self.connection.execute(text(
            "SELECT true FROM api_keys WHERE id = :id AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > now()) FOR SHARE"), {"id": key_id}).scalar_one_or_none() is True

    def all(self) -> list[ApiKey]:
        return [ApiKey(*row) for row in self.connection.execute(text(
            f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY id"))]

    def revoke(self, key_id: int) -> ApiKey | None:
        """Revokes the key (kept as it is if already revoked); None for an unknown id."""
        row = self.connection.execute(text(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = :id"
            f" RETURNING {_KEY_COLUMNS}"), {"id": key_id}).one_or_none()
        return ApiKey(*row) if row else None


# Both run on every money movement, so on the driver's cursor (see storage.driver).
_CLAIM = driver.statement(
    "INSERT INTO idempotency_keys (api_key_id, key, request_sha256, status_code, response)"
    " VALUES (:api_key_id, :key, :hash, 0, '{}') ON CONFLICT DO NOTHING RETURNING 1")
_COMPLETE = driver.statement(
    "UPDATE idempotency_keys SET status_code = :status, response = CAST(:body AS json)"
    " WHERE api_key_id = :api_key_id AND key = :key")


class SqlIdempotencyKeys:
    """The key row is inserted first in the transaction that moves the money.

    A concurrent request with the same key blocks on the row's unique index until the
    first commits (then it reads the stored answer) or until `lock_timeout` (then 409).
    """

    def __init__(self, connection: Connection, at_commit: list | None = None):
        self.connection = connection
        #: Where `complete` leaves its statement for the unit of work to send with its COMMIT;
        #: None: `complete` runs it at once.
        self.at_commit = at_commit

    def claim(self, api_key_id: int, key: str, request_sha256: str) -> StoredResponse | None:
        try:
            inserted = driver.execute(self.connection, _CLAIM,
                                      {"api_key_id": api_key_id, "key": key, "hash": request_sha256}).fetchone()
        except DBAPIError as error:
            if isinstance(error.orig, psycopg.errors.LockNotAvailable):
                raise IdempotencyKeyInProgress("a request with this Idempotency-Key is still running") from error
            raise
        if inserted:
            return None
        row = self.connection.execute(
            text("SELECT request_sha256, status_code, response FROM idempotency_keys"
                 " WHERE api_key_id = :api_key_id AND key = :key"),
            {"api_key_id": api_key_id, "key": key},
        ).one()
        return StoredResponse(row[0], row[1], row[2])

    def complete(self, api_key_id: int, key: str, status_code: int, body: dict[str, Any]) -> None:
        """Stores the answer. It is the last write before the commit (pipeline/idempotency.py),
        so with `at_commit` it travels with the COMMIT: one round trip fewer per request, and
        a hot wallet's row lock is held one round trip shorter."""
        parameters = {"api_key_id": api_key_id, "key": key, "status": status_code, "body": json.dumps(body)}
        if self.at_commit is None:
            driver.execute(self.connection, _COMPLETE, parameters)
        else:
            self.at_commit.append((_COMPLETE, parameters))

    def record(self, api_key_id: int, key: str, request_sha256: str, status_code: int, body: dict[str, Any]) -> None:
        self.connection.execute(
            text("INSERT INTO idempotency_keys (api_key_id, key, request_sha256, status_code, response)"
                 " VALUES (:api_key_id, :key, :hash, :status, CAST(:body AS json)) ON CONFLICT DO NOTHING"),
            {"api_key_id": api_key_id, "key": key, "hash": request_sha256, "status": status_code,
             "body": json.dumps(body)},
        )
