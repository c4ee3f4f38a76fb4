"""Maker-checker and schedule: a file that needs approval waits for a key other than the
uploader's; a rejected file moves nothing; a scheduled file is released when due; and
approve, reject and cancel raced from separate processes let exactly one decide."""
from __future__ import annotations

import copy
import dataclasses
import io
import multiprocessing
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from pipeline.bulk import release
from pipeline.users import create_api_key
from tests.conftest import assert_ledger_invariants, test_environ
from tests.racing_actions import act
from tests.test_bulk_pipeline import RecordingQueue, apply_all, balances, fund, query, seed_users
from tests.test_funding import account_balance, reserved

URL = "/api/v1/wallet/bulk-credit"


def client_for(app, services, queue, scope: str, approval: str = "always"):
    """A test client signed in with a new key of `scope`, on an app that needs `approval`."""
    configured = copy.copy(services)  # the same engine, another approval rule
    configured.settings = dataclasses.replace(services.settings, bulk_credit_approval=approval)
    app.extensions["wallet"] = configured
    app.extensions["wallet.chunk_queue"] = queue
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_api_key(services.uow(), scope)}"
    return client


def upload_file(client, content: str, **fields):
    return client.post(URL, data={"file": (io.BytesIO(content.encode()), "payouts.csv"), **fields},
                       content_type="multipart/form-data")


@pytest.fixture
def keys(app, services, queue, clean_database):
    return {scope: client_for(app, services, queue, scope) for scope in ("operator", "approver", "admin")}


def test_a_file_that_needs_approval_waits_and_its_uploader_cannot_approve_it(services, keys, queue, engine):
    users = seed_users(services, 2)
    maker, checker = keys["operator"], keys["approver"]
    activity_id = upload_file(maker, f"uuid,amount\n{users[0]},1.00\n{users[1]},2.00\n").json["activity_id"]

    waiting = checker.get(f"{URL}/{activity_id}").json
    assert (waiting["status"], waiting["final"], queue.take()) == ("AWAITING_APPROVAL", False, [])
    assert reserved(engine, activity_id) == 0
    own = keys["admin"]  # an admin may approve, but not a file it uploaded itself
    own_id = upload_file(own, f"uuid,amount\n{users[0]},5.00\n").json["activity_id"]
    refused = own.post(f"{URL}/{own_id}/approve")
    assert (refused.status_code, refused.json["code"]) == (403, "same_approver")
    assert maker.post(f"{URL}/{activity_id}/approve").status_code == 403  # an operator is no approver

    approved = checker.post(f"{URL}/{activity_id}/approve")
    assert (approved.status_code, approved.json["status"]) == (202, "UPLOADED")
    assert approved.json["approved_by"] != approved.json["uploaded_by"] and reserved(engine, activity_id) == 300
    apply_all(services, services.settings, queue.take())
    assert checker.get(f"{URL}/{activity_id}").json["status"] == "COMPLETED"
    assert balances(engine) == {users[0]: 100, users[1]: 200}
    history = checker.get(f"{URL}/{activity_id}/history").json["data"]
    assert [(h["from_status"], h["to_status"], h["actor"]["type"]) for h in history][:3] == [
        (None, "UPLOADED", "api_key"), ("UPLOADED", "AWAITING_APPROVAL", "api_key"),
        ("AWAITING_APPROVAL", "UPLOADED", "api_key")]
    assert history[2]["actor"]["api_key_id"] == approved.json["approved_by"]
    assert checker.post(f"{URL}/{activity_id}/approve").json["code"] == "invalid_state"
    assert checker.post(URL, data={}, content_type="multipart/form-data").status_code == 403  # reads, no upload


def test_a_rejected_file_moves_nothing_and_ends_final(services, keys, engine):
    [user] = seed_users(services, 1)
    activity_id = upload_file(keys["operator"], f"uuid,amount\n{user},1.00\n").json["activity_id"]
    before = account_balance(engine)

    assert keys["approver"].post(f"{URL}/{activity_id}/reject", json={}).status_code == 422  # a reason is needed
    rejected = keys["approver"].post(f"{URL}/{activity_id}/reject", json={"reason": "wrong month"})

    assert (rejected.status_code, rejected.json["status"], rejected.json["final"]) == (200, "REJECTED", True)
    assert rejected.json["cancelled_records"] == 1 and account_balance(engine) == before
    assert user not in balances(engine)
    assert keys["approver"].post(f"{URL}/{activity_id}/approve").json["code"] == "invalid_state"
    assert keys["operator"].post(f"{URL}/{activity_id}/cancel", json={"reason": "x"}).json["code"] == "invalid_state"


