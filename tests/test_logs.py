"""Structured logs: a request id from the HTTP request into its log lines, into the Dramatiq
messages it sends and into the worker's log lines for them; no secrets and no full emails."""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import runpy
import types
from pathlib import Path

import dramatiq
import gunicorn.config
import pytest
from dramatiq.brokers.stub import StubBroker

import actors
import actors.bulk_credit
from actors.bulk_credit import ChunkMessages
from api import create_app
from telemetry import logs
from telemetry.messages import REQUEST_ID_OPTION
from tests.test_bulk_pipeline import post_file, seed_users

#: How long an in-process worker gets to drain its queue, in milliseconds.
JOIN_TIMEOUT_MS = 30_000


def formatted(record: logging.LogRecord) -> dict:
    return json.loads(logs.JsonFormatter().format(record))


@pytest.fixture
def stub_broker():
    """A StubBroker with the project's middleware; actors are declared on it by each test."""
    broker = StubBroker(middleware=actors.middleware())
    broker.emit_after("process_boot")
    yield broker
    broker.flush_all()
    broker.close()


def run_worker(broker: dramatiq.Broker, queue_name: str, fail_fast: bool = True) -> None:
    """Runs every message of `queue_name` in this process, then stops the worker."""
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        broker.join(queue_name, timeout=JOIN_TIMEOUT_MS, fail_fast=fail_fast)
        worker.join()
    finally:
        worker.stop()


@pytest.fixture
def bulk_worker(stub_broker, services, settings, monkeypatch):
    """The real bulk-credit actor on the stub broker, over the test database; returns
    (chunk queue for the app, a function that runs the queued chunks)."""
    stub_broker.declare_actor(actors.bulk_credit.apply_bulk_chunk)
    worker_services = types.SimpleNamespace(uow=services.uow, settings=settings)
    monkeypatch.setattr(actors.bulk_credit, "services", lambda: worker_services)

    def run(fail_user_ids=frozenset()):
        worker_services.settings = dataclasses.replace(settings, bulk_credit_fail_user_ids=frozenset(fail_user_ids))
        run_worker(stub_broker, actors.bulk_credit.QUEUE_NAME)

    return ChunkMessages(stub_broker), run


@pytest.fixture
def http(app, admin_token):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"
    return client


def test_a_request_id_sent_by_the_client_is_returned_and_in_every_log_record_of_the_request(
        settings, clean_database, admin_token, caplog):
    # Given an app that logs every SQL statement as slow, so a request writes several lines
    app = create_app(dataclasses.replace(settings, slow_query_ms=0))
    client = app.test_client()
    user = client.post("/api/v1/users", json={"name": "Ada", "email": "ada@example.com"},
                       headers={"Authorization": f"Bearer {admin_token}"}).get_json()
    caplog.clear()

    # When a request comes with its own id
    with caplog.at_level(logging.INFO):
        response = client.get(f"/api/v1/users/{user['id']}", headers={
            "Authorization": f"Bearer {admin_token}", "X-Request-Id": "checkout-7f3a:42"})

    # Then the answer and every line the request logged carry it
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == "checkout-7f3a:42"
    mine = [record for record in caplog.records if record.name in ("wallet.http", "wallet.slow_query")]
    assert {record.name for record in mine} == {"wallet.http", "wallet.slow_query"}
    assert {record.request_id for record in caplog.records} == {"checkout-7f3a:42"}
    assert {formatted(record)["request_id"] for record in mine} == {"checkout-7f3a:42"}
    app.extensions["wallet"].engine.dispose()


def test_no_token_and_no_full_email_reaches_the_log_lines_of_real_requests(settings, clean_database, admin_token,
                                                                           caplog):
    # Given an app that logs every statement, and requests that carry a token and an email
    app = create_app(dataclasses.replace(settings, slow_query_ms=0))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {admin_token}"}
    with caplog.at_level(logging.DEBUG):
        created = client.post("/api/v1/users", json={"name": "Eve", "email": "eve.secret@example.com"},
                              headers=headers)
        duplicate = client.post("/api/v1/users", json={"name": "Eve", "email": "eve.secret@example.com"},
                                headers=headers)
        client.get("/api/v1/users/not-a-uuid", headers={"Authorization": "Bearer wp_not_a_real_key_but_long"})

    # Then the JSON lines written for them show neither
    lines = "\n".join(logs.JsonFormatter().format(record) for record in caplog.records)
    assert (created.status_code, duplicate.status_code) == (201, 409)
    assert "wallet.slow_query" in lines and "wallet.http" in lines
    assert admin_token not in lines and "wp_not_a_real_key" not in lines
    assert "eve.secret" not in lines
    app.extensions["wallet"].engine.dispose()


