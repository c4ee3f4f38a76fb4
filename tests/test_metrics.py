"""GET /metrics: HTTP latency per route, bulk-credit rows by outcome, chunk durations, queue
depth, retries, slow statements; and every process's series added up in multiprocess mode."""
from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import dramatiq
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

import actors.bulk_credit
from actors import redis_broker
from actors.bulk_credit import ChunkMessages
from storage.engine import make_engine
from tests.conftest import test_environ
from tests.test_bulk_pipeline import post_file, seed_users
from tests.test_logs import bulk_worker, http, run_worker, stub_broker  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent


def samples(client) -> dict[tuple, float]:
    """Every sample of GET /metrics, keyed by (name, sorted label pairs)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for sample in family.samples}


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def test_applying_a_bulk_credit_shows_its_rows_by_outcome_chunk_time_retries_and_request_latency(
        services, http, bulk_worker):
    # Given a file with 3 good rows, 1 row for a fault-injected user and 2 invalid rows
    chunk_queue, run = bulk_worker
    http.application.extensions["wallet.chunk_queue"] = chunk_queue
    users = seed_users(services, 4)
    content = "uuid,amount\n" + "".join(f"{user},1.00\n" for user in users) + f"nope,1.00\n{uuid.uuid4()},1.00\n"
    before = samples(http)

    # When it is uploaded, its chunk applied by a worker, and the failed row retried
    activity_id = post_file(http, content.encode()).get_json()["activity_id"]
    run(fail_user_ids={users[3]})
    assert http.post("/api/v1/wallet/bulk-credit/retry", json={"activity_id": activity_id}).status_code == 202
    run()
    after = samples(http)

    # Then /metrics counts every row once per outcome it reached
    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert {outcome: delta("wallet_bulk_rows_processed_total", outcome=outcome)
            for outcome in ("SUCCESS", "FAILED", "INVALID")} == {"SUCCESS": 4, "FAILED": 1, "INVALID": 2}
    assert delta("wallet_bulk_chunk_duration_seconds_count", result="applied") == 2
    assert delta("wallet_bulk_row_retries_total", source="endpoint") == 1
    upload_route = {"method": "POST", "route": "/api/v1/wallet/bulk-credit", "status": "202"}
    assert delta("wallet_http_request_duration_seconds_count", **upload_route) == 1
    assert delta("wallet_http_request_duration_seconds_bucket", le="+Inf", **upload_route) == 1
    routes = {dict(labels).get("route") for name, labels in after if name.startswith("wallet_http_request")}
    assert "/api/v1/wallet/bulk-credit/retry" in routes
    assert not any(activity_id in route for route in routes), "a raw path became a label"


def test_request_labels_stay_bounded_whatever_the_client_sends(client):
    client.open("/api/v1/users/x/../../../etc", method="BREW")
    client.get("/no/such/path/8c1f0f9e")

    routes = {(dict(labels)["method"], dict(labels)["route"]) for name, labels in samples(client)
              if name == "wallet_http_request_duration_seconds_count"}
    assert ("OTHER", "<unmatched>") in routes and ("GET", "<unmatched>") in routes
    assert not any("8c1f0f9e" in route or method == "BREW" for method, route in routes)


def test_queue_depth_per_dramatiq_queue_is_read_from_redis_when_scraped(settings, client):
    # Given 3 chunk messages ready and 1 delayed in the bulk-credit queue
    connection = redis.Redis.from_url(settings.redis_url)
    connection.flushdb()
    broker = redis_broker(settings.redis_url)
    try:
        ChunkMessages(broker).send([1, 2, 3])
        broker.enqueue(dramatiq.Message(queue_name=actors.bulk_credit.QUEUE_NAME, actor_name="apply_bulk_chunk",
                                        args=(4,), kwargs={}, options={}), delay=60_000)

        # When /metrics is scraped
        scraped = samples(client)
    finally:
        connection.flushdb()
        broker.close()

    # Then it shows each queue's depth by state
    depth = {(labels["queue"], labels["state"]): sample for (name, pairs), sample in scraped.items()
             if name == "wallet_dramatiq_queue_messages" for labels in [dict(pairs)]}
    assert depth == {("bulk_credit", "ready"): 3, ("bulk_credit", "delayed"): 1, ("bulk_credit", "dead"): 0,
                     ("reconciliation", "ready"): 0, ("reconciliation", "delayed"): 0,
                     ("reconciliation", "dead"): 0}


def test_a_statement_slower_than_slow_query_ms_is_counted_and_logged_without_its_parameters(
        settings, client, caplog):
    engine = make_engine(dataclasses.replace(settings, slow_query_ms=50), pool_size=1)
    before = samples(client)
    try:
        with caplog.at_level(logging.WARNING, logger="wallet.slow_query"), engine.connect() as connection:
            connection.execute(text("SELECT pg_sleep(0.08), :email AS email"), {"email": "dora@example.com"})
            connection.execute(text("SELECT :secret AS fast"), {"secret": "hunter2"})
    finally:
        engine.dispose()

    after = samples(client)
    assert value(after, "wallet_database_slow_statements_total", operation="select") - value(
        before, "wallet_database_slow_statements_total", operation="select") == 1
    [record] = [record for record in caplog.records if record.name == "wallet.slow_query"]
    assert "SELECT pg_sleep(0.08), %(email)s AS email" in record.getMessage()
    assert record.duration_ms >= 50
    assert "dora" not in record.getMessage() and "hunter2" not in caplog.text


def test_dramatiq_message_retries_and_give_ups_are_counted_per_actor(stub_broker, client):
    @dramatiq.actor(broker=stub_broker, queue_name="telemetry_failing", actor_name="always_fails", max_retries=1,
                    min_backoff=1, max_backoff=1)
    def always_fails():
        raise RuntimeError("on purpose")

    before = samples(client)
    always_fails.send()
    run_worker(stub_broker, "telemetry_failing", fail_fast=False)
    after = samples(client)

    assert value(after, "wallet_dramatiq_message_retries_total", actor="always_fails") - value(
        before, "wallet_dramatiq_message_retries_total", actor="always_fails") == 1
    assert value(after, "wallet_dramatiq_messages_failed_total", actor="always_fails") - value(
        before, "wallet_dramatiq_messages_failed_total", actor="always_fails") == 1


COUNT_IN_A_PROCESS = "from telemetry.metrics import count_rows; count_rows({outcome!r}, {rows})"
SCRAPE_THE_WEB = """
from api import create_app
print(create_app().test_client().get("/metrics").get_data(as_text=True))
"""


@pytest.mark.timeout(120)
def test_in_multiprocess_mode_the_web_shows_the_series_of_every_process(tmp_path):
    # Given two other processes (a worker's, the scheduler's, say) that counted rows
    environ = test_environ(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    for outcome, rows in (("SUCCESS", 5), ("SUCCESS", 7), ("FAILED", 2)):
        subprocess.run([sys.executable, "-c", COUNT_IN_A_PROCESS.format(outcome=outcome, rows=rows)],
                       cwd=ROOT, env=environ, check=True, timeout=60)

    # When the web process answers /metrics
    scraped = subprocess.run([sys.executable, "-c", SCRAPE_THE_WEB], cwd=ROOT, env=environ, check=True,
                             capture_output=True, text=True, timeout=60).stdout

    # Then the series of every process are added up
    found = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
             for family in text_string_to_metric_families(scraped) for sample in family.samples}
    assert value(found, "wallet_bulk_rows_processed_total", outcome="SUCCESS") == 12
    assert value(found, "wallet_bulk_rows_processed_total", outcome="FAILED") == 2
    assert len(list(tmp_path.glob("counter_*.db"))) >= 3
