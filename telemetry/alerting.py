"""What happens when a reconciliation finds a mismatch: an error in the log, a metric,
and, when ALERT_WEBHOOK_URL is set, a JSON POST to it."""
from __future__ import annotations

import json
import logging
from typing import Callable

import requests

from telemetry.metrics import RECONCILIATION_MISMATCHES

log = logging.getLogger("wallet.reconciliation")

#: How long the webhook gets to answer, in seconds; an alert must not hold up a worker.
WEBHOOK_TIMEOUT_S = 5


def reconciliation_alert(webhook_url: str) -> Callable[[dict], None]:
    def alert(run: dict) -> None:
        for mismatch in run["mismatches"]:
            RECONCILIATION_MISMATCHES.labels(mismatch["kind"]).inc()
        log.error("reconciliation %s found %d mismatches: %s", run["id"], run["mismatch_count"],
                  json.dumps(run["mismatches"][:20]))
        if not webhook_url:
            return
        body = {"event": "reconciliation.mismatched", "id": run["id"], "mismatch_count": run["mismatch_count"],
                "mismatches": run["mismatches"]}
        try:
            requests.post(webhook_url, json=body, timeout=WEBHOOK_TIMEOUT_S).raise_for_status()
        except requests.RequestException as error:
            log.error("reconciliation %s: the alert webhook failed: %s", run["id"], error)

    return alert
