"""The Prometheus metrics of every process, and the text that /metrics answers with.

Metric objects are made at import, as prometheus-client expects; with
PROMETHEUS_MULTIPROC_DIR set when the process starts, their samples go to files in that
folder (one set per process id) and `scrape()` adds up every process's files, so the web
shows the workers' and the scheduler's series too. The folder must be emptied when the
processes start (scripts/processes.sh does). Without the variable the default registry
holds this process's samples only.

Labels are bounded sets: routes are URL rules (never raw paths), outcomes and sources are
fixed words, queues are the declared ones, currencies the supported ones.

`initialise()` gives every known label value its series at 0 when a process starts, so a
counter that may stay at zero for weeks (mismatches, chunks failed) is exported from the
start, and `increase()` in an alert sees its first step from 0 to 1.

The gauges of the system's state (oldest pending chunk, outbox backlog, scheduler leader,
funding balances...) are not here: the web reads them from PostgreSQL when /metrics is
scraped (telemetry/state.py), so they are one value whatever the number of processes.
"""
from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client import multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from pipeline import reconciliation

# The `*_created` timestamps of every counter and histogram double the series and tell an
# operator nothing that process start times do not.
disable_created_metrics()

#: Seconds; from a cached read (about 1 ms) to a 1 MB request at its slowest.
HTTP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds; a 5,000-row chunk takes a fraction of a second, TIME_LIMIT_MS bounds it at 300 s.
CHUNK_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

HTTP_REQUEST_DURATION = Histogram(
    "wallet_http_request_duration_seconds", "HTTP request latency by method, URL rule and status, in seconds.",
    ["method", "route", "status"], buckets=HTTP_BUCKETS_S)
BULK_ROWS_PROCESSED = Counter(
    "wallet_bulk_rows_processed", "Bulk-credit rows by outcome: SUCCESS and FAILED when a chunk is applied,"
    " INVALID at upload.", ["outcome"])
BULK_CHUNK_DURATION = Histogram(
    "wallet_bulk_chunk_duration_seconds", "Time to apply one bulk-credit chunk message, by result"
    " (applied, skipped when already done, error), in seconds.", ["result"], buckets=CHUNK_BUCKETS_S)
BULK_ROW_RETRIES = Counter(
    "wallet_bulk_row_retries", "FAILED rows put back to PENDING, by who asked: the retry endpoint, the"
    " dashboard or the scheduler's backoff sweep.", ["source"])
BULK_ROWS_EXHAUSTED = Counter(
    "wallet_bulk_rows_retries_exhausted", "Rows that failed RETRY_MAX_ATTEMPTS times and stay FAILED.")
BULK_CHUNKS_FAILED = Counter(
    "wallet_bulk_chunks_failed", "Chunks given up on, their rows FAILED with chunk_failed: after CHUNK_ERRORS_MAX"
    " errors, or CHUNK_STARTS_MAX starts that never finished.")
BULK_CHUNKS_RESENT = Counter(
    "wallet_bulk_chunks_resent", "Chunks whose lease expired (lost message) and which the scheduler sent again.")
MESSAGE_RETRIES = Counter(
    "wallet_dramatiq_message_retries", "Dramatiq messages that raised and were scheduled for a retry, by actor.",
    ["actor"])
MESSAGES_FAILED = Counter(
    "wallet_dramatiq_messages_failed", "Dramatiq messages given up on (retries exhausted or an error the actor"
    " throws), by actor.", ["actor"])
EVENTS_PUBLISHED = Counter(
    "wallet_events_published", "Events the outbox publisher appended to the Redis Streams; an event published"
    " again after a publisher crash counts again.")
WEBHOOK_ATTEMPTS = Counter(
    "wallet_webhook_attempts", "Webhook delivery attempts, by the delivery's state after them: succeeded,"
    " pending (to be tried again) or failed (given up).", ["outcome"])
