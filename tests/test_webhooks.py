"""Webhooks: subscriptions over the API, events written with the change they report, signed
deliveries to a real local receiver, retries with growing pauses, replay, and refused URLs."""
from __future__ import annotations

import copy
import dataclasses
import ipaddress
import io
import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import text
from standardwebhooks import Webhook

from actors.webhook_http import HttpSender
from pipeline import webhooks
from pipeline.users import create_api_key
from pipeline.webhooks import delivery
from storage.unit_of_work import SqlUnitOfWork
from tests.test_bulk_pipeline import RecordingQueue, apply_all, query, seed_users
from tests.webhook_receiver import Receiver

HOOKS = "/api/v1/webhooks"
BULK = "/api/v1/wallet/bulk-credit"


class RecordingDeliveries:
    def __init__(self):
        self.sent: list[tuple[int, int]] = []

    def send(self, deliveries):
        self.sent.extend(deliveries)


@pytest.fixture
def configured(services, app, queue):
    """The app's services with private URLs allowed, every file held for approval, and short pauses."""
    services = copy.copy(services)
    services.settings = dataclasses.replace(
        services.settings, webhook_allow_private_urls=True, bulk_credit_approval="always",
        webhook_retry_base_delay_s=0.1, webhook_retry_delay_max_s=0.3, webhook_attempts_max=4)
    app.extensions["wallet"] = services
    app.extensions["wallet.chunk_queue"] = queue
    return services


def client(app, services, scope: str):
    signed_in = app.test_client()
    signed_in.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_api_key(services.uow(), scope)}"
    return signed_in


def upload(client_, users, amount="1.00"):
    content = "uuid,amount\n" + "".join(f"{user},{amount}\n" for user in users)
    return client_.post(BULK, data={"file": (io.BytesIO(content.encode()), "pay.csv")},
                        content_type="multipart/form-data").json["activity_id"]


def attempt_all(services, settings) -> list:
    """One dispatcher run, then every attempt it sent, in this process."""
    sent = RecordingDeliveries()
    delivery.dispatch_due(services.uow, sent)
    sender = HttpSender(settings.webhook_connect_timeout_s, settings.webhook_read_timeout_s)
    return [delivery.deliver(services.uow, sender, settings, *message) for message in sent.sent]


def test_a_subscription_shows_its_secret_once_and_only_an_admin_may_manage_webhooks(app, configured):
    admin = client(app, configured, "admin")
    created = admin.post(HOOKS, json={"url": "http://127.0.0.1:9/x", "events": ["activity.completed"],
                                      "description": "payouts"})

    assert created.status_code == 201 and created.json["secret"].startswith("whsec_")
    Webhook(created.json["secret"])  # a secret the standardwebhooks library reads
    listed = admin.get(HOOKS).json["data"]
    assert listed == [{"id": created.json["id"], "url": "http://127.0.0.1:9/x", "events": ["activity.completed"],
                       "description": "payouts", "created_at": created.json["created_at"]}]
    operator = client(app, configured, "operator")
    assert operator.post(HOOKS, json={"url": "http://127.0.0.1:9/x", "events": ["activity.failed"]}).status_code == 403
    assert operator.get(HOOKS).status_code == 200  # reads everything (API.md), never a secret
    assert "secret" not in operator.get(HOOKS).json["data"][0]
    assert admin.delete(f"{HOOKS}/{created.json['id']}").status_code == 204
    assert admin.get(HOOKS).json["data"] == []
    assert admin.delete(f"{HOOKS}/{created.json['id']}").status_code == 404


def test_subscriptions_are_listed_oldest_first_a_page_at_a_time(app, configured):
    admin = client(app, configured, "admin")
    ids = [admin.post(HOOKS, json={"url": f"http://127.0.0.1:9/{n}", "events": ["hold.expired"]}).json["id"]
           for n in range(3)]

    first = admin.get(f"{HOOKS}?limit=2").json
    second = admin.get(f"{HOOKS}?limit=2&cursor={first['next_cursor']}").json

    assert [h["id"] for h in first["data"] + second["data"]] == ids and second["next_cursor"] is None
    assert admin.get(f"{HOOKS}?limit=0").status_code == 422


