"""Reconciliation: proof that every balance equals its ledger.

Seven checks, each over one consistent snapshot of the database:
  (a) every wallet's balance equals the sum of its postings and its latest `balance_after`;
  (b) every journal entry sums to zero per currency;
  (c) per currency, all wallets, system wallets included, sum to zero;
  (d) every bulk-credit activity's counters equal its rows' statuses;
  (e) every SUCCESS row has exactly one posting, and no FAILED, INVALID or CANCELLED row has any;
  (f) what every released credit activity's reservation holds equals what its unpaid rows are
      owed (reserved, less paid, less returned);
  (g) every SUCCESS row of a reversal took back exactly the credit row it claims (same payee,
      amount and currency, a SUCCESS row of the credit it reverses). A reversal reserves
      nothing (its money goes from the payees to the funding account), so (f) leaves it out.

A run is incremental by default: (a), (b), (d) and (e) look only at what changed since
the last clean run; `full` looks at everything. A run never changes a balance: it reports.
"""
from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Callable

import pandas

from pipeline import webhooks
from pipeline import action_log
from pipeline.audit import COMMAND_LINE, Actor
from pipeline.errors import NotFound
from pipeline.money import MINOR_UNITS, currency, format_amount
from pipeline.ports import UnitOfWork
from pipeline.statements import Page, decode_cursor, page_of

#: The most mismatches one run stores and reports; the count is always exact.
MISMATCHES_STORED_MAX = 1_000
#: The most mismatches a `reconciliation.mismatch` webhook carries; `mismatch_count` is exact.
MISMATCHES_IN_WEBHOOK_MAX = 100


@dataclass(frozen=True)
class Mismatch:
    """`wallet` names what disagrees: a wallet id, or `journal_entry:<id>`, `currency:<code>`,
    `activity:<id>`, `bulk_row:<id>` for the checks that are not about one wallet."""

    wallet: str
    kind: str
    expected: str
    actual: str


@dataclass(frozen=True)
class Evidence:
    """What storage read from one snapshot; the rules below turn it into mismatches."""

    horizon: int  #: the snapshot's oldest running transaction: the next incremental run starts there
    wallets_checked: int
    #: (wallet id, currency, balance, sum of postings, latest balance_after) of wallets that disagree
    wallets: list[tuple[int, str, int, int, int]]
    #: (journal entry id, currency or None when it has no postings, sum) of entries that do not balance
    unbalanced_entries: list[tuple[str, str | None, int | None]]
    currency_totals: list[tuple[str, int]]
    #: (activity id, counter, expected from rows, actual) for check (d)
    activity_counters: list[tuple[str, str, int, int]] = ()
    #: (bulk row id, status, postings) for check (e)
    row_postings: list[tuple[int, str, int]] = ()
    #: (activity id, currency, owed to unpaid rows, held by the reservation) for check (f)
    reservations: list[tuple[str, str, int, int]] = ()
    #: bulk row ids of SUCCESS reversal rows that do not match the credit row they claim, for check (g)
    reversal_rows: list[int] = ()


#: The activity counters check (d) compares with a count of the rows (storage/reconciliation.py).
ACTIVITY_COUNTERS = ("total_records", "valid_records", "invalid_records", "successful_records", "failed_records",
                     "pending_records", "cancelled_records")
#: The row statuses check (e) looks at: a SUCCESS row has one posting, the others none.
ROW_POSTING_STATUSES = ("SUCCESS", "FAILED", "INVALID", "CANCELLED")
#: Every kind of mismatch `mismatches_in` reports: /metrics exports each at 0 from the start,
#: so that an alert on increase() sees the first one of any kind.
MISMATCH_KINDS = (
    "balance_differs_from_postings", "balance_differs_from_last_balance_after", "journal_entry_unbalanced",
    "currency_not_zero", *(f"activity_counter_{counter}" for counter in ACTIVITY_COUNTERS),
    *(f"{status.lower()}_row_postings" for status in ROW_POSTING_STATUSES), "reservation_differs_from_unpaid_rows",
    "reversal_row_differs_from_credit_row",
)


def _money(minor: int, code: str) -> str:
    return format_amount(minor, currency(code)) if code in MINOR_UNITS else str(minor)


