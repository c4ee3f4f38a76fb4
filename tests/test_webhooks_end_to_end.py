"""Webhooks through a real receiver: the API makes activities go through every kind of ending, a
real `dramatiq` worker and the real scheduler deliver the events to a local HTTP server that
fails its first two requests, and every delivery arrives, signed, in order for each activity."""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import sys
import time
import uuid
from collections import defaultdict

import pytest
from standardwebhooks import Webhook

from pipeline.users import create_api_key
from pipeline.webhooks import EVENT_TYPES
from tests.conftest import test_environ
from tests.processes import Process
from tests.test_bulk_pipeline import query, seed_users
from tests.webhook_receiver import Receiver

BULK = "/api/v1/wallet/bulk-credit"
#: How long the whole flow may take to settle and be delivered, in seconds (slow shared machines).
SETTLE_S_MAX = 180


def environment(fail_user: str) -> dict[str, str]:
    return {"WEBHOOK_ALLOW_PRIVATE_URLS": "true", "WEBHOOK_RETRY_BASE_DELAY_S": "0.5",
            "WEBHOOK_RETRY_DELAY_MAX_S": "2", "BULK_CREDIT_FAIL_USER_IDS": fail_user, "RETRY_MAX_ATTEMPTS": "1",
            "BULK_CREDIT_APPROVAL": "SGD:50.00"}


@pytest.fixture
def stack(services, app, workers, tmp_path):
    """The in-process API (sending chunks to the real Redis), a worker and the scheduler, with the
    settings of `environment`."""
    fail_user = str(uuid.uuid4())
    environ = environment(fail_user)
    configured = copy.copy(services)
    configured.settings = dataclasses.replace(
        services.settings, webhook_allow_private_urls=True, bulk_credit_approval="SGD:50.00",
        bulk_credit_fail_user_ids=frozenset({fail_user}), retry_max_attempts=1)
    app.extensions["wallet"] = configured
    workers(1, **environ)
    scheduler = Process(tmp_path / "scheduler.log", [sys.executable, "-m", "jobs"], test_environ(**environ))
    yield configured, fail_user
    scheduler.stop()


def signed_in(app, services, scope):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_api_key(services.uow(), scope)}"
    return client


def upload(client, rows: list[tuple[str, str]], **fields) -> str:
    content = "uuid,amount\n" + "".join(f"{user},{amount}\n" for user, amount in rows)
    answer = client.post(BULK, data={"file": (io.BytesIO(content.encode()), "pay.csv"), **fields},
                         content_type="multipart/form-data")
    assert answer.status_code == 202, answer.json
    return answer.json["activity_id"]


def test_every_event_reaches_a_receiver_that_fails_twice_signed_and_in_order_per_activity(app, stack, engine):
    services, fail_user = stack
    admin, operator, approver = (signed_in(app, services, scope) for scope in ("admin", "operator", "approver"))
    users = seed_users(services, 3)
    with services.uow() as uow:
        uow.bulk.copy_users([(fail_user, "Fails", f"{fail_user}@example.test")])
        uow.commit()
    for account in ("small", "later"):
        assert admin.post(f"/api/v1/funding-accounts/{account}/top-up", json={"amount": "1.00", "currency": "SGD"},
                          headers={"Idempotency-Key": f"{account}-1"}).status_code == 201

    with Receiver(fail_first=2) as receiver:
        hook = admin.post("/api/v1/webhooks", json={"url": receiver.url, "events": list(EVENT_TYPES)}).json
        partly = upload(operator, [(users[0], "30.00"), (users[1], "30.00"), (fail_user, "30.00")])
        completed = upload(operator, [(users[0], "25.00"), (users[2], "25.00")])
        rejected = upload(operator, [(users[1], "60.00")])
        cancelled = upload(operator, [(users[2], "70.00")])
        unfunded = upload(operator, [(users[0], "2.00")], funding_account="small")
        failed = upload(operator, [(fail_user, "1.00")])
        released = upload(operator, [(users[1], "2.00")], funding_account="later")
        assert admin.post("/api/v1/funding-accounts/later/top-up", json={"amount": "5.00", "currency": "SGD"},
                          headers={"Idempotency-Key": "later-2"}).status_code == 201
        for activity_id in (partly, completed):
            assert approver.post(f"{BULK}/{activity_id}/approve").status_code == 202
        assert approver.post(f"{BULK}/{rejected}/reject", json={"reason": "wrong file"}).status_code == 200
        for activity_id in (cancelled, unfunded):
            assert admin.post(f"{BULK}/{activity_id}/cancel", json={"reason": "not now"}).status_code == 202
        expected = {
            partly: ["activity.awaiting_approval", "activity.partially_completed"],
            completed: ["activity.awaiting_approval", "activity.completed"],
            rejected: ["activity.awaiting_approval", "activity.rejected"],
            cancelled: ["activity.awaiting_approval", "activity.cancelled"],
            unfunded: ["activity.awaiting_funds", "activity.cancelled"],
            failed: ["activity.failed"],
            released: ["activity.awaiting_funds", "activity.released", "activity.completed"],
        }
        deadline = time.monotonic() + SETTLE_S_MAX
        while len({r.headers["webhook-id"] for r in receiver.accepted()}) < sum(map(len, expected.values())):
            assert time.monotonic() < deadline, f"deliveries missing: {len(receiver.accepted())} arrived"
            time.sleep(0.2)
        time.sleep(1)  # anything more (it must not come) would arrive now

    assert [r.answered for r in receiver.received[:2]] == [500, 500]
    arrived, seen = defaultdict(list), set()
    for request in receiver.accepted():
        event = Webhook(hook["secret"]).verify(request.body, request.headers)  # raises unless signed by us
        if request.headers["webhook-id"] in seen:
            continue  # at least once: a duplicate is dropped by its webhook-id
        seen.add(request.headers["webhook-id"])
        arrived[event["data"]["activity_id"]].append(event["type"])
    assert dict(arrived) == expected
    deliveries = admin.get(f"/api/v1/webhooks/{hook['id']}/deliveries?limit=100").json["data"]
    assert {d["status"] for d in deliveries} == {"SUCCEEDED"} and len(deliveries) == 14
    assert sum(d["attempts"] for d in deliveries) == 14 + 2  # the two refused attempts were retried
    assert query(engine, "SELECT count(*) FROM webhook_attempts") == [(16,)]
    payload = json.loads(next(r.body for r in receiver.accepted()
                              if json.loads(r.body)["type"] == "activity.partially_completed"))
    assert payload["data"]["successful_records"] == 2 and payload["data"]["failed_records"] == 1
    release = next(json.loads(r.body)["data"] for r in receiver.accepted()
                   if json.loads(r.body)["type"] == "activity.released")
    assert (release["activity_id"], release["previous_status"], release["status"], release["reason"]) == (
        released, "AWAITING_FUNDS", "UPLOADED", "funds reserved")
