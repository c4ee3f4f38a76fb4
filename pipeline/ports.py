"""What the use cases need from a database, as protocols that `storage/` implements.

A unit of work is one database transaction: `with uow:` opens it, `uow.commit()` makes it
durable, and leaving the block without committing rolls it back.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ContextManager, Protocol

from pipeline.ledger import Posting, Wallet, WalletKey


@dataclass(frozen=True)
class User:
    id: str
    name: str
    email: str
    external_id: str | None
    created_at: datetime
    #: When the user was closed (soft delete); None while open.
    closed_at: datetime | None = None


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored: never its token, only the token's hash (not here)."""

    id: int
    scope: str
    label: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class JournalEntry:
    id: str
    kind: str
    currency: str
    amount: int
    fee: int = 0
    from_user_id: str | None = None
    to_user_id: str | None = None
    reference: str | None = None
    idempotency_key: str | None = None
    #: The bulk-credit activity and funding account an entry moves money for, if any.
    activity_id: str | None = None
    funding_account: str | None = None
    #: The movement a `reversal` entry undoes (UNIQUE: a movement is reversed at most once).
    reverses_entry_id: str | None = None


@dataclass(frozen=True)
class StoredResponse:
    request_sha256: str
    status_code: int
    body: dict[str, Any]


class Users(Protocol):
    def add(self, user: User) -> None: ...
    def get(self, user_id: str) -> User | None: ...
    def existing(self, user_ids: list[str]) -> set[str]: ...


class Ledger(Protocol):
    def known_users_creating_wallets(self, user_ids: list[str], create: list[WalletKey]) -> set[str]:
        """Which of `user_ids` exist; creates the wallets in `create` that are missing, except
        those of users who do not exist."""
    def lock_wallets(self, keys: list[WalletKey], create: list[WalletKey] = ()) -> dict[WalletKey, Wallet]: ...
    def record(self, entry: JournalEntry, postings: list[Posting]) -> datetime: ...
    def entry(self, entry_id: str) -> dict[str, Any] | None: ...
    def entry_wallets(self, entry_id: str, limit: int) -> list[tuple[WalletKey, int]]:
        """The entry's first `limit` postings as (the wallet's key, signed amount in minor units)."""
    def reversal_of(self, entry_id: str) -> str | None:
        """The id of the entry that reversed `entry_id`, if any."""
    def entry_postings(self, entry_id: str, user_id: str | None, after_id: int | None,
                       limit: int) -> tuple[int, int, list[dict[str, Any]]]: ...
    def wallets_of(self, user_id: str) -> list[dict[str, Any]]: ...
    def balance(self, user_id: str, currency: str) -> int: ...
    def balance_and_held(self, user_id: str, currency: str) -> tuple[int, int]: ...
    def closed_users(self, user_ids: list[str]) -> set[str]: ...
    def history(self, user_id: str, currency: str | None, limit: int, before_id: int | None) -> list[dict[str, Any]]: ...


class IdempotencyKeys(Protocol):
    def claim(self, api_key_id: int, key: str, request_sha256: str) -> StoredResponse | None: ...
    def complete(self, api_key_id: int, key: str, status_code: int, body: dict[str, Any]) -> None: ...
    def record(self, api_key_id: int, key: str, request_sha256: str, status_code: int, body: dict[str, Any]) -> None: ...


class ApiKeys(Protocol):
    def add(self, token_sha256: str, scope: str, label: str | None = None,
            expires_in_s: int | None = None) -> ApiKey: ...
    def find(self, token_sha256: str) -> ApiKey | None: ...
    def all(self) -> list[ApiKey]: ...
    def is_live(self, key_id: int) -> bool: ...
    def revoke(self, key_id: int) -> ApiKey | None: ...


class Reconciliations(Protocol):
    def create(self, reconciliation_id: str, full: bool) -> None: ...
    def discard(self, reconciliation_id: str) -> None: ...
    def claim(self, reconciliation_id: str) -> dict[str, Any] | None: ...
    def last_clean_horizon(self) -> tuple[int, datetime] | None: ...
    def check(self, since: tuple[int, datetime] | None) -> Any: ...  # pipeline.reconciliation.Evidence
    def finish(self, reconciliation_id: str, status: str, wallets_checked: int, mismatches: list[dict],
               mismatch_count: int, horizon: int) -> None: ...
    def get(self, reconciliation_id: str) -> dict[str, Any] | None: ...
    def recent(self, limit: int, offset: int) -> list[dict[str, Any]]: ...


class UnitOfWork(Protocol):
    users: Users
    ledger: Ledger
    idempotency: IdempotencyKeys
    api_keys: ApiKeys
    reconciliations: Reconciliations

    def __enter__(self) -> "UnitOfWork": ...
    def __exit__(self, *exc_info) -> None: ...
    def savepoint(self) -> ContextManager[Any]: ...
    def commit(self) -> None: ...