def test_approval_short_of_funds_is_refused_and_the_file_still_awaits_approval(services, keys, engine):
    [user] = seed_users(services, 1, funding_minor=0)
    activity_id = upload_file(keys["operator"], f"uuid,amount\n{user},1.00\n").json["activity_id"]

    refused = keys["approver"].post(f"{URL}/{activity_id}/approve")

    assert (refused.status_code, refused.json["code"]) == (422, "insufficient_funds")
    assert keys["approver"].get(f"{URL}/{activity_id}").json["status"] == "AWAITING_APPROVAL"
    fund(services, "SGD", 100)
    assert keys["approver"].post(f"{URL}/{activity_id}/approve").status_code == 202


def test_a_threshold_holds_only_the_files_that_reach_it(app, services, queue, clean_database):
    users = seed_users(services, 1)
    operator = client_for(app, services, queue, "operator", approval="SGD:100.00")
    below = upload_file(operator, f"uuid,amount\n{users[0]},99.99\n").json["activity_id"]
    at = upload_file(operator, f"uuid,amount,reference\n{users[0]},100.00,r\n").json["activity_id"]

    assert operator.get(f"{URL}/{below}").json["status"] == "UPLOADED"
    assert operator.get(f"{URL}/{at}").json["status"] == "AWAITING_APPROVAL"


def test_a_scheduled_file_waits_for_its_execute_at_and_the_scheduler_releases_it(
        app, services, queue, clean_database, engine):
    [user] = seed_users(services, 1)
    operator = client_for(app, services, queue, "operator", approval="none")
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    activity_id = upload_file(operator, f"uuid,amount\n{user},1.00\n", execute_at=later).json["activity_id"]

    body = operator.get(f"{URL}/{activity_id}").json
    assert (body["status"], body["execute_at"] is not None, queue.take()) == ("SCHEDULED", True, [])
    assert release.release_funded(services.uow, queue, services.settings) == 0
    with engine.begin() as connection:
        connection.execute(text("UPDATE bulk_activities SET execute_at = now() - interval '1 second'"))
    assert release.release_funded(services.uow, queue, services.settings) == 1
    apply_all(services, services.settings, queue.take())

    assert operator.get(f"{URL}/{activity_id}").json["status"] == "COMPLETED"
    assert balances(engine) == {user: 100}


@pytest.mark.parametrize("execute_at", ["tomorrow", "2026-12-01T09:00:00", "2999-01-01T00:00:00Z",
                                        "2020-01-01T00:00:00Z"])
def test_a_bad_execute_at_is_a_422_and_stores_nothing(app, services, queue, clean_database, execute_at):
    [user] = seed_users(services, 1)
    operator = client_for(app, services, queue, "operator", approval="none")
    response = upload_file(operator, f"uuid,amount\n{user},1.00\n", execute_at=execute_at)
    assert response.status_code == 422 and response.json["errors"][0]["field"] == "execute_at"
    assert query(services.engine, "SELECT count(*) FROM bulk_activities")[0][0] == 0


@pytest.mark.parametrize("actions, deciders", [
    (("approve", "reject"), {"approve", "reject"}),
    (("reject", "cancel"), {"reject", "cancel"}),
    (("approve", "approve"), {"approve"}),
    (("cancel", "cancel"), {"cancel"}),
])
def test_approve_reject_and_cancel_raced_from_separate_processes_let_exactly_one_decide(
        services, keys, engine, actions, deciders):
    users = seed_users(services, 20)
    content = "uuid,amount\n" + "".join(f"{user},1.00\n" for user in users)
    activity_id = upload_file(keys["operator"], content).json["activity_id"]
    approver_id = query(engine, "SELECT id FROM api_keys WHERE scope = 'approver'")[0][0]
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(len(actions))
    with context.Pool(len(actions)) as pool:
        outcomes = pool.starmap(act, [(action, activity_id, approver_id, test_environ(), "always", barrier)
                                      for action in actions])

    assert outcomes.count("won") == 1, outcomes
    assert set(outcomes) - {"won"} <= {"invalid_state"}, outcomes
    winner = actions[outcomes.index("won")]
    status = query(engine, "SELECT status FROM bulk_activities WHERE id = :a", a=activity_id)[0][0]
    assert status == {"approve": "UPLOADED", "reject": "REJECTED", "cancel": "CANCELLED"}[winner]
    assert reserved(engine, activity_id) == (2_000 if winner == "approve" else 0)
    assert_ledger_invariants(engine)
