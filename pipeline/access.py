"""Who may do what, by the scope of their API key (see ../shared/API.md, Conventions)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    api_key_id: int
    scope: str

    @property
    def user_id(self) -> str | None:
        return self.scope[5:] if self.scope.startswith("user:") else None

    def may_operate(self) -> bool:
        """Bulk credits, retries, reconciliation, and reading everything."""
        return self.scope in ("admin", "operator")

    def may_read_all(self) -> bool:
        """Reading every activity, row, user and movement: an approver reads what it approves."""
        return self.scope in ("admin", "operator", "approver")

    def may_approve(self) -> bool:
        """Approving or rejecting bulk credits (maker-checker); never one's own upload."""
        return self.scope in ("admin", "approver")

    def may_move_money(self) -> bool:
        """Ad-hoc deposits and withdrawals."""
        return self.scope == "admin"

    def may_read_user(self, user_id: str) -> bool:
        return self.may_read_all() or self.user_id == user_id

    def may_transfer_from(self, user_id: str) -> bool:
        return self.scope == "admin" or self.user_id == user_id
