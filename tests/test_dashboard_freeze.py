"""Freezing and unfreezing a wallet from a user's dashboard page (admin keys), through Flask's
test client on the real PostgreSQL: the API's use case (pipeline/lifecycle.py), one audit
event with the admin's key, refusals with their code, no button and a 403 for other keys."""
from __future__ import annotations

import re

import pytest

from pipeline import wallets
from pipeline.errors import Rejected
from pipeline.users import create_user
from tests.test_bulk_pipeline import query
from tests.test_bulk_reversal import move
from tests.test_dashboard import csrf_of
from tests.test_dashboard_payouts import dashboard, flashes, text_of  # noqa: F401 (a fixture)


def set_frozen(client, user_id: str, action: str, reason: str = "fraud check", code: str = "SGD"):
    return client.post(f"/dashboard/users/{user_id}/wallets/{code}/{action}",
                       data={"csrf_token": csrf_of(client), "reason": reason}, follow_redirects=True)


def test_an_admin_freezes_a_wallet_with_a_reason_and_it_takes_no_money_until_unfrozen(services, dashboard, engine):
    admin, admin_key = dashboard("admin")
    user = create_user(services.uow(), "Fay", "fay@example.com")
    move(services, wallets.deposit, user.id, 1_500_00)
    page = admin.get(f"/dashboard/users/{user.id}")
    assert 'id="freeze-SGD"' in page.text and "1,500.00" in text_of(page.text)

    frozen = set_frozen(admin, user.id, "freeze")

    assert "The SGD wallet is frozen" in flashes(frozen) and 'id="unfreeze-SGD"' in frozen.text
    assert re.search(r'badge frozen">frozen<', frozen.text)
    with pytest.raises(Rejected) as refused:
        move(services, wallets.deposit, user.id, 1_00)
    assert refused.value.code == "wallet_frozen"
    again = set_frozen(admin, user.id, "freeze")  # a stale form, or a second tab
    assert "Nothing was frozen:" in flashes(again) and "[invalid_state]" in flashes(again)

    unfrozen = set_frozen(admin, user.id, "unfreeze", reason="cleared")
    assert "The SGD wallet is unfrozen" in flashes(unfrozen) and 'id="freeze-SGD"' in unfrozen.text
    move(services, wallets.deposit, user.id, 1_00)
    assert query(engine, "SELECT action, api_key_id, detail->>'reason' FROM audit_events"
                         " WHERE action LIKE 'wallet.%' ORDER BY id") == [
        ("wallet.freeze", admin_key, "fraud check"), ("wallet.unfreeze", admin_key, "cleared")]


def test_a_freeze_without_a_reason_or_of_a_wallet_that_does_not_exist_says_why(services, dashboard, engine):
    admin, _ = dashboard("admin")
    user = create_user(services.uow(), "Gil", "gil@example.com")
    move(services, wallets.deposit, user.id, 1_00)

    blank = flashes(set_frozen(admin, user.id, "freeze", reason="  "))
    no_wallet = flashes(set_frozen(admin, user.id, "freeze", code="JPY"))
    bad_currency = flashes(set_frozen(admin, user.id, "freeze", code="XXX"))

    assert "Nothing was frozen:" in blank and "reason:" in blank and "[validation_failed]" in blank
    assert "no JPY wallet" in no_wallet and "[not_found]" in no_wallet
    assert "currency:" in bad_currency and "[validation_failed]" in bad_currency
    assert query(engine, "SELECT status FROM wallets WHERE user_id = :u", u=user.id) == [("active",)]
    assert admin.post("/dashboard/users/00000000-0000-4000-8000-000000000000/wallets/SGD/freeze",
                      data={"csrf_token": csrf_of(admin), "reason": "x"}).status_code == 404


def test_an_operator_sees_no_freeze_button_and_is_refused(services, dashboard, engine):
    operator, _ = dashboard("operator")
    user = create_user(services.uow(), "Hal", "hal@example.com")
    move(services, wallets.deposit, user.id, 1_00)

    page = operator.get(f"/dashboard/users/{user.id}")
    refused = operator.post(f"/dashboard/users/{user.id}/wallets/SGD/freeze",
                            data={"csrf_token": csrf_of(operator), "reason": "x"})

    assert 'id="freeze-SGD"' not in page.text and refused.status_code == 403
    assert query(engine, "SELECT status FROM wallets WHERE user_id = :u", u=user.id) == [("active",)]
