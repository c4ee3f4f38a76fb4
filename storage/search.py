"""The user and transaction lists: one statement per combination of filters, so that each
plan uses the index of its filter (migration 0019). Users page newest first by `seq`,
journal entries by (created_at, id)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from pipeline.ports import User

_USER_FILTERS = {"email": "email = :email", "external_id": "external_id = :external_id"}
_ENTRY_FILTERS = {
    "reference": "reference = :reference",
    "activity_id": "activity_id = CAST(:activity_id AS uuid)",
    "kind": "kind = :kind",
    "created_after": "created_at >= :created_after",
    "created_before": "created_at < :created_before",
    "user_id": "id IN (SELECT p.journal_entry_id FROM postings p WHERE p.wallet_id IN ("
               "SELECT w.id FROM wallets w WHERE w.user_id = CAST(:user_id AS uuid)))",
}
ENTRY_COLUMNS = ("id::text AS id, kind, currency, amount, fee, from_user_id::text AS from_user_id,"
                 " to_user_id::text AS to_user_id, reference, activity_id::text AS activity_id, funding_account,"
                 " created_at")


def _where(filters: dict[str, Any], fragments: dict[str, str], after: str | None) -> str:
    clauses = [fragments[name] for name in fragments if filters.get(name) is not None]
    if after is not None:
        clauses.append(after)
    return " WHERE " + " AND ".join(clauses) if clauses else ""


class SqlSearch:
    def __init__(self, connection: Connection):
        self.connection = connection

    def users(self, filters: dict[str, Any], before_seq: int | None, limit: int) -> list[tuple[int, User]]:
        rows = self.connection.execute(text(
            "SELECT seq, id::text, name, email, external_id, created_at FROM users"
            f"{_where(filters, _USER_FILTERS, None if before_seq is None else 'seq < :before_seq')}"
            " ORDER BY seq DESC LIMIT :limit"),
            {**filters, "before_seq": before_seq, "limit": limit})
        return [(row[0], User(*row[1:])) for row in rows]

    def entries(self, filters: dict[str, Any], before: tuple[datetime, str] | None,
                limit: int) -> list[dict[str, Any]]:
        """Newest first by (created_at, id); `before` is the position of the last entry read."""
        after = "(created_at, id) < (:before_at, CAST(:before_id AS uuid))" if before else None
        rows = self.connection.execute(text(
            f"SELECT {ENTRY_COLUMNS} FROM journal_entries"
            f"{_where(filters, _ENTRY_FILTERS, after)} ORDER BY created_at DESC, id DESC LIMIT :limit"),
            {**filters, "before_at": before and before[0], "before_id": before and before[1], "limit": limit})
        return [dict(row) for row in rows.mappings()]
