"""Reproductions from a break-it session on issue 9 (payout controls). Each test states what
API.md / issue 9 lead an operator to expect; each FAILS on the code it was written against.
They reproduce findings; they fix nothing."""
from __future__ import annotations

import io

import cli_bulk
from pipeline.bulk import reads
from tests.test_approval import client_for, upload_file
from tests.test_bulk_pipeline import RecordingQueue, apply_all, fund, query, seed_users

URL = "/api/v1/wallet/bulk-credit"


def stored_activities(engine) -> int:
    return query(engine, "SELECT count(*) FROM bulk_activities")[0][0]


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
