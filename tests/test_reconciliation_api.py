"""Reconciliation over HTTP, run by a real `dramatiq` worker process on real Redis."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from pipeline.users import create_api_key
from tests.test_reconciliation import funded_user  # noqa: F401  (fixture)

#: How long a queued run may take to finish, in seconds.
FINISH_S = 60


def finished(http, run_id: str) -> dict:
    deadline = time.monotonic() + FINISH_S
    while (body := http.get(f"/api/v1/reconciliations/{run_id}").json)["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    return body


def test_a_reconciliation_started_over_http_is_run_by_a_worker_and_listed_newest_first(http, workers, funded_user, engine):
    workers(1)
    first = http.post("/api/v1/reconciliations", json={"full": True})
    assert first.status_code == 202
    assert first.json["status"] == "queued"
    clean = finished(http, first.json["id"])
    assert (clean["status"], clean["mismatches"], clean["wallets_checked"]) == ("clean", [], 2)
    assert clean["started_at"] <= clean["finished_at"]

    with engine.begin() as connection:
        connection.execute(text("UPDATE wallets SET balance = balance + 5 WHERE user_id = :u"), {"u": funded_user.id})
    second = http.post("/api/v1/reconciliations", json={})
    mismatched = finished(http, second.json["id"])

    assert mismatched["status"] == "mismatched"
    assert {(m["kind"], m["expected"], m["actual"]) for m in mismatched["mismatches"]} >= {
        ("balance_differs_from_postings", "50.00", "50.05")}
    listed = http.get("/api/v1/reconciliations?limit=1").json
    assert [run["id"] for run in listed["data"]] == [second.json["id"]]
    older = http.get(f"/api/v1/reconciliations?limit=1&cursor={listed['next_cursor']}").json
    assert [run["id"] for run in older["data"]] == [first.json["id"]]
    assert older["next_cursor"] is None


@pytest.mark.parametrize("path, status, code", [
    ("/api/v1/reconciliations/8c1f0f9e-8b1a-4c55-9a57-5e0bd1d6e0a1", 404, "not_found"),
    ("/api/v1/reconciliations/not-a-uuid", 422, "validation_failed"),
    ("/api/v1/reconciliations?limit=0", 422, "validation_failed"),
])
def test_unknown_or_malformed_reconciliation_requests_are_problems(http, path, status, code):
    response = http.get(path)
    assert (response.status_code, response.mimetype, response.json["code"]) == (status, "application/problem+json", code)


def test_a_user_scoped_key_may_not_start_or_read_reconciliations(client, services, funded_user):
    token = create_api_key(services.uow(), f"user:{funded_user.id}")
    response = client.post("/api/v1/reconciliations", json={}, headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.json["code"]) == (403, "forbidden")


def test_a_run_whose_message_cannot_be_sent_is_a_503_and_leaves_no_run_queued(http, engine, monkeypatch):
    import redis

    from actors.reconciliation import reconcile

    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("Redis is down")

    monkeypatch.setattr(reconcile, "send", unreachable)

    response = http.post("/api/v1/reconciliations", json={"full": True})

    assert (response.status_code, response.json["code"]) == (503, "temporarily_unavailable")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM reconciliations").scalar_one() == 0
