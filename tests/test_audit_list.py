"""The audit list: an end-to-end sequence of operator and admin actions through the API and the
command line leaves exactly one audit event per action, each with its actor; reads, refusals,
dry runs and replays leave none."""
from __future__ import annotations

import copy
import dataclasses
import io
import uuid

import pytest

from pipeline import webhooks
from pipeline.users import create_api_key, find_api_key
from tests.test_bulk_pipeline import apply_all, seed_users

BULK = "/api/v1/wallet/bulk-credit"
AUDIT = "/api/v1/audit-events"


@pytest.fixture
def configured(services, app, queue):
    fail_user = str(uuid.uuid4())
    services = copy.copy(services)
    services.settings = dataclasses.replace(
        services.settings, webhook_allow_private_urls=True, bulk_credit_approval="SGD:50.00",
        bulk_credit_fail_user_ids=frozenset({fail_user}), retry_max_attempts=1)
    app.extensions["wallet"] = services
    app.extensions["wallet.chunk_queue"] = queue
    return services, fail_user


def signed_in(app, services, scope, label=None):
    token = create_api_key(services.uow(), scope, label)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client, find_api_key(services.uow(), token).id


def csv(rows) -> bytes:
    return ("uuid,amount\n" + "".join(f"{user},{amount}\n" for user, amount in rows)).encode()


def upload(client, rows, **headers):
    return client.post(BULK, data={"file": (io.BytesIO(csv(rows)), "pay.csv")}, headers=headers,
                       content_type="multipart/form-data")


def test_every_action_of_an_end_to_end_sequence_is_one_audit_event_with_its_actor(app, configured, queue, tmp_path):
    services, fail_user = configured
    (admin, admin_id), (operator, operator_id), (approver, approver_id) = (
        signed_in(app, services, scope, label) for scope, label in (
            ("admin", None), ("operator", None), ("approver", "Ana, finance")))
    users = seed_users(services, 2)
    with services.uow() as uow:
        uow.bulk.copy_users([(fail_user, "Fails", f"{fail_user}@example.test")])
        uow.commit()

    paid = upload(operator, [(users[0], "30.00"), (fail_user, "30.00")], **{"Idempotency-Key": "k1"}).json["activity_id"]
    assert upload(operator, [(users[0], "30.00"), (fail_user, "30.00")], **{"Idempotency-Key": "k1"}).status_code == 200
    assert operator.post(BULK, data={"file": (io.BytesIO(csv([(users[1], "1.00")])), "x.csv"), "dry_run": "true"},
                         content_type="multipart/form-data").status_code == 200
    assert operator.post(f"{BULK}/{paid}/approve").status_code == 403  # refused: no event
    assert approver.post(f"{BULK}/{paid}/approve").status_code == 202
    apply_all(services, services.settings, queue.take())
    assert operator.post(f"{BULK}/retry", json={"activity_id": paid}).status_code == 202
    rejected = upload(operator, [(users[1], "60.00")]).json["activity_id"]
    assert approver.post(f"{BULK}/{rejected}/reject", json={"reason": "wrong file"}).status_code == 200
    cancelled = upload(operator, [(users[1], "1.00"), (fail_user, "2.00")]).json["activity_id"]
    assert admin.post(f"{BULK}/{cancelled}/cancel", json={"reason": "not now"}).status_code == 202
    hook = admin.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "events": ["hold.expired"]}).json
    with services.uow() as uow:
        webhooks.emit(uow, "hold.expired", "h-1", {"hold_id": "h-1"})
        uow.commit()
    [delivery] = admin.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json["data"]
    assert admin.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/replay").status_code == 202
    assert admin.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
    runner = app.test_cli_runner()
    path = tmp_path / "cli.csv"
    path.write_bytes(csv([(users[1], "3.00")]))
    assert runner.invoke(args=["keys", "create", "--scope", "operator"]).exit_code == 0
    cli_upload = runner.invoke(args=["bulk-credit", "upload", str(path)])
    assert cli_upload.exit_code == 0, cli_upload.output
    admin.get(AUDIT)  # reading is no action

    events = admin.get(f"{AUDIT}?limit=100").json
    listed = [(e["action"], e["object_id"], e["actor"]["type"], e["actor"]["api_key_id"]) for e in events["data"]]
    cli_activity = listed[0][1]
    assert listed == [
        ("bulk_credit.upload", cli_activity, "command_line", None),
        ("api_key.create", listed[1][1], "command_line", None),
        ("webhook.delete", hook["id"], "api_key", admin_id),
        ("webhook.replay", str(delivery["id"]), "api_key", admin_id),
        ("webhook.create", hook["id"], "api_key", admin_id),
        ("bulk_credit.cancel", cancelled, "api_key", admin_id),
        ("bulk_credit.upload", cancelled, "api_key", operator_id),
        ("bulk_credit.reject", rejected, "api_key", approver_id),
        ("bulk_credit.upload", rejected, "api_key", operator_id),
        ("bulk_credit.retry", paid, "api_key", operator_id),
        ("bulk_credit.approve", paid, "api_key", approver_id),
        ("bulk_credit.upload", paid, "api_key", operator_id),
        ("api_key.create", str(approver_id), "command_line", None),
        ("api_key.create", str(operator_id), "command_line", None),
        ("api_key.create", str(admin_id), "command_line", None),
    ]
    assert events["next_cursor"] is None
    first = events["data"][-1]
    assert first["actor"] == {"type": "command_line", "api_key_id": None, "scope": None, "label": None}
    assert first["object_type"] == "api_key" and first["detail"] == {"scope": "admin", "label": None, "expires_at": None}
    approval = next(e for e in events["data"] if e["action"] == "bulk_credit.approve")
    assert approval["actor"] == {"type": "api_key", "api_key_id": approver_id, "scope": "approver",
                                 "label": "Ana, finance"}
    assert events["data"][5]["detail"] == {"reason": "not now", "cancelled_records": 2}


def test_the_audit_list_filters_by_actor_action_and_object_and_pages_newest_first(app, configured):
    services, _ = configured
    (admin, admin_id), (operator, operator_id) = (signed_in(app, services, s) for s in ("admin", "operator"))
    users = seed_users(services, 1)
    activities = [upload(operator, [(users[0], f"{n}.00")]).json["activity_id"] for n in (1, 2, 3)]

    by_actor = admin.get(f"{AUDIT}?actor={operator_id}").json["data"]
    assert [e["object_id"] for e in by_actor] == activities[::-1]
    assert [e["action"] for e in admin.get(f"{AUDIT}?actor=command_line").json["data"]] == ["api_key.create"] * 2
    assert len(admin.get(f"{AUDIT}?action=api_key.create").json["data"]) == 2
    assert [e["action"] for e in admin.get(f"{AUDIT}?object_id={activities[1]}").json["data"]] == ["bulk_credit.upload"]
    pages, cursor = [], None
    while True:
        page = admin.get(f"{AUDIT}?limit=2" + (f"&cursor={cursor}" if cursor else "")).json
        pages.append([e["id"] for e in page["data"]])
        if not (cursor := page["next_cursor"]):
            break
    assert pages == [[5, 4], [3, 2], [1]]
    for query, field in (("actor=someone", "actor"), ("limit=0", "limit"), ("cursor=xyz", "cursor"),
                         ("action=" + "a" * 201, "action"), ("object_id=%00", "object_id")):
        refused = admin.get(f"{AUDIT}?{query}")
        assert (refused.status_code, refused.json["errors"][0]["field"]) == (422, field)
    assert operator.get(AUDIT).status_code == 403
