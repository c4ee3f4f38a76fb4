"""Findings of the break-it pass on issue 10 (reversals, holds, lifecycle, webhooks, audit), each a
test that fails on the code it was found on: what API.md and issue 10 lead an operator to expect.

The money-moving bodies added by issue 10 ignore fields they do not know. Where a missing field
means "everything" (a bulk reversal's rows, a capture's amount) or "to bank" (a capture's payee),
a misspelt field silently moves more money, or moves it out of the ledger, instead of being refused.
"""
from __future__ import annotations

from tests.test_bulk_reversal import credited, reverse, rows
from tests.test_bulk_pipeline import seed_users
from tests.test_holds import admin, balance, funded, hold  # noqa: F401  (admin is a fixture)

URL = "/api/v1/wallet/bulk-credit"


def test_a_misspelt_row_numbers_field_is_refused_rather_than_reversing_the_whole_file(
        services, queued_http, queue, engine):
    """An operator means to reverse row 2 and types `row_number`. Today: 202 and every SUCCESS
    row of the credit is reversed (the default when no rows are named)."""
    users = seed_users(services, 3)
    credit_id = credited(services, queued_http, queue,
                         [f"{users[0]},10.00,a", f"{users[1]},20.00,b", f"{users[2]},5.00,c"])

    answer = reverse(queued_http, credit_id, key="typo", row_number=[2])

    assert answer.status_code == 422, answer.json
    assert all(row["reversed_by"] is None for row in rows(queued_http, credit_id).values())


def test_a_misspelt_references_field_is_refused_rather_than_reversing_the_whole_file(
        services, queued_http, queue, engine):
    users = seed_users(services, 2)
    credit_id = credited(services, queued_http, queue, [f"{users[0]},10.00,a", f"{users[1]},20.00,b"])

    answer = reverse(queued_http, credit_id, key="typo-ref", reference=["a"])

    assert answer.status_code == 422, answer.json


def test_a_misspelt_capture_amount_is_refused_rather_than_capturing_the_whole_hold(admin):  # noqa: F811
    """`{"amout": "1.00"}` on a 5.00 hold: today 201, all 5.00 captured, nothing released."""
    payer, payee = funded(admin), admin.user()["id"]
    held = hold(admin, payer, "5.00", key="h-typo").get_json()

    answer = admin.post(f"/api/v1/wallet/holds/{held['id']}/capture", {"amout": "1.00", "to_user_id": payee},
                        key="c-typo")

    assert answer.status_code == 422, answer.get_json()
    assert balance(admin, payer) == {"balance": "100.00", "held": "5.00", "available": "95.00"}


def test_a_misspelt_capture_payee_is_refused_rather_than_paying_the_hold_out_to_bank(admin):  # noqa: F811
    """`{"to_user": ...}` instead of `to_user_id`: today 201, a `withdrawal` to bank, the
    intended payee gets nothing and the money has left the ledger."""
    payer, payee = funded(admin), admin.user()["id"]
    held = hold(admin, payer, "2.00", key="h-typo2").get_json()

    answer = admin.post(f"/api/v1/wallet/holds/{held['id']}/capture", {"to_user": payee}, key="c-typo2")

    assert answer.status_code == 422, answer.get_json()