@pytest.mark.parametrize("url, code", [
    ("ftp://example.com/x", "url_not_allowed"), ("file:///etc/passwd", "url_not_allowed"),
    ("http://127.0.0.1:8080/x", "url_not_allowed"), ("http://10.1.2.3/x", "url_not_allowed"),
    ("http://[::1]/x", "url_not_allowed"), ("http://169.254.169.254/latest", "url_not_allowed"),
    ("http://[::ffff:192.168.0.1]/x", "url_not_allowed"), ("http://localhost/x", "url_not_allowed"),
    ("http://100.64.0.1/x", "url_not_allowed"), ("not a url", "validation_failed"),
    ("http://user:pw@example.com/x", "validation_failed"), ("http:///x", "validation_failed"),
    ("http://a\ud800.example/x", "validation_failed"), ("http://example.com:99999/x", "validation_failed"),
])
def test_urls_that_are_not_http_or_reach_private_addresses_are_refused(app, services, url, code):
    admin = client(app, services, "admin")  # WEBHOOK_ALLOW_PRIVATE_URLS is false by default

    refused = admin.post(HOOKS, json={"url": url, "events": ["activity.completed"]})

    assert (refused.status_code, refused.json["code"], refused.json["errors"][0]["field"]) == (422, code, "url")
    assert query(services.engine, "SELECT count(*) FROM webhook_subscriptions") == [(0,)]


def test_unknown_event_types_and_bad_bodies_are_refused_naming_the_field(app, configured):
    admin = client(app, configured, "admin")
    for body, field in [({"url": "http://127.0.0.1/x", "events": ["activity.exploded"]}, "events"),
                        ({"url": "http://127.0.0.1/x", "events": []}, "events"),
                        ({"url": "http://127.0.0.1/x", "events": "activity.failed"}, "events"),
                        ({"url": "http://127.0.0.1/x", "events": ["activity.failed"], "description": "\u0000"},
                         "description")]:
        refused = admin.post(HOOKS, json=body)
        assert (refused.status_code, refused.json["errors"][0]["field"]) == (422, field)


def test_an_event_is_written_with_the_change_it_reports_and_not_without_it(app, configured, engine):
    admin = client(app, configured, "admin")
    hook = admin.post(HOOKS, json={"url": "http://127.0.0.1:9/x", "events": ["activity.awaiting_approval"]}).json
    users = seed_users(configured, 1)

    activity_id = upload(client(app, configured, "operator"), users)
    with SqlUnitOfWork(engine) as uow:  # a change that rolls back takes its event with it
        webhooks.emit(uow, "hold.expired", "h-1", {"hold_id": "h-1"})

    events = query(engine, "SELECT e.type, e.object_id, d.subscription_id::text, d.status FROM webhook_events e"
                           " LEFT JOIN webhook_deliveries d ON d.event_id = e.id ORDER BY e.id")
    assert events == [("activity.awaiting_approval", activity_id, hook["id"], "PENDING")]


