"""Double-entry rules: a journal entry's postings sum to zero per currency, a user
wallet, a funding account or a reservation never goes below zero, no debit takes money a
hold reserved (a user wallet's balance stays at or above its `held`), and no money moves
in or out of a frozen wallet or a closed user's.

These are checked here in Python before anything is written, and again by PostgreSQL
(a deferred constraint trigger and a CHECK constraint): a pair of assertions on two
code paths, so a bug in either one cannot move money silently.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from pipeline.errors import AmountOutOfRange, FieldError, InsufficientFunds, UserClosed, WalletFrozen
from pipeline.money import BALANCE_MINOR_MAX, BALANCE_MINOR_MIN

SYSTEM_WALLET_NAMES = ("bank", "fees", "bulk_funding", "funding", "reservation")
#: System wallets that hold real money set aside and so, like a user's, never go below zero:
#: a funding account (`owner` = its name) and an activity's reservation (`owner` = its id).
#: The others are the outside world's side of the ledger and may.
FUNDED_SYSTEM_WALLETS = ("funding", "reservation")


@dataclass(frozen=True)
class WalletKey:
    """A user's wallet (`user_id` set) or one shard of a system wallet (`system_name` set,
    with `owner` for a funding account's or an activity's wallets)."""

    currency: str
    user_id: str | None = None
    system_name: str | None = None
    shard: int = 0
    owner: str | None = None

    def __post_init__(self):
        assert (self.user_id is None) != (self.system_name is None)
        assert self.system_name is None or self.system_name in SYSTEM_WALLET_NAMES
        assert (self.owner is not None) == (self.system_name in FUNDED_SYSTEM_WALLETS)

    @property
    def never_negative(self) -> bool:
        return self.user_id is not None or self.system_name in FUNDED_SYSTEM_WALLETS


#: Wallet statuses: only an active wallet's balance may change (migration 0015 checks it too).
ACTIVE, FROZEN, CLOSED = "active", "frozen", "closed"


@dataclass(frozen=True)
class Wallet:
    id: int
    key: WalletKey
    balance: int
    #: Money reserved by open holds, in minor units: `available = balance - held`.
    held: int = 0
    status: str = ACTIVE

    @property
    def available(self) -> int:
        return self.balance - self.held


def check_active(wallet: Wallet) -> None:
    """Raises WalletFrozen or UserClosed unless money may move in or out of `wallet`."""
    if wallet.status == FROZEN:
        raise WalletFrozen("the wallet is frozen: no money moves in or out until it is unfrozen")
    if wallet.status == CLOSED:
        raise UserClosed("the user is closed: no money moves for them any more")


@dataclass(frozen=True)
class Movement:
    """A signed change to one wallet, in minor units."""

    wallet: WalletKey
    amount: int


@dataclass(frozen=True)
class Posting:
    wallet_id: int
    currency: str
    amount: int
    balance_after: int


def assert_balanced(movements: list[Movement]) -> None:
    totals: dict[str, int] = defaultdict(int)
    for movement in movements:
        assert movement.amount != 0, "a posting of zero carries no information"
        totals[movement.wallet.currency] += movement.amount
    assert all(total == 0 for total in totals.values()), f"unbalanced journal entry: {dict(totals)}"


def post(wallets: dict[WalletKey, Wallet], movements: list[Movement]) -> list[Posting]:
    """The postings that apply `movements` to locked `wallets`, with each balance after.

    Raises WalletFrozen or UserClosed when a wallet is not active, InsufficientFunds when a
    user wallet would go below what its holds reserve (below zero for a funded system
    wallet), and AmountOutOfRange when any balance would leave the bigint range the
    database stores it in.
    """
    assert_balanced(movements)
    balances = {key: wallet.balance for key, wallet in wallets.items()}
    postings = []
    for movement in movements:
        check_active(wallets[movement.wallet])
        balance = balances[movement.wallet] + movement.amount
        if movement.wallet.never_negative and balance < 0:
            raise InsufficientFunds("the wallet does not hold enough money for this movement")
        if movement.amount < 0 and wallets[movement.wallet].held and balance < wallets[movement.wallet].held:
            raise InsufficientFunds("the wallet's available balance (balance less held money) is too small")
        if not BALANCE_MINOR_MIN <= balance <= BALANCE_MINOR_MAX:
            limit = f"a wallet holds at most {BALANCE_MINOR_MAX} minor units"
            raise AmountOutOfRange(f"the movement would take a balance out of range: {limit}",
                                   [FieldError("amount", f"too large for the wallet's balance: {limit}")])
        balances[movement.wallet] = balance
        wallet = wallets[movement.wallet]
        postings.append(Posting(wallet.id, movement.wallet.currency, movement.amount, balance))
    return postings