WEBHOOK_ATTEMPT_DURATION = Histogram(
    "wallet_webhook_attempt_duration_seconds", "Time of one webhook delivery attempt, in seconds.",
    buckets=HTTP_BUCKETS_S)
SLOW_STATEMENTS = Counter(
    "wallet_database_slow_statements", "SQL statements that took SLOW_QUERY_MS or longer, by first keyword.",
    ["operation"])

RECONCILIATION_MISMATCHES = Counter(
    "wallet_reconciliation_mismatches", "Mismatches found by reconciliation runs (at most the stored ones per run),"
    " by kind.", ["kind"])
BULK_CREDITED = Counter(
    "wallet_bulk_credited_minor_units", "Money credited to user wallets by bulk-credit chunks, by currency, in minor"
    " units of that currency (cents for SGD, yen for JPY).", ["currency"])

PROCESS_STARTS = Counter(
    "wallet_process_starts", "Processes started, by kind: web (each app made, flask CLI commands included),"
    " worker, scheduler; shows which processes a multiprocess scrape adds up.", ["kind"])

#: The kinds of process that count their starts.
PROCESS_KINDS = ("web", "worker", "scheduler")
#: Rows an outcome may be counted under, as the API names them.
ROW_OUTCOMES = ("SUCCESS", "FAILED", "INVALID")
#: Who may put FAILED rows back to PENDING.
RETRY_SOURCES = ("endpoint", "dashboard", "scheduler")
#: How a chunk message ends (actors/bulk_credit.py).
CHUNK_RESULTS = ("applied", "skipped", "error")
#: The actors whose messages are counted (actors/); others get their series when first counted.
ACTOR_NAMES = ("apply_bulk_chunk", "reconcile")
#: The statements slow_queries counts most; others get their series when first counted.
STATEMENT_OPERATIONS = ("select", "insert", "update", "delete")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def count_rows(outcome: str, rows: int) -> None:
    assert outcome in ROW_OUTCOMES, outcome
    assert rows >= 0, rows
    if rows:
        BULK_ROWS_PROCESSED.labels(outcome).inc(rows)


def count_credited(amounts_minor: dict[str, int]) -> None:
    """Adds a chunk's credits, {currency: minor units}, to wallet_bulk_credited_minor_units."""
    for code, amount in amounts_minor.items():
        assert amount >= 0, (code, amount)
        if amount:
            BULK_CREDITED.labels(code).inc(amount)


def initialise(currencies=()) -> None:
    """Makes the series of every known label value (at 0 until counted) in this process.

    Called once at each process's start (web app, worker broker, scheduler) with the
    supported currencies. Idempotent.
    """
    families = ((BULK_ROWS_PROCESSED, ROW_OUTCOMES), (BULK_ROW_RETRIES, RETRY_SOURCES),
                (BULK_CHUNK_DURATION, CHUNK_RESULTS), (MESSAGE_RETRIES, ACTOR_NAMES), (MESSAGES_FAILED, ACTOR_NAMES),
                (SLOW_STATEMENTS, STATEMENT_OPERATIONS), (RECONCILIATION_MISMATCHES, reconciliation.MISMATCH_KINDS),
                (PROCESS_STARTS, PROCESS_KINDS), (BULK_CREDITED, tuple(sorted(currencies))))
    for family, values in families:
        for value in values:
            family.labels(value)


def process_started(kind: str) -> None:
    assert kind in PROCESS_KINDS, kind
    PROCESS_STARTS.labels(kind).inc()


def scrape(*extra: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition text of every process (or of this one), then of `extra` registries.

    Always the plain text format 0.0.4, which every Prometheus version reads, and in which
    two registries' outputs may simply be concatenated (OpenMetrics ends with one `# EOF`).
    """
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    text = generate_latest(registry) + b"".join(generate_latest(more) for more in extra)
    return text, CONTENT_TYPE_PLAIN_0_0_4