def test_a_delivery_is_signed_retried_with_growing_pauses_given_up_and_replayed(app, configured, engine):
    settings = configured.settings
    admin = client(app, configured, "admin")
    with Receiver(fail_first=10) as receiver:
        hook = admin.post(HOOKS, json={"url": receiver.url, "events": ["activity.awaiting_approval"]}).json
        activity_id = upload(client(app, configured, "operator"), seed_users(configured, 1))
        outcomes, pauses = [], []
        for _ in range(settings.webhook_attempts_max):
            [attempted] = attempt_all(configured, settings)
            outcomes.append(attempted.status)
            pause = query(engine, "SELECT extract(epoch FROM next_attempt_at - (SELECT max(at) FROM webhook_attempts))"
                                  " FROM webhook_deliveries")[0][0]
            pauses.append(None if pause is None else round(float(pause), 1))
            query(engine, "SELECT pg_sleep(:s)", s=float(pause or 0) + 0.05)
        assert outcomes == ["PENDING", "PENDING", "PENDING", "FAILED"]
        assert pauses == [0.1, 0.2, 0.3, None]  # doubling from the base, up to the max; then given up
        assert attempt_all(configured, settings) == []  # given up: nothing is due

        deliveries = admin.get(f"{HOOKS}/{hook['id']}/deliveries").json["data"]
        assert [(d["type"], d["attempts"], d["status"], d["last_status_code"]) for d in deliveries] == [
            ("activity.awaiting_approval", 4, "FAILED", 500)]
        receiver.fail_first = 0
        replayed = admin.post(f"{HOOKS}/{hook['id']}/deliveries/{deliveries[0]['id']}/replay")
        assert replayed.status_code == 202
        [attempted] = attempt_all(configured, settings)

    assert attempted.status == "SUCCEEDED" and len(receiver.received) == 5
    for request in receiver.received:  # every attempt signed with the subscription's secret
        verified = Webhook(hook["secret"]).verify(request.body, request.headers)
        assert verified["type"] == "activity.awaiting_approval"
        assert verified["data"]["activity_id"] == activity_id and verified["data"]["status"] == "AWAITING_APPROVAL"
        assert request.headers["webhook-id"] == str(deliveries[0]["event_id"])
    assert query(engine, "SELECT count(*), count(status_code) FROM webhook_attempts") == [(5, 5)]
    with pytest.raises(Exception):
        Webhook(webhooks.subscriptions.new_secret()).verify(receiver.received[0].body, receiver.received[0].headers)


def test_a_host_that_resolves_to_a_private_address_at_delivery_is_not_contacted(app, configured, engine):
    """DNS rebinding: public when subscribed, loopback when delivered."""
    settings = dataclasses.replace(configured.settings, webhook_allow_private_urls=False)
    with Receiver() as receiver:
        port = receiver.server.server_address[1]
        public = lambda host, port: [ipaddress.ip_address("93.184.216.34")]  # noqa: E731
        webhooks.subscriptions.subscribe(configured.uow, settings, webhooks.subscriptions.audit.COMMAND_LINE,
                                         url=f"http://hooks.example.test:{port}/x",
                                         events=["hold.expired"], resolver=public)
        with configured.uow() as uow:
            webhooks.emit(uow, "hold.expired", "h-1", {"hold_id": "h-1"})
            uow.commit()
        sent = RecordingDeliveries()
        delivery.dispatch_due(configured.uow, sent)
        loopback = lambda host, port: [ipaddress.ip_address("127.0.0.1")]  # noqa: E731
        attempted = delivery.deliver(configured.uow, HttpSender(1, 1), settings, *sent.sent[0], resolver=loopback)

    assert attempted.answer.error.startswith("url_not_allowed") and receiver.received == []
    assert query(engine, "SELECT status, attempts, last_status_code FROM webhook_deliveries") == [("PENDING", 1, None)]


def test_an_older_pending_delivery_of_the_same_activity_holds_back_the_newer_ones(app, configured, engine, queue):
    admin = client(app, configured, "admin")
    with Receiver(fail_first=1) as receiver:
        admin.post(HOOKS, json={"url": receiver.url, "events": list(webhooks.EVENT_TYPES)})
        activity_id = upload(client(app, configured, "operator"), seed_users(configured, 1))
        client(app, configured, "approver").post(f"{BULK}/{activity_id}/approve")
        apply_all(configured, configured.settings, queue.take())  # awaiting approval, then completed

        first = attempt_all(configured, configured.settings)  # fails: the completion must wait
        assert [a.status for a in first] == ["PENDING"]
        query(engine, "SELECT pg_sleep(0.15)")
        second = attempt_all(configured, configured.settings)
        query(engine, "SELECT pg_sleep(0.15)")
        third = attempt_all(configured, configured.settings)

    assert [a.status for a in second + third] == ["SUCCEEDED", "SUCCEEDED"]
    types = [json.loads(request.body)["type"] for request in receiver.accepted()]
    assert types == ["activity.awaiting_approval", "activity.completed"]


