"""What an activity not yet released would take: the preview of a stored file.

An activity awaiting approval, scheduled, or waiting for funds has reserved nothing yet:
every one of its valid rows is still PENDING. Its review is what the preview of its file
said (pipeline/bulk/preview.py), read again now: the total per currency of the rows left
to pay, and the funding verdict against what its funding account holds at this moment
(which changes with top-ups and other releases). Approvers read it before they decide;
the dashboard shows it with the approve and reject buttons, and what is missing while the
activity waits for funds.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.bulk.ports import Activity
from pipeline.bulk.preview import Funding, Total
from pipeline.errors import NotFound


@dataclass(frozen=True)
class Review:
    activity: Activity
    #: Rows still to pay and their amount, per currency (every valid row, before release).
    totals: list[Total]
    #: Per currency of `totals`: what is required and what the funding account holds now.
    funding: list[Funding]

    @property
    def shortfalls(self) -> list[Funding]:
        """The currencies whose funding account holds less than the rows to pay."""
        return [verdict for verdict in self.funding if not verdict.sufficient]


def review(uow, activity_id: str) -> Review:
    """The activity with the totals of its PENDING rows and the funding verdict, read in
    one transaction. Raises NotFound."""
    with uow:
        found = uow.bulk.activity(activity_id)
        if found is None:
            raise NotFound(f"no bulk-credit activity {activity_id}")
        totals = [Total(*total) for total in uow.bulk.valid_totals(activity_id)]
        held = {row["currency"]: row["balance"] for row in uow.funding.balances(found.funding_account)}
    funding = [Funding(total.currency, total.amount, held.get(total.currency, 0)) for total in totals]
    return Review(found, totals, funding)
