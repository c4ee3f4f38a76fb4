"""`funding list|show|top-up` on the real database: a top-up moves money once per idempotency
key, shares the API's idempotency records, needs an admin key, and refuses bad input in one line."""
from __future__ import annotations

import json

from pipeline.users import create_api_key
from tests.test_bulk_pipeline import query

TOP_UP = "/api/v1/funding-accounts/ops/top-up"


def test_a_top_up_moves_money_once_per_key_and_replays_the_apis_answer(app, services, clean_database):
    admin = create_api_key(services.uow(), "admin")
    runner = app.test_cli_runner()
    args = ["funding", "top-up", "ops", "--amount", "250.00", "--currency", "SGD", "--idempotency-key", "k-1",
            "--token", admin]

    first, again = runner.invoke(args=args), runner.invoke(args=args)
    other = runner.invoke(args=[*args[:4], "300.00", *args[5:]])
    over_http = app.test_client().post(TOP_UP, json={"amount": "250.00", "currency": "SGD"},
                                       headers={"Authorization": f"Bearer {admin}", "Idempotency-Key": "k-1"})
    shown = runner.invoke(args=["funding", "show", "ops"])
    listed = runner.invoke(args=["funding", "list"])

    assert first.exit_code == 0, first.output
    receipt = json.loads(first.stdout)
    assert (receipt["kind"], receipt["funding_account"], receipt["amount"], receipt["balance_after"]) == (
        "funding_top_up", "ops", "250.00", "250.00")
    assert again.exit_code == 0 and json.loads(again.stdout) == receipt and "replayed" in again.stderr
    assert other.exit_code == 1 and "idempotency_key_reused" in other.output
    assert over_http.status_code == 201 and over_http.json == receipt
    assert over_http.headers["Idempotency-Replayed"] == "true"
    assert json.loads(shown.stdout)["balances"] == [{"currency": "SGD", "balance": "250.00", "reserved": "0.00"}]
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == ["default", "ops"]
    assert query(services.engine, "SELECT count(*), sum(amount) FROM journal_entries WHERE kind = 'funding_top_up'") == [
        (1, 25000)]


def test_a_top_up_needs_an_admin_key_and_refuses_bad_input_in_one_line(app, services, clean_database):
    operator, admin = create_api_key(services.uow(), "operator"), create_api_key(services.uow(), "admin")
    runner = app.test_cli_runner()
    base = ["funding", "top-up", "ops", "--idempotency-key", "k"]

    cases = {
        "no token": runner.invoke(args=[*base, "--amount", "1.00"]),
        "operator": runner.invoke(args=[*base, "--amount", "1.00", "--token", operator]),
        "bad amount": runner.invoke(args=[*base, "--amount", "1.001", "--token", admin]),
        "negative": runner.invoke(args=[*base, "--amount", "-5.00", "--token", admin]),
        "bad currency": runner.invoke(args=[*base, "--amount", "1.00", "--currency", "XXX", "--token", admin]),
        "bad name": runner.invoke(args=["funding", "top-up", "Ops!", "--idempotency-key", "k", "--amount", "1.00",
                                        "--token", admin]),
        "unknown account": runner.invoke(args=["funding", "show", "nobody"]),
    }

    assert cases["no token"].exit_code == 2 and "admin API key" in cases["no token"].output
    assert cases["operator"].exit_code == 1 and "forbidden" in cases["operator"].output
    for name in ("bad amount", "negative", "bad currency", "bad name", "unknown account"):
        assert cases[name].exit_code == 1, (name, cases[name].output)
        assert "Traceback" not in cases[name].output and cases[name].exception.__class__ is SystemExit, name
    assert "amount" in cases["bad amount"].output and "currency" in cases["bad currency"].output
    assert "not_found" in cases["unknown account"].output or "no funding account" in cases["unknown account"].output
    assert query(services.engine, "SELECT count(*) FROM journal_entries") == [(0,)]
