"""Findings of the break-it pass on issue 9's payout controls, each a test that failed on the
code it was found on: what API.md and issue 9 lead an operator to expect."""
from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest

from cli import bulk_credit as cli_bulk
from pipeline.bulk import reads
from tests.test_approval import client_for, upload_file
from tests.test_bulk_pipeline import RecordingQueue, apply_all, fund, query, seed_users

URL = "/api/v1/wallet/bulk-credit"


def stored_activities(engine) -> int:
    return query(engine, "SELECT count(*) FROM bulk_activities")[0][0]


@pytest.mark.parametrize("field, value", [("dry_run", ""), ("dry_run", " "), ("dry_run", "1"), ("dry_run", "TRUE"),
                                          ("allow_duplicate_content", ""), ("execute_at", ""), ("execute_at", "  ")])
def test_a_blank_or_loose_option_is_refused_and_never_pays_the_file(services, app, engine, clean_database, field,
                                                                     value):
    queue = RecordingQueue()
    client = client_for(app, services, queue, "operator", approval="none")
    [user] = seed_users(services, 1)

    answer = upload_file(client, f"uuid,amount\n{user},1.00\n", **{field: value})

    assert answer.status_code == 422 and answer.json["errors"][0]["field"] == field
    assert stored_activities(engine) == 0 and queue.take() == []


def test_an_empty_dry_run_field_never_pays_the_file(services, app, engine, clean_database):
    """README: an unknown form field is refused 'so a misspelt dryrun never pays a file';
    OpenAPI: dry_run is enum ["true", "false"]. A script sending `-F dry_run=$DRY` with DRY
    unset sends dry_run="" and must not pay. Today: 202, the file is stored and paid."""
    queue = RecordingQueue()
    client = client_for(app, services, queue, "operator", approval="none")
    [user] = seed_users(services, 1)
    before = stored_activities(engine)

    answer = upload_file(client, f"uuid,amount\n{user},1.00\n", dry_run="")

    assert answer.status_code in (200, 422), answer.json
    assert stored_activities(engine) == before
    assert queue.take() == []


def test_a_rejected_file_can_be_corrected_and_sent_again_with_its_own_references(services, app, engine,
                                                                                  clean_database):
    """A rejected file moves nothing (API.md, reject). Its rows were never paid, so the
    corrected file, keeping the sender's own row ids, must be payable. Today every row of the
    corrected file is INVALID duplicate_reference, naming the REJECTED activity."""
    queue = RecordingQueue()
    maker = client_for(app, services, queue, "operator", approval="always")
    checker = client_for(app, services, queue, "approver", approval="always")
    users = seed_users(services, 2)
    wrong = upload_file(maker, f"uuid,amount,reference\n{users[0]},600.00,INV-1\n{users[1]},600.00,INV-2\n")
    activity_id = wrong.json["activity_id"]
    assert checker.post(f"{URL}/{activity_id}/reject", json={"reason": "amounts wrong"}).status_code == 200

    corrected = upload_file(maker, f"uuid,amount,reference\n{users[0]},500.00,INV-1\n{users[1]},500.00,INV-2\n")

    activity = checker.get(f"{URL}/{corrected.json['activity_id']}").json
    assert (activity["valid_records"], activity["invalid_records"]) == (2, 0), checker.get(
        f"{URL}/{corrected.json['activity_id']}/rows").json["data"][0]["error_message"]


def test_the_same_rows_sent_to_another_funding_account_are_not_answered_with_the_other_accounts_activity(
        services, app, engine, clean_database):
    """References are unique per funding account (API.md, Duplicates), and an Idempotency-Key
    replay with another funding account is refused 422. Today the duplicate-file check ignores
    the account: an upload naming `ops` answers 200 with the activity paid by `default`."""
    queue = RecordingQueue()
    client = client_for(app, services, queue, "admin", approval="none")
    [user] = seed_users(services, 1)
    fund(services, "SGD", 10_000, account="ops")
    content = f"uuid,amount,reference\n{user},1.00,R-1\n"
    first = upload_file(client, content).json["activity_id"]
    apply_all(services, services.settings, queue.take())

    second = upload_file(client, content, funding_account="ops")

    assert second.status_code in (202, 422) or second.json.get("funding_account") == "ops", (
        second.status_code, second.json.get("activity_id") == first, second.json.get("funding_account"))