@pytest.mark.parametrize("header", ["has spaces", "x" * 129, '"quoted"', "tab\there", "semi;colon", ""])
def test_an_unsafe_or_missing_request_id_is_replaced_by_a_new_one(client, header):
    response = client.get("/healthz", headers={"X-Request-Id": header})

    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])


def test_each_request_without_an_id_gets_its_own(client):
    first, second = client.get("/healthz"), client.get("/healthz")

    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


def test_a_worker_logs_a_message_under_the_request_id_of_whoever_sent_it(stub_broker, caplog):
    # Given an actor that logs, on a broker with the project's middleware
    @dramatiq.actor(broker=stub_broker, queue_name="telemetry_test", max_retries=0)
    def say(word):
        logging.getLogger("tests.worker").info("said %s", word)

    # When a message is sent while a request id is current, and another with none
    token = logs.REQUEST_ID.set("req-from-http")
    try:
        say.send("inside")
    finally:
        logs.REQUEST_ID.reset(token)
    say.send("outside")
    with caplog.at_level(logging.INFO):
        run_worker(stub_broker, "telemetry_test")

    # Then the worker's records carry the sender's id, and only for its message
    said = {record.getMessage(): record.request_id for record in caplog.records if record.name == "tests.worker"}
    assert said == {"said inside": "req-from-http", "said outside": None}
    assert logs.REQUEST_ID.get() is None


def test_a_bulk_credit_upload_s_request_id_reaches_the_worker_that_applies_its_chunk(
        services, http, bulk_worker, caplog):
    # Given an upload over HTTP whose chunk messages go to an in-process worker
    chunk_queue, run = bulk_worker
    http.application.extensions["wallet.chunk_queue"] = chunk_queue
    users = seed_users(services, 3)
    content = "uuid,amount\n" + "".join(f"{user},2.00\n" for user in users)

    # When the upload is sent with an id, and the worker runs its message
    accepted = post_file(http, content.encode(), **{"X-Request-Id": "upload-1234"})
    [message] = chunk_queue.broker.queues[actors.bulk_credit.QUEUE_NAME].queue
    with caplog.at_level(logging.INFO):
        run()

    # Then the message and the worker's line about the chunk carry the upload's id
    assert (accepted.status_code, accepted.headers["X-Request-Id"]) == (202, "upload-1234")
    assert json.loads(message)["options"][REQUEST_ID_OPTION] == "upload-1234"
    applied = [record for record in caplog.records if record.name == "actors.bulk_credit"]
    assert [(record.getMessage().split(": ", 1)[1], record.request_id) for record in applied] == [
        ("3 credited, 0 failed, activity COMPLETED", "upload-1234")]


def test_emails_are_masked_and_tokens_redacted_in_every_json_line():
    record = logging.LogRecord(
        "tests", logging.WARNING, __file__, 1, "user %s sent Authorization: Bearer %s with key %s", (
            "alice.smith@example.com", "abc.DEF-123", "wp_" + "x" * 43), None)
    record.token = "wp_secret"
    record.email = "bob@mail.example.org"
    try:
        raise ValueError("Key (email)=(carol@example.net) already exists")
    except ValueError:
        import sys
        record.exc_info = sys.exc_info()

    line = logs.JsonFormatter().format(record)

    parsed = json.loads(line)
    assert parsed["message"] == "user a***@example.com sent Authorization: Bearer [redacted] with key wp_[redacted]"
    assert (parsed["token"], parsed["email"]) == ("[redacted]", "b***@mail.example.org")
    assert "c***@example.net" in parsed["exception"]
    for secret in ("alice", "abc.DEF-123", "xxxxxxxxxxxxxxxx", "wp_secret", "bob@", "carol"):
        assert secret not in line


def test_the_app_writes_json_lines_at_the_level_of_log_level(client):
    handlers = [handler for handler in logging.getLogger().handlers if isinstance(handler.formatter, logs.JsonFormatter)]

    assert len(handlers) == 1
    assert logs.level_from_environ({"LOG_LEVEL": "warning"}) == "WARNING"
    assert logs.level_from_environ({}) == "INFO"
    with pytest.raises(AssertionError):
        logs.level_from_environ({"LOG_LEVEL": "chatty"})


def test_gunicorn_s_own_lines_are_json_too(capfd):
    settings = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
    config = gunicorn.config.Config()
    config.set("errorlog", "-")

    settings["logger_class"](config).error("worker timeout (pid:%s) for a@example.com", 42)

    line = json.loads(capfd.readouterr().err.strip().splitlines()[-1])
    assert (line["logger"], line["level"], line["message"]) == (
        "gunicorn.error", "error", "worker timeout (pid:42) for a***@example.com")