def mismatches_in(evidence: Evidence) -> list[Mismatch]:
    found = []
    for wallet_id, code, balance, total, last in evidence.wallets:
        if balance != total:
            found.append(Mismatch(str(wallet_id), "balance_differs_from_postings", _money(total, code), _money(balance, code)))
        if balance != last:
            found.append(Mismatch(str(wallet_id), "balance_differs_from_last_balance_after",
                                  _money(last, code), _money(balance, code)))
    for entry_id, code, total in evidence.unbalanced_entries:
        actual = "no postings" if code is None else f"{_money(total, code)} {code}"
        found.append(Mismatch(f"journal_entry:{entry_id}", "journal_entry_unbalanced", "0", actual))
    found += currency_imbalances(evidence.currency_totals)
    for activity_id, counter, expected, actual in evidence.activity_counters:
        found.append(Mismatch(f"activity:{activity_id}", f"activity_counter_{counter}", str(expected), str(actual)))
    for row_id, status, postings in evidence.row_postings:
        expected = "1" if status == "SUCCESS" else "0"
        found.append(Mismatch(f"bulk_row:{row_id}", f"{status.lower()}_row_postings", expected, str(postings)))
    for activity_id, code, owed, held in evidence.reservations:
        found.append(Mismatch(f"activity:{activity_id}", "reservation_differs_from_unpaid_rows",
                              f"{_money(owed, code)} {code}", f"{_money(held, code)} {code}"))
    for row_id in evidence.reversal_rows:
        found.append(Mismatch(f"bulk_row:{row_id}", "reversal_row_differs_from_credit_row", "the credit row it claims",
                              "another payee, amount, currency or status"))
    return found


def start(uow: UnitOfWork, full: bool, actor: Actor = COMMAND_LINE) -> str:
    """Records a queued run; the caller sends it to a worker once this has committed."""
    reconciliation_id = str(uuid.uuid4())
    with uow:
        uow.reconciliations.create(reconciliation_id, full)
        uow.commit()
    action_log.logged("reconciliation.start", actor, f"reconciliation {reconciliation_id}{' (full)' if full else ''}",
                      reconciliation_id=reconciliation_id, full=full)
    return reconciliation_id


def discard(uow: UnitOfWork, reconciliation_id: str) -> None:
    """Forgets a queued run whose message could not be sent: no run waits for ever."""
    with uow:
        uow.reconciliations.discard(reconciliation_id)
        uow.commit()


def run(uow: UnitOfWork, reconciliation_id: str, alert: Callable[[dict], None] | None = None) -> dict:
    """Runs the checks of a queued run, stores the result, and alerts on any mismatch."""
    with uow:
        run = uow.reconciliations.claim(reconciliation_id)
        if run is None:
            raise NotFound(f"no reconciliation {reconciliation_id}")
        if run["status"] != "running":  # already finished by an earlier delivery
            return run
        since = None if run["full"] else uow.reconciliations.last_clean_horizon()
        evidence = uow.reconciliations.check(since)
        mismatches = mismatches_in(evidence)
        status = "mismatched" if mismatches else "clean"
        uow.reconciliations.finish(reconciliation_id, status, evidence.wallets_checked,
                                   [asdict(m) for m in mismatches[:MISMATCHES_STORED_MAX]],
                                   len(mismatches), evidence.horizon)
        if mismatches:
            webhooks.emit(uow, "reconciliation.mismatch", reconciliation_id, {
                "reconciliation_id": reconciliation_id, "full": run["full"], "mismatch_count": len(mismatches),
                "mismatches": [asdict(m) for m in mismatches[:MISMATCHES_IN_WEBHOOK_MAX]]})
        uow.commit()
    with uow:
        result = uow.reconciliations.get(reconciliation_id)
    if mismatches and alert is not None:
        alert(result)
    return result


def get(uow: UnitOfWork, reconciliation_id: str) -> dict:
    with uow:
        result = uow.reconciliations.get(reconciliation_id)
    if result is None:
        raise NotFound(f"no reconciliation {reconciliation_id}")
    return result


def recent(uow: UnitOfWork, limit: int, cursor: str | None) -> Page:
    """Runs, newest first; the cursor is the position in that order."""
    offset = decode_cursor(cursor, "r") or 0
    with uow:
        runs = uow.reconciliations.recent(limit + 1, offset)
    for position, run in enumerate(runs, start=offset + 1):
        run["position"] = position
    return page_of(runs, limit, "position", "r")


def mismatch_table(mismatches: list[dict]) -> pandas.DataFrame:
    """The mismatches as a table, grouped by kind, for the CLI and CSV exports."""
    frame = pandas.DataFrame(mismatches, columns=["wallet", "kind", "expected", "actual"])
    return frame.sort_values(["kind", "wallet"], kind="stable").reset_index(drop=True)


def currency_imbalances(totals: list[tuple[str, int]]) -> list[Mismatch]:
    """Check (c): the per-currency sum over every wallet must be zero."""
    frame = pandas.DataFrame(totals, columns=["currency", "total"])
    off = frame[frame["total"] != 0]
    return [Mismatch(f"currency:{row.currency}", "currency_not_zero", _money(0, row.currency), _money(row.total, row.currency))
            for row in off.itertuples()]
