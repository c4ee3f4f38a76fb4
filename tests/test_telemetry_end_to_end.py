"""Telemetry with a real `dramatiq actors` worker process on real Redis and PostgreSQL: the
web's /metrics shows the worker's series, and the worker logs JSON under the upload's id."""
from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from tests.test_bulk_end_to_end import wait_settled
from tests.test_bulk_pipeline import post_file, seed_users


def scraped(http) -> dict[tuple, float]:
    text = http.get("/metrics").get_data(as_text=True)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_web_shows_a_worker_process_s_rows_and_the_worker_logs_under_the_upload_s_request_id(
        services, http, workers, tmp_path, monkeypatch):
    # Given a worker process writing its samples to a multiprocess folder, which the web reads
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    [worker] = workers(1, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                       BULK_CREDIT_FAIL_USER_IDS="00000000-0000-4000-8000-000000000000")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    users = seed_users(services, 20)
    content = "uuid,amount\n" + "".join(f"{user},3.00\n" for user in users)

    # When a file is uploaded with a request id and the worker settles it
    accepted = post_file(http, content.encode(), **{"X-Request-Id": "e2e-upload-77"})
    settled = wait_settled(http, accepted.get_json()["activity_id"], [worker])

    # Then /metrics (every process's files) shows the worker's rows and chunk time
    assert settled["status"] == "COMPLETED"
    samples = scraped(http)
    assert samples[("wallet_bulk_rows_processed_total", (("outcome", "SUCCESS"),))] == 20
    assert samples[("wallet_bulk_chunk_duration_seconds_count", (("result", "applied"),))] == 1
    assert samples[("wallet_dramatiq_queue_messages", (("queue", "bulk_credit"), ("state", "ready")))] == 0
    # And the worker's JSON line about the chunk carries the upload's request id
    lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
    chunk_lines = [line for line in lines if line["logger"] == "actors.bulk_credit"]
    assert [(line["level"], line["request_id"]) for line in chunk_lines] == [("info", "e2e-upload-77")]
    assert "20 credited, 0 failed" in chunk_lines[0]["message"]
