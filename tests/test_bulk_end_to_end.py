"""Bulk credit end to end: the HTTP API in this process, real `dramatiq actors` worker
processes, real Redis and PostgreSQL. A missing server fails these tests."""
from __future__ import annotations

import time
import uuid

import pytest

from actors import redis_broker
from actors.bulk_credit import ChunkMessages
from tests.conftest import assert_ledger_invariants
from tests.processes import Worker
from tests.test_bulk_pipeline import balances, funding_total, post_file, query, seed_users

#: How long an activity may take to settle, in seconds.
SETTLE_S = 120


def activity(http, activity_id) -> dict:
    response = http.get(f"/api/v1/wallet/bulk-credit/{activity_id}")
    assert response.status_code == 200
    return response.json


def wait_settled(http, activity_id, workers_started=()) -> dict:
    deadline = time.monotonic() + SETTLE_S
    while (current := activity(http, activity_id))["status"] not in ("COMPLETED", "PARTIALLY_COMPLETED", "FAILED"):
        logs = "\n".join(worker.tail() for worker in workers_started)
        assert time.monotonic() < deadline, f"not settled: {current}\n{logs}"
        time.sleep(0.2)
    return current


def counters(body: dict) -> tuple:
    return tuple(body[key] for key in ("total_records", "valid_records", "invalid_records", "successful_records",
                                       "failed_records", "pending_records"))


def test_a_10000_row_file_with_invalid_rows_and_failing_users_ends_partially_completed_then_completed_on_retry(
        services, http, workers):
    users = seed_users(services, 9_970)
    faulty = users[::400]  # 25 users
    amounts = {user: (n % 500 + 1) * 100 + 25 for n, user in enumerate(users)}
    lines = [f"{user},{amounts[user] // 100}.{amounts[user] % 100:02d}" for user in users]
    lines[100:100] = [f"not-a-uuid-{n},1.00" for n in range(10)]
    lines[5_000:5_000] = [f"{users[n]},-{n}.00" for n in range(10)]
    lines[9_000:9_000] = [f"{uuid.uuid4()},1.00" for _ in range(10)]
    content = ("uuid,amount\n" + "\n".join(lines) + "\n").encode()
    started = workers(2, BULK_CREDIT_FAIL_USER_IDS=",".join(faulty))

    accepted = post_file(http, content)
    assert (accepted.status_code, accepted.json["total_records"]) == (202, 10_000)
    first = wait_settled(http, accepted.json["activity_id"], started)

    assert first["status"] == "PARTIALLY_COMPLETED"
    assert counters(first) == (10_000, 9_970, 30, 9_945, 25, 0)
    failed = http.get(f"/api/v1/wallet/bulk-credit/{first['activity_id']}/rows?status=FAILED&limit=100").json["data"]
    assert sorted(row["user_id"] for row in failed) == sorted(faulty)
    assert {row["error_code"] for row in failed} == {"injected_fault"}

    for worker in started:
        worker.stop()
    restarted = workers(2)  # the fault is cleared
    retried = http.post("/api/v1/wallet/bulk-credit/retry", json={"activity_id": first["activity_id"]})
    assert (retried.status_code, retried.json["retried_records"]) == (202, 25)
    second = wait_settled(http, first["activity_id"], restarted)

    assert second["status"] == "COMPLETED"
    assert counters(second) == (10_000, 9_970, 30, 9_970, 0, 0)
    assert balances(services.engine) == amounts
    assert funding_total(services.engine) == -sum(amounts.values())
    assert_ledger_invariants(services.engine)


@pytest.mark.parametrize("rows", [40_000, pytest.param(100_000, marks=[pytest.mark.chaos, pytest.mark.chaos_full])])
def test_a_worker_killed_mid_run_loses_nothing_once_its_chunks_are_sent_again(rows, services, settings, http,
                                                                              workers):
    """40,000 rows (8 chunks) in `make test`; the 100,000-row form with `make chaos`."""
    users = seed_users(services, rows)
    content = ("uuid,amount\n" + "".join(f"{user},100.00\n" for user in users)).encode()
    doomed, survivor = workers(2)
    activity_id = post_file(http, content).json["activity_id"]

    deadline = time.monotonic() + SETTLE_S
    while activity(http, activity_id)["successful_records"] < rows * 0.15:  # both workers still mid-file
        assert time.monotonic() < deadline, doomed.tail()
        time.sleep(0.05)
    doomed.kill_hard()
    stalled = wait_stalled(http, activity_id, survivor)
    assert stalled["pending_records"] > 0, "the killed worker held no chunk; nothing was lost to recover"

    fresh = workers(1)
    lost = [chunk_id for (chunk_id,) in query(services.engine, "SELECT id FROM bulk_chunks WHERE state = 'PENDING'"
                                                               " ORDER BY id")]
    ChunkMessages(redis_broker(settings.redis_url)).send(lost)
    settled = wait_settled(http, activity_id, [survivor, *fresh])

    assert settled["status"] == "COMPLETED"
    assert counters(settled) == (rows, rows, 0, rows, 0, 0)
    assert query(services.engine, "SELECT count(*), count(DISTINCT bulk_row_id) FROM postings"
                                  " WHERE bulk_row_id IS NOT NULL")[0] == (rows, rows)
    credited = balances(services.engine)
    assert len(credited) == rows and set(credited.values()) == {10_000}
    assert funding_total(services.engine) == -10_000 * rows
    assert_ledger_invariants(services.engine)


def wait_stalled(http, activity_id, survivor: Worker, quiet_s: float = 3.0) -> dict:
    """Waits until the surviving worker has nothing left to do: no progress for `quiet_s`."""
    deadline = time.monotonic() + SETTLE_S
    last, since = None, time.monotonic()
    while True:
        current = activity(http, activity_id)
        if current["status"] == "COMPLETED":
            return current
        if current["successful_records"] != last:
            last, since = current["successful_records"], time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return current
        assert time.monotonic() < deadline, survivor.tail()
        time.sleep(0.2)
