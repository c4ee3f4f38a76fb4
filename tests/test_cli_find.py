"""Finding without ids on the command line (issue 11, "done when"): an activity by a part of its
file name, a user by email, a transaction by reference, each a JSON object per line, paged with
--cursor, and a bad filter refused in one line. Real PostgreSQL."""
from __future__ import annotations

import json

from pipeline import wallets
from pipeline.money import MINOR_UNITS, Currency
from pipeline.users import create_user
from tests.test_bulk_pipeline import seed_users
from tests.test_cli_bulk import write


def lines(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_a_newcomer_finds_an_activity_a_user_and_a_transaction_from_the_command_line(app, services, tmp_path,
                                                                                      clean_database):
    runner = app.test_cli_runner()
    ana = create_user(services.uow(), "Ana", "ana@example.com", "crm-42")
    payees = seed_users(services, 2)
    for name, payee in (("payroll-2026-11.csv", payees[0]), ("rewards.csv", payees[1])):
        runner.invoke(args=["bulk-credit", "upload", write(tmp_path, name, [f"{payee},1.00"])])
    with services.uow() as uow:
        wallets.deposit(uow, services.settings, ana.id,
                        wallets.MoneyRequest(Currency("SGD", MINOR_UNITS["SGD"]), 123450, "inv-42"))
        uow.commit()

    activities = lines(runner.invoke(args=["bulk-credit", "list", "--file-name", "PAYROLL"]))
    found_users = lines(runner.invoke(args=["users", "find", "--email", "ANA@example.com"]))
    entries = lines(runner.invoke(args=["transactions", "list", "--reference", "inv-42"]))
    first = runner.invoke(args=["bulk-credit", "list", "--limit", "1"])
    cursor = first.stderr.split("--cursor ")[1].strip()
    second = lines(runner.invoke(args=["bulk-credit", "list", "--limit", "1", "--cursor", cursor]))

    assert [a["file_name"] for a in activities] == ["payroll-2026-11.csv"]
    assert [u["id"] for u in found_users] == [ana.id]
    assert [(e["kind"], e["amount"], e["to_user_id"]) for e in entries] == [("deposit", "1234.50", ana.id)]
    assert [a["file_name"] for a in lines(first) + second] == ["rewards.csv", "payroll-2026-11.csv"]


def test_a_bad_filter_is_one_line_naming_it(app, clean_database):
    runner = app.test_cli_runner()
    for args, field in ((["transactions", "list", "--kind", "nope"], "kind"),
                        (["bulk-credit", "list", "--created-after", "yesterday"], "created_after"),
                        (["users", "find", "--limit", "0"], "limit"),
                        (["bulk-credit", "list", "--cursor", "junk"], "cursor")):
        result = runner.invoke(args=args)
        assert result.exit_code == 1 and field in result.output and "Traceback" not in result.output, (args, result.output)
