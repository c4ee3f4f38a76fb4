"""The reconciliation actor: runs one queued reconciliation by id."""
from __future__ import annotations

import dramatiq

from bootstrap import process_services as services
from pipeline import reconciliation
from pipeline.errors import NotFound
from telemetry.alerting import reconciliation_alert

QUEUE_NAME = "reconciliation"
#: A run is cheap to repeat, and the scheduler starts a new one every interval anyway.
MAX_RETRIES = 2
MIN_BACKOFF_MS = 5_000
MAX_BACKOFF_MS = 60_000
#: A full pass over 1,000,000 wallets takes seconds; this bounds a stuck one, in milliseconds.
TIME_LIMIT_MS = 600_000


@dramatiq.actor(queue_name=QUEUE_NAME, max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS,
                max_backoff=MAX_BACKOFF_MS, time_limit=TIME_LIMIT_MS, throws=(NotFound,))
def reconcile(reconciliation_id: str) -> None:
    alert = reconciliation_alert(services().settings.alert_webhook_url)
    reconciliation.run(services().uow(), reconciliation_id, alert)
