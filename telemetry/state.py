"""Gauges of the system's state, read from PostgreSQL when /metrics is scraped.

They describe the database, not a process: the web reads them at scrape time
(storage/monitoring.py, a few index probes within STATE_STATEMENT_TIMEOUT_MS), so they
are one value however many workers run, need no multiprocess gauge mode, and are as fresh
as the scrape. When PostgreSQL cannot answer, the scrape still succeeds: these gauges are
left out and `wallet_state_up` reads 0, which an alert watches.
"""
from __future__ import annotations

import logging
import time

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from storage.monitoring import OUTBOX_ROWS_COUNTED_MAX, State, read_state

log = logging.getLogger(__name__)


def families(state: State) -> list[GaugeMetricFamily]:
    """The metric families of one reading of the state."""
    gauges = [
        GaugeMetricFamily("wallet_bulk_chunk_oldest_pending_age_seconds",
                          "Seconds since the oldest PENDING bulk-credit chunk became pending (released or"
                          " reopened for a retry); 0 when none is pending.", value=state.oldest_pending_chunk_age_s),
        GaugeMetricFamily("wallet_bulk_retry_oldest_due_age_seconds",
                          "Seconds since the oldest FAILED row due for an automatic retry became due; 0 when none"
                          " is due. The scheduler's sweep keeps it below a few sweep intervals.",
                          value=state.oldest_due_retry_age_s),
        GaugeMetricFamily("wallet_event_outbox_rows",
                          f"Outbox rows not yet published to the event streams, counted up to"
                          f" {OUTBOX_ROWS_COUNTED_MAX} (a larger backlog reads as {OUTBOX_ROWS_COUNTED_MAX}).",
                          value=state.outbox_rows),
        GaugeMetricFamily("wallet_scheduler_leader_present",
                          "1 while a scheduler instance holds an unexpired leadership lease, else 0.",
                          value=1 if state.leader_present else 0),
    ]
    if state.last_clean_reconciliation_age_s is not None:
        gauges.append(GaugeMetricFamily(
            "wallet_reconciliation_last_clean_age_seconds",
            "Seconds since the newest clean reconciliation finished; absent until one has been clean.",
            value=state.last_clean_reconciliation_age_s))
    balances = GaugeMetricFamily(
        "wallet_funding_account_balance_minor_units",
        "Balance of each funding account in each currency, in minor units of that currency (reserved money"
        " excluded: it has left the account).", labels=["account", "currency"])
    for account, currency, balance in state.funding_balances:
        balances.add_metric([account, currency], balance)
    activities = GaugeMetricFamily(
        "wallet_bulk_activities_open", "Bulk-credit activities in each status before their rows settle (UPLOADED,"
        " AWAITING_APPROVAL, SCHEDULED, AWAITING_FUNDS, PROCESSING).", labels=["status"])
    for status, count in state.open_activities.items():
        activities.add_metric([status], count)
    return [*gauges, balances, activities]


class StateCollector(Collector):
    """Collects `families(read_state(engine))`, plus `wallet_state_up` and the read's duration."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        started_s = time.perf_counter()
        try:
            state = read_state(self.engine)
        except Exception as error:  # a scrape must still answer when PostgreSQL does not
            log.warning("state gauges unavailable: %s: %s", type(error).__name__,
                        str(error).splitlines()[0] if str(error) else "")
            state = None
        if state is not None:
            yield from families(state)
            yield GaugeMetricFamily("wallet_state_read_duration_seconds",
                                    "How long reading the state gauges from PostgreSQL took, in seconds.",
                                    value=time.perf_counter() - started_s)
        yield GaugeMetricFamily("wallet_state_up", "1 when the state gauges were read from PostgreSQL for this"
                                " scrape, 0 when it could not answer in time.", value=0 if state is None else 1)

    def describe(self):
        return []  # made on collect; describing nothing keeps registration free of I/O
