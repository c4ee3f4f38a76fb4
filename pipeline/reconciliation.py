"""Reconciliation: proof that every balance equals its ledger.

Five checks, each over one consistent snapshot of the database:
  (a) every wallet's balance equals the sum of its postings and its latest `balance_after`;
  (b) every journal entry sums to zero per currency;
  (c) per currency, all wallets, system wallets included, sum to zero;
  (d) every bulk-credit activity's counters equal its rows' statuses;
  (e) every SUCCESS row has exactly one posting, and no FAILED or INVALID row has any.

A run is incremental by default: (a), (b), (d) and (e) look only at what changed since
the last clean run; `full` looks at everything. A run never changes a balance: it reports.
"""
from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Callable

import pandas

from pipeline.errors import NotFound
from pipeline.ports import UnitOfWork
from pipeline.statements import Page, decode_cursor, page_of

#: The most mismatches one run stores and reports; the count is always exact.
MISMATCHES_STORED_MAX = 1_000


@dataclass(frozen=True)
class Mismatch:
    """`wallet` names what disagrees: a wallet id, or `journal_entry:<id>`, `currency:<code>`,
    `activity:<id>`, `bulk_row:<id>` for the checks that are not about one wallet."""

    wallet: str
    kind: str
    expected: str
    actual: str


@dataclass(frozen=True)
class Findings:
    wallets_checked: int
    mismatches: list[Mismatch]
    horizon: int  #: the snapshot's oldest running transaction: the next incremental run starts here


def start(uow: UnitOfWork, full: bool) -> str:
    """Records a queued run; the caller sends it to a worker once this has committed."""
    reconciliation_id = str(uuid.uuid4())
    with uow:
        uow.reconciliations.create(reconciliation_id, full)
        uow.commit()
    return reconciliation_id


def run(uow: UnitOfWork, reconciliation_id: str, alert: Callable[[dict], None] | None = None) -> dict:
    """Runs the checks of a queued run, stores the result, and alerts on any mismatch."""
    with uow:
        run = uow.reconciliations.claim(reconciliation_id)
        if run is None:
            raise NotFound(f"no reconciliation {reconciliation_id}")
        if run["status"] != "running":  # already finished by an earlier delivery
            return run
        since = None if run["full"] else uow.reconciliations.last_clean_horizon()
        findings = uow.reconciliations.check(since)
        status = "mismatched" if findings.mismatches else "clean"
        uow.reconciliations.finish(reconciliation_id, status, findings.wallets_checked,
                                   [asdict(m) for m in findings.mismatches[:MISMATCHES_STORED_MAX]],
                                   len(findings.mismatches), findings.horizon)
        uow.commit()
    with uow:
        result = uow.reconciliations.get(reconciliation_id)
    if findings.mismatches and alert is not None:
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
    offset = decode_cursor(cursor) or 0
    with uow:
        runs = uow.reconciliations.recent(limit + 1, offset)
    for position, run in enumerate(runs, start=offset + 1):
        run["position"] = position
    return page_of(runs, limit, "position")


def mismatch_table(mismatches: list[dict]) -> pandas.DataFrame:
    """The mismatches as a table, grouped by kind, for the CLI and CSV exports."""
    frame = pandas.DataFrame(mismatches, columns=["wallet", "kind", "expected", "actual"])
    return frame.sort_values(["kind", "wallet"], kind="stable").reset_index(drop=True)


def currency_imbalances(totals: list[tuple[str, int]]) -> list[Mismatch]:
    """Check (c): the per-currency sum over every wallet must be zero."""
    frame = pandas.DataFrame(totals, columns=["currency", "total"])
    off = frame[frame["total"] != 0]
    return [Mismatch(f"currency:{row.currency}", "currency_not_zero", "0", str(row.total))
            for row in off.itertuples()]
