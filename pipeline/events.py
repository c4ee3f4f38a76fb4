"""Events: one per posting to a user wallet, moved from the outbox to Redis Streams.

Every transaction that posts to a user wallet writes an outbox row in that same
transaction (a trigger on `postings`, see migration 0005). `publish_pending` moves the
oldest rows to the streams and deletes them, in one database transaction per batch:

- **At least once.** The rows are deleted only after every XADD of the batch succeeded,
  and in the same transaction; a crash in between leaves them in the outbox, and the next
  run publishes them again with the same `event_id`. Consumers drop duplicates by it.
- **In order per wallet.** Rows are published in outbox id order, which per wallet is the
  ledger's order (the id is taken while the wallet's row lock is held). One publisher at a
  time: each batch takes a transaction-scoped advisory lock, whatever scheduler thinks
  it leads, so two batches never interleave their XADDs.

Streams (the keys live here, so the publisher and the readers agree):
- `wallet.events`: every event, for any consumer of the whole flow;
- `wallet.events:users:<shard>`: the events of the users whose id falls in that shard, so
  a user's subscriber reads a sixteenth of the flow (by default) rather than all of it,
  with a number of keys that stays fixed however many users there are;
- `wallet.events:activity:<activity_id>`: the events of one bulk credit.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from pipeline.money import MINOR_UNITS, Currency, format_amount

ALL_EVENTS_STREAM = "wallet.events"
USER_SHARD_STREAM = "wallet.events:users:{shard}"
ACTIVITY_STREAM = "wallet.events:activity:{activity_id}"

#: The event type of each journal entry kind, for its credits and its debits.
EVENT_TYPES = {
    ("deposit", "credit"): "deposit",
    ("withdrawal", "debit"): "withdrawal",
    ("transfer", "debit"): "transfer.sent",
    ("transfer", "credit"): "transfer.received",
    ("bulk_credit", "credit"): "bulk_credit.credited",
    # A reversal row takes a credit back; a single movement undone is reversal.debit / .credit.
    ("bulk_reversal", "debit"): "bulk_credit.reversed",
}


@dataclass(frozen=True)
class OutboxRow:
    """One outbox row with the facts of its posting and journal entry; amounts in minor units."""

    outbox_id: int
    posting_id: int
    user_id: str
    kind: str
    posted: int  #: the signed change to the wallet
    entry_amount: int
    fee: int
    currency: str
    balance_after: int
    transaction_id: str
    from_user_id: str | None
    to_user_id: str | None
    reference: str | None
    activity_id: str | None
    row_number: int | None
    created_at: datetime


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    activity_id: str | None
    body: dict[str, Any]


class EventOutbox(Protocol):
    def take_publisher_lock(self) -> bool:
        """True if this transaction is now the only publisher; False if another one is running."""
    def pending(self, limit: int) -> list[OutboxRow]:
        """The oldest `limit` rows, in outbox id order."""
    def remove(self, outbox_ids: list[int]) -> int: ...


class EventLog(Protocol):
    def append(self, events: list[Event]) -> None:
        """Appends `events` in this order to every stream they belong to; raises if any append failed."""


def user_shard(user_id: str, shards: int) -> int:
    """The user's stream shard: stable across processes and restarts (unlike `hash`)."""
    return zlib.crc32(user_id.encode()) % shards


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def event_from(row: OutboxRow) -> Event:
    direction = "debit" if row.posted < 0 else "credit"
    event_type = EVENT_TYPES.get((row.kind, direction), f"{row.kind}.{direction}")
    transfer = row.kind == "transfer"
    unit = Currency(row.currency, MINOR_UNITS[row.currency])
    counterparty = (row.to_user_id if direction == "debit" else row.from_user_id) if transfer else None
    body = {
        "event_id": str(row.posting_id),
        "type": event_type,
        "user_id": row.user_id,
        "currency": row.currency,
        # As in the transaction history: a transfer's amount without its fee, which the sender pays on top.
        "amount": format_amount(row.entry_amount if transfer else abs(row.posted), unit),
        "fee": format_amount(row.fee if transfer and direction == "debit" else 0, unit),
        "direction": direction,
        "balance_after": format_amount(row.balance_after, unit),
        "transaction_id": row.transaction_id,
        "counterparty_user_id": counterparty,
        "reference": row.reference,
        "activity_id": row.activity_id,
        "row_number": row.row_number,
        "occurred_at": rfc3339(row.created_at),
    }
    return Event(body["event_id"], row.user_id, row.activity_id, body)


def publish_pending(uow_factory: Callable, log: EventLog, batch_max: int) -> int:
    """Publishes the oldest outbox rows (at most `batch_max`) and deletes them; returns how many."""
    assert batch_max >= 1
    uow = uow_factory()
    with uow:
        if not uow.events.take_publisher_lock():
            return 0
        rows = uow.events.pending(batch_max)
        if not rows:
            return 0
        ids = [row.outbox_id for row in rows]
        assert ids == sorted(ids), "the outbox must be published in id order"
        log.append([event_from(row) for row in rows])
        removed = uow.events.remove(ids)
        assert removed == len(ids), f"published {len(ids)} outbox rows but deleted {removed}"
        uow.commit()
    return len(rows)
