"""Funding accounts and reservations in PostgreSQL: their wallets, created on first use and
locked in ascending id order, and what they hold."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from pipeline.ledger import Wallet, WalletKey

_ENSURE_ACCOUNT = text("INSERT INTO funding_accounts (name) VALUES (:name) ON CONFLICT DO NOTHING")

_CREATE_FUNDING = text("""
INSERT INTO wallets (system_name, funding_account, currency)
SELECT 'funding', :name, c FROM unnest(CAST(:currencies AS char(3)[])) c
ON CONFLICT DO NOTHING
""")

# Literal system names, so that each statement uses its partial unique index.
_LOCK_FUNDING = text("""
SELECT id, currency, balance FROM wallets
 WHERE system_name = 'funding' AND funding_account = :name AND currency = ANY(CAST(:currencies AS char(3)[]))
 ORDER BY id FOR UPDATE
""")

_CREATE_RESERVATION = text("""
INSERT INTO wallets (system_name, activity_id, shard, currency)
SELECT 'reservation', CAST(:activity_id AS uuid), s, c
  FROM unnest(CAST(:currencies AS char(3)[]), CAST(:shards AS smallint[])) AS k(c, s)
ON CONFLICT DO NOTHING
""")

_LOCK_RESERVATION = text("""
SELECT id, currency, shard, balance FROM wallets
 WHERE system_name = 'reservation' AND activity_id = CAST(:activity_id AS uuid)
 ORDER BY id FOR UPDATE
""")

_BALANCES = text("""
SELECT f.currency, f.balance,
       coalesce((SELECT sum(r.balance) FROM wallets r JOIN bulk_activities a ON a.id = r.activity_id
                  WHERE r.system_name = 'reservation' AND a.funding_account = :name
                    AND r.currency = f.currency), 0) AS reserved
  FROM wallets f
 WHERE f.system_name = 'funding' AND f.funding_account = :name
 ORDER BY f.currency
""")


class SqlFunding:
    def __init__(self, connection: Connection):
        self.connection = connection

    def ensure_account(self, name: str) -> None:
        self.connection.execute(_ENSURE_ACCOUNT, {"name": name})

    def account_exists(self, name: str) -> bool:
        return self.connection.execute(text("SELECT 1 FROM funding_accounts WHERE name = :name"),
                                       {"name": name}).first() is not None

    def lock_account(self, name: str, currencies: list[str]) -> dict[str, Wallet]:
        """The account's wallets in `currencies`, created at zero when missing, locked."""
        self.connection.execute(_CREATE_FUNDING, {"name": name, "currencies": currencies})
        rows = self.connection.execute(_LOCK_FUNDING, {"name": name, "currencies": currencies}).all()
        return {currency: Wallet(wallet_id, WalletKey(currency, system_name="funding", owner=name), balance)
                for wallet_id, currency, balance in rows}

    def lock_reservation(self, activity_id: str, shards: list[tuple[str, int]] = ()) -> dict[tuple[str, int], Wallet]:
        """The activity's reservation wallets by (currency, shard), creating those in `shards`."""
        if shards:
            self.connection.execute(_CREATE_RESERVATION, {"activity_id": activity_id,
                                                          "currencies": [c for c, _ in shards],
                                                          "shards": [s for _, s in shards]})
        rows = self.connection.execute(_LOCK_RESERVATION, {"activity_id": activity_id}).all()
        return {(currency, shard): Wallet(wallet_id, WalletKey(currency, system_name="reservation", shard=shard,
                                                                 owner=activity_id), balance)
                for wallet_id, currency, shard, balance in rows}

    def balances(self, name: str) -> list[dict[str, Any]]:
        return [dict(row) for row in self.connection.execute(_BALANCES, {"name": name}).mappings()]

    def accounts(self, after_name: str, limit: int) -> list[str]:
        return self.connection.execute(text(
            "SELECT name FROM funding_accounts WHERE name > :after ORDER BY name LIMIT :limit"),
            {"after": after_name, "limit": limit}).scalars().all()
