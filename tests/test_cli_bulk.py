"""The bulk-credit command line a script can trust: `upload --wait` exits 0 only for
COMPLETED, 2 for PARTIALLY_COMPLETED, 1 otherwise (real workers), and maker-checker holds
on the command line too: approve and reject need an approver's key, never the uploader's."""
from __future__ import annotations

import copy
import dataclasses
import json

from pipeline.users import create_api_key
from tests.test_bulk_pipeline import balances, seed_users


def write(tmp_path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("uuid,amount\n" + "".join(f"{line}\n" for line in lines))
    return str(path)


def test_upload_wait_exits_0_2_or_1_by_how_the_file_came_out(app, services, tmp_path, workers, clean_database):
    users = seed_users(services, 3)
    workers(1, BULK_CREDIT_FAIL_USER_IDS=users[2], RETRY_MAX_ATTEMPTS="1")
    runner = app.test_cli_runner()

    whole = runner.invoke(args=["bulk-credit", "upload", "--wait", write(tmp_path, "a.csv", [f"{users[0]},1.00"])])
    partial = runner.invoke(args=["bulk-credit", "upload", "--wait",
                                  write(tmp_path, "b.csv", [f"{users[1]},2.00", f"{users[2]},3.00"])])
    failed = runner.invoke(args=["bulk-credit", "upload", "--wait", write(tmp_path, "c.csv", [f"{users[2]},4.00"])])

    assert (whole.exit_code, json.loads(whole.stdout)["status"]) == (0, "COMPLETED")
    assert (partial.exit_code, json.loads(partial.stdout)["status"]) == (2, "PARTIALLY_COMPLETED")
    assert (failed.exit_code, json.loads(failed.stdout)["status"]) == (1, "FAILED")
    assert balances(services.engine) == {users[0]: 100, users[1]: 200}


def test_approve_and_reject_need_an_approvers_key_other_than_the_uploaders(app, services, tmp_path, clean_database):
    users = seed_users(services, 2)
    configured = copy.copy(services)  # the same engine, approval always
    configured.settings = dataclasses.replace(services.settings, bulk_credit_approval="always")
    app.extensions["wallet"] = configured
    maker, checker = create_api_key(services.uow(), "operator"), create_api_key(services.uow(), "approver")
    admin = create_api_key(services.uow(), "admin")
    runner = app.test_cli_runner()
    uploaded = runner.invoke(args=["bulk-credit", "upload", "--token", maker,
                                   write(tmp_path, "a.csv", [f"{users[0]},1.00"])])
    activity_id = json.loads(uploaded.stdout)["activity_id"]
    assert json.loads(uploaded.stdout)["status"] == "AWAITING_APPROVAL"

    anonymous = runner.invoke(args=["bulk-credit", "approve", activity_id])
    own = runner.invoke(args=["bulk-credit", "approve", activity_id], env={"WALLET_TOKEN": maker})
    forged = runner.invoke(args=["bulk-credit", "approve", activity_id, "--token", "wp_nope"])
    approved = runner.invoke(args=["bulk-credit", "approve", activity_id, "--token", checker])

    assert anonymous.exit_code == 1 and "approver's API key" in anonymous.output
    assert own.exit_code == 1 and "forbidden" in own.output  # an operator's key approves nothing
    assert forged.exit_code == 1 and "not a valid API key" in forged.output
    assert approved.exit_code == 0, approved.output
    assert json.loads(approved.stdout)["approved_by"] != json.loads(uploaded.stdout)["uploaded_by"]

    second = json.loads(runner.invoke(args=["bulk-credit", "upload", "--token", admin, write(
        tmp_path, "b.csv", [f"{users[1]},2.00"])]).stdout)["activity_id"]
    same = runner.invoke(args=["bulk-credit", "approve", second, "--token", admin])
    rejected = runner.invoke(args=["bulk-credit", "reject", second, "--reason", "wrong month", "--token", checker])
    assert same.exit_code == 1 and "same_approver" in same.output
    assert rejected.exit_code == 0 and json.loads(rejected.stdout)["status"] == "REJECTED"
