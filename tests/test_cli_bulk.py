"""The bulk-credit command line a script can trust: `upload --wait` exits 0 only for
COMPLETED, 2 for PARTIALLY_COMPLETED, 1 otherwise (real workers), and maker-checker holds
on the command line too: approve and reject need an approver's key, never the uploader's."""
from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import uuid
from pathlib import Path

from sqlalchemy.engine import make_url

from pipeline.users import create_api_key
from tests.conftest import test_environ
from pipeline.bulk import reads
from tests.test_bulk_pipeline import apply_all, balances, query, seed_users

ROOT = Path(__file__).resolve().parent.parent


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

    assert whole.exit_code == 0, (whole.output, whole.exception)
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


def approving_always(app, services):
    """The app's services on the same engine, with every file held for approval."""
    configured = copy.copy(services)
    configured.settings = dataclasses.replace(services.settings, bulk_credit_approval="always")
    app.extensions["wallet"] = configured


def actors_of(engine, action: str, activity_id: str) -> list[tuple]:
    return query(engine, "SELECT actor_type, api_key_id FROM audit_events WHERE action = :action"
                 " AND object_id = :id ORDER BY id", action=action, id=activity_id)


def test_an_upload_from_the_command_line_keeps_the_files_name_not_its_local_path(
        app, services, tmp_path, clean_database):
    """Like the HTTP upload's multipart filename: the name an operator searches for, not where
    the file sat on one machine (which also told every reader the operator's home folder)."""
    [user] = seed_users(services, 1)
    (tmp_path / "payroll").mkdir()
    uploaded = app.test_cli_runner().invoke(
        args=["bulk-credit", "upload", write(tmp_path / "payroll", "march.csv", [f"{user},1.00"])])

    assert uploaded.exit_code == 0, uploaded.output
    activity_id = json.loads(uploaded.stdout)["activity_id"]
    assert json.loads(uploaded.stdout)["file_name"] == "march.csv"
    assert reads.activity(services.uow(), activity_id).file_name == "march.csv"
    [(detail,)] = query(services.engine, "SELECT detail FROM audit_events WHERE action = 'bulk_credit.upload'")
    assert detail["file_name"] == "march.csv"


def test_cancel_with_a_token_names_the_key_in_the_history_and_the_audit_trail_and_without_one_the_command_line(
        app, services, tmp_path, clean_database):
    users = seed_users(services, 2)
    approving_always(app, services)
    operator, approver = create_api_key(services.uow(), "operator"), create_api_key(services.uow(), "approver")
    [operator_id] = [key_id for (key_id,) in query(services.engine, "SELECT id FROM api_keys WHERE scope = 'operator'")]
    runner = app.test_cli_runner()
    files = [json.loads(runner.invoke(args=["bulk-credit", "upload", write(tmp_path, f"{n}.csv", [f"{user},1.00"])])
                        .stdout)["activity_id"] for n, user in enumerate(users)]

    forbidden = runner.invoke(args=["bulk-credit", "cancel", files[0], "--reason", "no", "--token", approver])
    forged = runner.invoke(args=["bulk-credit", "cancel", files[0], "--reason", "no", "--token", "wp_nope"])
    keyed = runner.invoke(args=["bulk-credit", "cancel", files[0], "--reason", "wrong month"],
                          env={"WALLET_TOKEN": operator})
    anonymous = runner.invoke(args=["bulk-credit", "cancel", files[1], "--reason", "duplicate"])

    assert forbidden.exit_code == 1 and "forbidden" in forbidden.output  # as over HTTP: an operator's or admin's
    assert forged.exit_code == 1 and "not a valid API key" in forged.output
    assert keyed.exit_code == 0, keyed.output
    assert anonymous.exit_code == 0, anonymous.output
    assert [json.loads(r.stdout)["status"] for r in (keyed, anonymous)] == ["CANCELLED", "CANCELLED"]
    assert actors_of(services.engine, "bulk_credit.cancel", files[0]) == [("api_key", operator_id)]
    assert actors_of(services.engine, "bulk_credit.cancel", files[1]) == [("command_line", None)]
    for activity_id, actor in ((files[0], ("api_key", operator_id)), (files[1], ("command_line", None))):
        [*_, last] = reads.history_page(services.uow(), activity_id, 100, None).items
        assert (last["to_status"], last["actor_type"], last["api_key_id"]) == ("CANCELLED", *actor)