def test_upload_wait_stops_waiting_once_the_file_is_rejected_or_cancelled(services, app, engine, clean_database):
    """API.md: `--wait` exits 0 for COMPLETED, 2 for PARTIALLY_COMPLETED, 1 for anything else.
    A REJECTED or CANCELLED activity will never change again, yet `_settled` says no, so
    `bulk-credit upload --wait` keeps polling for WAIT_S_MAX (an hour) before exiting."""
    queue = RecordingQueue()
    maker = client_for(app, services, queue, "operator", approval="always")
    checker = client_for(app, services, queue, "approver", approval="always")
    [user] = seed_users(services, 1)
    activity_id = upload_file(maker, f"uuid,amount\n{user},1.00\n").json["activity_id"]
    assert checker.post(f"{URL}/{activity_id}/reject", json={"reason": "no"}).status_code == 200

    rejected = reads.activity(services.uow(), activity_id)

    assert rejected.status == "REJECTED" and rejected.final
    assert cli_bulk._settled(rejected)


def test_a_currency_without_a_threshold_waits_for_approval_and_a_threshold_list_is_checked(
        services, app, clean_database):
    from pipeline.bulk.approval import ApprovalPolicy

    policy = ApprovalPolicy.parse("SGD:1000.00")
    assert policy.needs_approval({"USD": 1}) and not policy.needs_approval({"SGD": 99_999})
    assert policy.needs_approval({"SGD": 100_000}) and not ApprovalPolicy.parse("none").needs_approval({"USD": 10**9})
    with pytest.raises(ValueError, match="two thresholds"):
        ApprovalPolicy.parse("SGD:1000,SGD:5")
    queue = RecordingQueue()
    maker = client_for(app, services, queue, "operator", approval="SGD:1000.00")
    [user] = seed_users(services, 1)
    waiting = upload_file(maker, f"uuid,amount,currency\n{user},1.00,USD\n").json["activity_id"]
    assert maker.get(f"{URL}/{waiting}").json["status"] == "AWAITING_APPROVAL" and queue.take() == []


def test_an_unsupported_currency_in_the_thresholds_is_a_setting_error():
    import dataclasses

    from pipeline.config import Settings

    with pytest.raises(AssertionError, match="unsupported currencies"):
        dataclasses.replace(Settings(), bulk_credit_approval="EUR:10").check()


def test_a_revoked_approver_key_approves_nothing_even_while_a_process_still_trusts_it(services, app, clean_database):
    from pipeline.users import revoke_api_key

    queue = RecordingQueue()
    maker = client_for(app, services, queue, "operator", approval="always")
    checker = client_for(app, services, queue, "approver", approval="always")
    [user] = seed_users(services, 1)
    activity_id = upload_file(maker, f"uuid,amount\n{user},1.00\n").json["activity_id"]
    assert checker.get(f"{URL}/{activity_id}").status_code == 200  # its token is now in the cache
    key_id = query(engine_of(services), "SELECT id FROM api_keys WHERE scope = 'approver'")[0][0]
    revoke_api_key(services.uow(), key_id)

    refused = checker.post(f"{URL}/{activity_id}/approve")

    assert (refused.status_code, refused.json["code"]) == (401, "unauthenticated")
    assert maker.get(f"{URL}/{activity_id}").json["status"] == "AWAITING_APPROVAL" and queue.take() == []


def engine_of(services):
    return services.engine


def test_the_same_idempotency_key_with_another_execute_at_is_refused(services, app, clean_database):
    queue = RecordingQueue()
    client = client_for(app, services, queue, "operator", approval="none")
    [user] = seed_users(services, 1)
    content = f"uuid,amount\n{user},1.00\n"
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    first = client.post(URL, data={"file": (io.BytesIO(content.encode()), "a.csv"), "execute_at": tomorrow},
                        headers={"Idempotency-Key": "k-1"}, content_type="multipart/form-data")
    now = client.post(URL, data={"file": (io.BytesIO(content.encode()), "a.csv")}, headers={"Idempotency-Key": "k-1"},
                      content_type="multipart/form-data")
    assert first.status_code == 202 and first.json["status"] == "accepted"
    assert (now.status_code, now.json["code"]) == (422, "idempotency_key_reused")


def test_a_rejected_file_with_the_same_rows_is_sent_again_only_on_purpose_and_then_pays(services, app, engine,
                                                                                      clean_database):
    queue = RecordingQueue()
    maker = client_for(app, services, queue, "operator", approval="always")
    checker = client_for(app, services, queue, "approver", approval="always")
    [user] = seed_users(services, 1)
    content = f"uuid,amount,reference\n{user},2.00,INV-9\n"
    rejected = upload_file(maker, content).json["activity_id"]
    checker.post(f"{URL}/{rejected}/reject", json={"reason": "by mistake"})

    same = upload_file(maker, content)
    again = upload_file(maker, content, allow_duplicate_content="true")

    assert (same.status_code, same.json["activity_id"]) == (200, rejected)
    activity = checker.get(f"{URL}/{again.json['activity_id']}").json
    assert (again.status_code, activity["valid_records"], activity["invalid_records"]) == (202, 1, 0)
