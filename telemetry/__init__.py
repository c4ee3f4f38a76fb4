"""What the operators see: structured logs, Prometheus metrics, and the request id that ties them together.

Design overview.

- `logs`: every process (web, worker, scheduler) writes JSON lines to stderr, configured once at
  its entry point. A record carries the request id of the work it belongs to, read from a
  context variable when the record is made, so every handler (pytest's too) sees it. Emails
  are masked and bearer tokens and API keys redacted in every line, whatever logged them.
- `messages`: a Dramatiq middleware copies the request id into each message it enqueues and
  back into the context while a worker runs that message; it also counts message retries.
- `metrics`: the metric objects, and the text a scrape returns. With PROMETHEUS_MULTIPROC_DIR
  set (scripts/processes.sh sets it for web, worker and scheduler), each process writes its
  samples there and the web's /metrics adds them all up; without it (tests, one process) the
  default registry answers.
- `queues`: the depth of each Dramatiq queue, read from Redis when /metrics is scraped.
- `state`: the system's state (oldest pending chunk and due retry, last clean reconciliation,
  outbox backlog, scheduler leader, funding balances), read from PostgreSQL when the web's
  /metrics is scraped (storage/monitoring.py).
- `exporter`: a /metrics endpoint of their own for the worker and the scheduler when
  METRICS_PORT is set, for containers that are scraped one by one (docker-compose.yml).
- `slow_queries`: statements slower than SLOW_QUERY_MS, counted and logged without parameters.
- `alerting`: what a reconciliation that finds mismatches does: an error line, a metric, and a
  JSON POST to ALERT_WEBHOOK_URL when it is set.

Nothing here imports Flask, so workers and the scheduler use it as they are.
"""