def test_retry_with_a_token_names_the_key_in_the_audit_trail(app, services, tmp_path, clean_database):
    users = seed_users(services, 2)
    operator = create_api_key(services.uow(), "operator")
    [operator_id] = [key_id for (key_id,) in query(services.engine, "SELECT id FROM api_keys")]
    runner = app.test_cli_runner()
    uploaded = runner.invoke(args=["bulk-credit", "upload", write(tmp_path, "a.csv", [f"{u},1.00" for u in users])])
    activity_id = json.loads(uploaded.stdout)["activity_id"]
    faulty = dataclasses.replace(services.settings, bulk_credit_fail_user_ids=frozenset({users[0]}))
    apply_all(services, faulty, [chunk_id for (chunk_id,) in query(services.engine, "SELECT id FROM bulk_chunks")])

    retried = runner.invoke(args=["bulk-credit", "retry", activity_id, "--no-wait", "--token", operator])

    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["pending_records"] == 1
    assert actors_of(services.engine, "bulk_credit.retry", activity_id) == [("api_key", operator_id)]


def flask_command(*args: str, cwd=ROOT, **environ: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in test_environ().items() if name not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run([str(ROOT / ".venv/bin/flask"), "--app", str(ROOT / "api.py"), *args], cwd=cwd,
                          env={**env, **environ}, capture_output=True, text=True, timeout=120)


def test_an_unreachable_database_or_redis_is_one_line_naming_it(services, tmp_path, clean_database):
    down = flask_command("keys", "list", DATABASE_URL="postgresql+psycopg://wallet:secret@127.0.0.1:1/wallet",
                         REDIS_URL=services.settings.redis_url)
    file = tmp_path / "a.csv"
    file.write_text(f"uuid,amount\n{uuid.uuid4()},1.00\n")
    redis_down = flask_command("bulk-credit", "upload", str(file), DATABASE_URL=services.settings.database_url,
                               REDIS_URL="redis://127.0.0.1:1/0")

    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert down.stderr.splitlines()[-1].startswith("Error: cannot reach PostgreSQL at 127.0.0.1:1 (DATABASE_URL)")
    assert "secret" not in down.stderr  # the password is never printed
    assert redis_down.returncode == 1 and "Traceback" not in redis_down.stderr
    assert redis_down.stderr.splitlines()[-1].startswith("Error: cannot reach Redis at redis://127.0.0.1:1/0")
    with clean_database.connect() as connection:  # refused before anything was written
        assert connection.exec_driver_sql("SELECT count(*) FROM bulk_activities").scalar_one() == 0


def test_the_command_line_reads_flaskenv_and_says_which_database_it_uses(services, tmp_path, clean_database):
    (tmp_path / ".flaskenv").write_text(f"DATABASE_URL={services.settings.database_url}\n"
                                        f"REDIS_URL={services.settings.redis_url}\n")
    listed = flask_command("keys", "list", cwd=tmp_path)
    unset = flask_command("keys", "list", cwd=tmp_path / "..", DATABASE_URL="postgresql+psycopg://wallet@127.0.0.1:1/x")

    assert listed.returncode == 0, listed.stderr
    shown = make_url(services.settings.database_url).render_as_string(hide_password=True)
    assert f"database {shown} (from the environment or .flaskenv)" in listed.stderr
    assert listed.stdout.startswith("id\tscope")
    assert "redis redis://127.0.0.1:63799/0 (the default: REDIS_URL is not set)" in unset.stderr or (
        "REDIS_URL is not set" in unset.stderr)


def test_a_malformed_setting_or_an_unmigrated_database_is_one_line(services, clean_database):
    for url in ("postgres://wallet@127.0.0.1:1/wallet", "notaurl"):
        wrong = flask_command("keys", "list", DATABASE_URL=url, REDIS_URL=services.settings.redis_url)
        assert wrong.returncode == 1 and "Traceback" not in wrong.stderr, wrong.stderr
        assert wrong.stderr.strip().splitlines()[-1].startswith("wallet-pipeline: a setting is wrong:")
    fee = flask_command("keys", "list", DATABASE_URL=services.settings.database_url, TRANSFER_FEE_BPS="-4")
    assert fee.returncode == 1 and "TRANSFER_FEE_BPS" in fee.stderr and "Traceback" not in fee.stderr
    with services.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("DROP DATABASE IF EXISTS wallet_unmigrated")
        connection.exec_driver_sql("CREATE DATABASE wallet_unmigrated")
    bare = make_url(services.settings.database_url).set(database="wallet_unmigrated")
    unmigrated = flask_command("keys", "list", DATABASE_URL=bare.render_as_string(hide_password=False))
    assert unmigrated.returncode == 1 and "Traceback" not in unmigrated.stderr
    assert "is not migrated to this version" in unmigrated.stderr.splitlines()[-1]


def test_making_many_apps_wraps_each_command_once(services):
    """Every app made registers the same command objects: wrapping them again each time grew a
    chain of wrappers until a long test session hit RecursionError."""
    from api import create_app
    from cli.keys import keys

    for _ in range(5):
        create_app(services.settings)
    callback, wrappers = keys.commands["list"].callback, 0
    while callback is not None:
        wrappers += bool(getattr(callback, "plainly", False))
        callback = getattr(callback, "__wrapped__", None)
    assert wrappers == 1


def test_mistakes_on_the_command_line_are_one_line_and_move_nothing(app, services, tmp_path, clean_database):
    """From a break-it pass: an empty --reason cancelled and reversed (the API refuses it), a row
    number past integer and a --csv or --out into a missing folder printed tracebacks, and a label
    with a tab or newline broke `keys list`'s table."""
    users = seed_users(services, 2)
    runner = app.test_cli_runner()
    uploaded = runner.invoke(args=["bulk-credit", "upload", write(tmp_path, "a.csv", [f"{u},1.00" for u in users])])
    activity_id = json.loads(uploaded.stdout)["activity_id"]
    apply_all(services, services.settings, [chunk_id for (chunk_id,) in query(services.engine, "SELECT id FROM bulk_chunks")])
    (tmp_path / "file").write_text("x")

    answers = {
        "cancel": runner.invoke(args=["bulk-credit", "cancel", activity_id, "--reason", "  "]),
        "reverse": runner.invoke(args=["bulk-credit", "reverse", activity_id, "--reason", "", "--row", "2"]),
        "row": runner.invoke(args=["bulk-credit", "reverse", activity_id, "--reason", "x", "--row", "3000000000"]),
        "csv": runner.invoke(args=["reconcile", "--csv", str(tmp_path / "missing" / "x.csv")]),
        "csv name": runner.invoke(args=["reconcile", "--csv", str(tmp_path / ("x" * 300 + ".csv"))]),
        "out": runner.invoke(args=["users", "seed-and-export", "--total", "1", "--out", str(tmp_path / "file" / "x.csv")]),
        "label": runner.invoke(args=["keys", "create", "--scope", "operator", "--label", "a\tb\nc"]),
    }

    for name, answer in answers.items():
        assert answer.exit_code in (1, 2) and "Traceback" not in answer.output, (name, answer.output)
        assert isinstance(answer.exception, SystemExit), (name, answer.exception)
    assert answers["csv"].exit_code == answers["csv name"].exit_code == 2  # not 1, which says "mismatch" to a script
    written = runner.invoke(args=["reconcile", "--csv", str(tmp_path / "ok.csv")])
    assert written.exit_code == 0 and (tmp_path / "ok.csv").read_text().splitlines() == ["wallet,kind,expected,actual"]
    assert "reason" in answers["cancel"].output and "row_numbers" in answers["row"].output
    assert "tab" in answers["label"].output
    assert query(services.engine, "SELECT status FROM bulk_activities") == [("COMPLETED",)]
    assert query(services.engine, "SELECT count(*) FROM users") == [(2,)]
    assert query(services.engine, "SELECT count(*) FROM api_keys") == [(0,)]
