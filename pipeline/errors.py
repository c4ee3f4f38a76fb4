"""The two kinds of failure.

`Rejected` and its subclasses are expected answers (bad input, not enough money): the
entry points turn them into 4xx responses or per-row outcomes. `TransientFault` is a
passing fault of the infrastructure (deadlock, serialization failure, lost connection)
that is worth trying again. Anything else is a bug.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class Rejected(Exception):
    """An expected refusal. `code` is a stable snake_case identifier."""

    code = "rejected"
    status = 422

    def __init__(self, detail: str, errors: list[FieldError] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class ValidationFailed(Rejected):
    code = "validation_failed"


class NotFound(Rejected):
    code = "not_found"
    status = 404


class Conflict(Rejected):
    code = "conflict"
    status = 409


class AlreadyReversed(Conflict):
    """The movement was reversed already: a movement is undone at most once."""

    code = "already_reversed"


class NotReversible(Rejected):
    """The movement is of a kind that cannot be undone on its own (a bulk chunk, a reservation)."""

    code = "not_reversible"


class InsufficientFunds(Rejected):
    code = "insufficient_funds"


class AmountOutOfRange(Rejected):
    """A balance would pass what PostgreSQL's bigint holds (pipeline.money.BALANCE_MINOR_MAX)."""

    code = "amount_out_of_range"


class SameWallet(Rejected):
    code = "same_wallet"


class WalletFrozen(Rejected):
    """The wallet is frozen: no money in or out until an admin unfreezes it."""

    code = "wallet_frozen"


class UserClosed(Rejected):
    """The user is closed (soft-deleted): no money moves for them any more."""

    code = "user_closed"


class BalanceNotZero(Conflict):
    """A user with money (or held money) left in a wallet cannot be closed."""

    code = "balance_not_zero"


class InvalidState(Conflict):
    """The object is not in a state that allows this transition (a hold decided already, say)."""

    code = "invalid_state"


class IdempotencyKeyReused(Rejected):
    code = "idempotency_key_reused"


class IdempotencyKeyMissing(Rejected):
    """A money movement sent without an Idempotency-Key (or with a blank one)."""
    code = "idempotency_key_missing"
    status = 400


class IdempotencyKeyInProgress(Rejected):
    code = "idempotency_key_in_progress"
    status = 409


class NotRetryable(Rejected):
    code = "not_retryable"
    status = 400


class TransientFault(Exception):
    """A fault worth retrying: the whole unit of work is run again from the start."""


class Unavailable(Rejected):
    """Transient faults kept happening after every allowed attempt."""

    code = "temporarily_unavailable"
    status = 503
