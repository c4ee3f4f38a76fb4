"""Reversing a single movement: a deposit, a withdrawal or a transfer undone in full, fee
included, in one journal entry of kind `reversal` (../shared/API.md, "Money movement").

The reversal posts the opposite of every posting of the movement, on the same wallets (the
same bank or fees shard), so each wallet ends where it would be without the movement and
later movements keep their own postings. It can happen once: the use case checks after
locking the wallets (a reversal racing it has committed by then, or waits behind it), and
`journal_entries.reverses_entry_id` is UNIQUE, so the database refuses a second one even if
that check were wrong. A wallet that no longer holds what the movement brought it (the
payee of a transfer spent it) refuses the reversal with `insufficient_funds`: nothing moves.

A bulk credit's rows are reversed through their activity (pipeline/bulk/reversal.py), and
the movements of funding accounts and reservations are the pipeline's own, so only the
kinds in REVERSIBLE_KINDS are undone here.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from pipeline import audit
from pipeline.audit import Actor
from pipeline.errors import AlreadyReversed, NotFound, NotReversible
from pipeline.ledger import Movement, post
from pipeline.ports import JournalEntry, UnitOfWork
from pipeline.wallets import Moved

#: The movements that can be undone here, each one entry of at most three postings.
REVERSIBLE_KINDS = ("deposit", "withdrawal", "transfer")
#: Postings a reversible movement has at most (a transfer with a fee: sender, payee, fees).
POSTINGS_PER_MOVEMENT_MAX = 3


@dataclass(frozen=True)
class ReversedMovement:
    moved: Moved
    reversed_kind: str  #: the kind of the movement undone


def reverse_movement(uow: UnitOfWork, *, entry_id: str, actor: Actor, reason: str,
                     idempotency_key: str | None = None) -> ReversedMovement:
    """Undoes movement `entry_id` in one journal entry, inside the caller's transaction.

    Raises NotFound, NotReversible (422: not a deposit, withdrawal or transfer),
    AlreadyReversed (409) and InsufficientFunds (422: a wallet no longer holds the money).
    """
    entry = uow.ledger.entry(entry_id)
    if entry is None:
        raise NotFound(f"no transaction {entry_id}")
    if entry["kind"] not in REVERSIBLE_KINDS:
        raise NotReversible(f"a {entry['kind']} cannot be reversed on its own; only a "
                            f"{', '.join(REVERSIBLE_KINDS)} can (a bulk credit is reversed through its activity)")
    postings = uow.ledger.entry_wallets(entry_id, POSTINGS_PER_MOVEMENT_MAX + 1)
    assert 2 <= len(postings) <= POSTINGS_PER_MOVEMENT_MAX, f"entry {entry_id} has {len(postings)} postings"
    movements = [Movement(key, -amount) for key, amount in postings]
    wallets = uow.ledger.lock_wallets([key for key, _ in postings])
    assert len(wallets) == len(postings), f"entry {entry_id}: {len(wallets)} of {len(postings)} wallets found"
    # Checked once the wallets are locked: a reversal racing this one has committed by now.
    if uow.ledger.reversal_of(entry_id) is not None:
        raise AlreadyReversed(f"transaction {entry_id} is already reversed")
    reversal = JournalEntry(str(uuid.uuid4()), "reversal", entry["currency"], entry["amount"], entry["fee"],
                            from_user_id=entry["to_user_id"], to_user_id=entry["from_user_id"],
                            reference=entry["reference"], idempotency_key=idempotency_key,
                            reverses_entry_id=entry_id)
    posted = post(wallets, movements)  # InsufficientFunds when a wallet no longer holds the money
    created_at = uow.ledger.record(reversal, posted)
    audit.record(uow, actor, "transaction.reverse", "journal_entry", entry_id, reversal_id=reversal.id,
                 reason=reason, amount=entry["amount"], fee=entry["fee"], currency=entry["currency"])
    return ReversedMovement(Moved(reversal, created_at, posted), entry["kind"])
