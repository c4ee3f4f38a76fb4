"""Every operator action writes one JSON log line, once it has committed, with its actor and
the ids it touched as fields: upload, approve, reject, cancel, retry, top-up, reconciliation
start over HTTP, and key creation on the command line."""
from __future__ import annotations

import dataclasses
import json
import logging

from pipeline import audit
from pipeline.audit import Actor
from pipeline.bulk import chunks
from pipeline.users import create_api_key, find_api_key
from telemetry.logs import JsonFormatter
from tests.test_approval import URL, client_for, upload_file
from tests.test_bulk_pipeline import seed_users


def action_lines(caplog) -> list[dict]:
    """The wallet.action records as the JSON lines the processes write."""
    formatter = JsonFormatter()
    return [json.loads(formatter.format(record)) for record in caplog.records if record.name == "wallet.action"]


def key_id(services, client) -> int:
    """The id of the API key `client` signs in with."""
    return find_api_key(services.uow(), client.environ_base["HTTP_AUTHORIZATION"].split()[1]).id


def test_each_operator_action_over_http_logs_its_actor_and_the_ids_it_touched(
        services, settings, app, queue, clean_database, caplog):
    users = seed_users(services, 2)
    operator = client_for(app, services, queue, "operator", approval="none")
    operator_id = key_id(services, operator)
    faulty = dataclasses.replace(settings, bulk_credit_fail_user_ids=frozenset({users[1]}))
    caplog.set_level(logging.INFO, logger="wallet.action")
    caplog.clear()  # the keys made above

    # An upload whose second row fails, then a retry, then a cancel of what is left
    activity_id = upload_file(operator, f"uuid,amount\n{users[0]},1.00\n{users[1]},2.00\n").json["activity_id"]
    chunks.apply_chunk(services.uow, faulty, queue.take()[0])
    assert operator.post(f"{URL}/retry", json={"activity_id": activity_id}).status_code == 202
    assert operator.post(f"{URL}/{activity_id}/cancel", json={"reason": "wrong file"}).status_code == 202
    # A reconciliation started
    run_id = operator.post("/api/v1/reconciliations", json={}).json["id"]

    lines = action_lines(caplog)
    assert [(line["action"], line["actor"], line["actor_type"], line["actor_key_id"]) for line in lines] == [
        ("bulk_credit.upload", f"api_key:{operator_id}", "api_key", operator_id),
        ("bulk_credit.retry", f"api_key:{operator_id}", "api_key", operator_id),
        ("bulk_credit.cancel", f"api_key:{operator_id}", "api_key", operator_id),
        ("reconciliation.start", f"api_key:{operator_id}", "api_key", operator_id)]
    upload, retry, cancel, started = lines
    assert (upload["activity_id"], upload["funding_account"], upload["file_name"], upload["total_records"]) == (
        activity_id, "default", "payouts.csv", 2)
    assert (retry["activity_id"], retry["retried_records"]) == (activity_id, 1)
    assert (cancel["activity_id"], cancel["cancelled_records"]) == (activity_id, 1)
    assert (started["reconciliation_id"], started["full"]) == (run_id, False)
    assert all(line["level"] == "info" and line["logger"] == "wallet.action" for line in lines)


def test_approve_reject_and_top_up_log_the_approver_and_the_admin(services, app, queue, clean_database, caplog):
    [user] = seed_users(services, 1)
    maker = client_for(app, services, queue, "operator")
    checker = client_for(app, services, queue, "approver")
    checker_id = key_id(services, checker)
    approved_id = upload_file(maker, f"uuid,amount\n{user},1.00\n").json["activity_id"]
    rejected_id = upload_file(maker, f"uuid,amount\n{user},2.00\n").json["activity_id"]
    admin = client_for(app, services, queue, "admin")
    admin_id = key_id(services, admin)
    caplog.set_level(logging.INFO, logger="wallet.action")
    caplog.clear()  # the keys made above

    assert checker.post(f"{URL}/{approved_id}/approve").status_code == 202
    assert checker.post(f"{URL}/{rejected_id}/reject", json={"reason": "duplicate payroll"}).status_code == 200
    top_up = {"amount": "50.00", "currency": "SGD"}
    moved = admin.post("/api/v1/funding-accounts/payroll/top-up", json=top_up, headers={"Idempotency-Key": "t-1"})
    replayed = admin.post("/api/v1/funding-accounts/payroll/top-up", json=top_up, headers={"Idempotency-Key": "t-1"})

    assert (moved.status_code, replayed.headers.get("Idempotency-Replayed")) == (201, "true")
    approve, reject, funded = action_lines(caplog)  # the replay moved nothing and logs nothing
    assert (approve["action"], approve["actor"], approve["activity_id"]) == (
        "bulk_credit.approve", f"api_key:{checker_id}", approved_id)
    assert (reject["action"], reject["actor"], reject["activity_id"], reject["cancelled_records"]) == (
        "bulk_credit.reject", f"api_key:{checker_id}", rejected_id, 1)
    assert (funded["action"], funded["actor"], funded["actor_key_id"]) == ("funding.top_up", f"api_key:{admin_id}", admin_id)
    assert (funded["funding_account"], funded["journal_entry_id"], funded["currency"], funded["amount_minor"]) == (
        "payroll", moved.json["id"], "SGD", 5000)


def test_a_key_created_on_the_command_line_logs_the_command_line_and_the_new_key_s_id_never_its_token(
        app, clean_database, caplog):
    caplog.set_level(logging.INFO, logger="wallet.action")

    result = app.test_cli_runner().invoke(args=["keys", "create", "--scope", "operator", "--label", "payroll bot"])

    token = result.output.strip().splitlines()[-1]
    [line] = action_lines(caplog)
    assert (line["action"], line["actor"], line["actor_type"], line["actor_key_id"], line["object_type"]) == (
        "api_key.create", "command_line", "command_line", None, "api_key")
    assert (line["detail"]["scope"], line["detail"]["label"]) == ("operator", "payroll bot")
    assert line["object_id"].isdigit() and isinstance(line["audit_event_id"], int)
    assert token.startswith("wp_") and token not in json.dumps(line)


def test_every_audited_action_logs_its_event_once_committed_and_a_rolled_back_one_logs_nothing(
        services, clean_database, caplog):
    key_id = find_api_key(services.uow(), create_api_key(services.uow(), "admin")).id
    caplog.set_level(logging.INFO, logger="wallet.action")
    caplog.clear()
    actor = Actor("api_key", key_id)

    with services.uow() as uow:
        audit.record(uow, actor, "hold.capture", "hold", "h-1", amount=500)
        assert action_lines(caplog) == []  # not before the commit
        uow.commit()
    with services.uow() as uow:
        audit.record(uow, actor, "hold.void", "hold", "h-2")  # rolled back: no commit

    [line] = action_lines(caplog)
    assert (line["action"], line["actor"], line["object_type"], line["object_id"], line["detail"]) == (
        "hold.capture", f"api_key:{key_id}", "hold", "h-1", {"amount": 500})


def test_an_action_that_is_refused_logs_nothing(services, app, queue, clean_database, caplog):
    operator = client_for(app, services, queue, "operator", approval="none")
    caplog.set_level(logging.INFO, logger="wallet.action")
    caplog.clear()  # the keys made above

    refused = operator.post(f"{URL}/retry", json={"activity_id": "00000000-0000-4000-8000-000000000000"})

    assert refused.status_code == 404 and action_lines(caplog) == []
