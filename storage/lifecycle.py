"""Freezing wallets and closing users (migration 0015; lock order in pipeline/lifecycle.py)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

_WALLET = "id, currency, balance, held, status, updated_at"


class SqlLifecycle:
    def __init__(self, connection: Connection):
        self.connection = connection

    def lock_user(self, user_id: str) -> dict[str, Any] | None:
        """The user's row, locked FOR UPDATE: it waits for every movement creating a wallet for them."""
        row = self.connection.execute(text("SELECT id::text, closed_at FROM users WHERE id = :id FOR UPDATE"),
                                      {"id": user_id}).mappings().one_or_none()
        return dict(row) if row else None

    def lock_wallet(self, user_id: str, currency: str) -> dict[str, Any] | None:
        row = self.connection.execute(
            text(f"SELECT {_WALLET} FROM wallets WHERE user_id = :user_id AND currency = :currency FOR UPDATE"),
            {"user_id": user_id, "currency": currency}).mappings().one_or_none()
        return dict(row) if row else None

    def lock_user_wallets(self, user_id: str) -> list[dict[str, Any]]:
        rows = self.connection.execute(
            text(f"SELECT {_WALLET} FROM wallets WHERE user_id = :user_id ORDER BY id FOR UPDATE"),
            {"user_id": user_id}).mappings()
        return [dict(row) for row in rows]

    def set_wallet_status(self, wallet_id: int, status: str, reason: str) -> dict[str, Any]:
        row = self.connection.execute(
            text(f"UPDATE wallets SET status = :status, status_reason = :reason, updated_at = now()"
                 f" WHERE id = :id RETURNING {_WALLET}"),
            {"id": wallet_id, "status": status, "reason": reason}).mappings().one()
        return dict(row)

    def close(self, user_id: str) -> None:
        self.connection.execute(text("UPDATE users SET closed_at = now() WHERE id = :id"), {"id": user_id})
        self.connection.execute(
            text("UPDATE wallets SET status = 'closed', status_reason = 'user closed', updated_at = now()"
                 " WHERE user_id = :id"), {"id": user_id})