def test_a_message_sent_twice_attempts_its_delivery_once(app, configured, engine):
    with Receiver() as receiver:
        client(app, configured, "admin").post(HOOKS, json={"url": receiver.url, "events": ["hold.expired"]})
        with configured.uow() as uow:
            webhooks.emit(uow, "hold.expired", "h-9", {"hold_id": "h-9"})
            uow.commit()
        sent = RecordingDeliveries()
        delivery.dispatch_due(configured.uow, sent)
        sender = HttpSender(1, 1)
        once = delivery.deliver(configured.uow, sender, configured.settings, *sent.sent[0])
        again = delivery.deliver(configured.uow, sender, configured.settings, *sent.sent[0])

    assert once.status == "SUCCEEDED" and again is None and len(receiver.received) == 1


def test_a_reconciliation_that_finds_mismatches_emits_one_event_and_a_clean_one_none(app, configured, engine):
    from tests.test_reconciliation import deposit, reconcile

    client(app, configured, "admin").post(HOOKS, json={"url": "http://127.0.0.1:9/x",
                                                       "events": ["reconciliation.mismatch"]})
    [user] = seed_users(configured, 1, funding_minor=0)
    deposit(configured, user, 5_000)
    clean = reconcile(configured, full=True)
    with engine.begin() as connection:
        connection.execute(text("UPDATE wallets SET balance = balance + 7 WHERE user_id = :u"), {"u": user})

    mismatched = reconcile(configured, full=False)

    assert clean["status"] == "clean" and mismatched["status"] == "mismatched"
    [(object_id, payload)] = query(engine, "SELECT e.object_id, e.payload FROM webhook_events e"
                                           " JOIN webhook_deliveries d ON d.event_id = e.id")
    assert object_id == mismatched["id"] and payload["mismatch_count"] == 3 == len(payload["mismatches"])


def test_a_reversal_that_ends_emits_reversal_completed_besides_its_activity_event(app, configured, engine, queue):
    configured.settings = dataclasses.replace(configured.settings, bulk_credit_approval="none")
    admin = client(app, configured, "admin")
    admin.post(HOOKS, json={"url": "http://127.0.0.1:9/x", "events": ["reversal.completed", "activity.completed"]})
    credit = upload(admin, seed_users(configured, 1))
    apply_all(configured, configured.settings, queue.take())

    reversed_ = admin.post(f"{BULK}/{credit}/reverse", json={"reason": "paid twice"},
                           headers={"Idempotency-Key": "reverse-1"})
    apply_all(configured, configured.settings, queue.take())

    assert reversed_.status_code == 202
    reversal = reversed_.json["activity_id"]
    assert query(engine, "SELECT type, object_id, payload ->> 'kind', payload ->> 'reverses', payload ->> 'status'"
                         " FROM webhook_events ORDER BY id") == [
        ("activity.completed", credit, "credit", None, "COMPLETED"),
        ("activity.completed", reversal, "reversal", credit, "COMPLETED"),
        ("reversal.completed", reversal, "reversal", credit, "COMPLETED")]


def test_the_webhook_and_audit_answers_match_their_documented_schemas(app, configured):
    from tests.test_openapi_schemas import Documented

    admin = client(app, configured, "admin")
    documented = Documented(admin.get("/openapi.json").json)
    created = documented.check("POST", HOOKS, admin.post(HOOKS, json={"url": "http://127.0.0.1:9/x",
                                                                      "events": ["hold.expired"]}))
    with configured.uow() as uow:
        webhooks.emit(uow, "hold.expired", "h-1", {"hold_id": "h-1"})
        uow.commit()
    documented.check("GET", HOOKS, admin.get(HOOKS))
    deliveries = f"{HOOKS}/{{subscription_id}}/deliveries"
    [pending] = documented.check("GET", deliveries, admin.get(f"{HOOKS}/{created['id']}/deliveries"))["data"]
    documented.check("POST", deliveries + "/{delivery_id}/replay",
                     admin.post(f"{HOOKS}/{created['id']}/deliveries/{pending['id']}/replay"))
    events = documented.check("GET", "/api/v1/audit-events", admin.get("/api/v1/audit-events"))["data"]

    assert [e["action"] for e in events] == ["webhook.replay", "webhook.create", "api_key.create"]
    assert len(documented.checked) == 5
