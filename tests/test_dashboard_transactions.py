"""Finding a transaction by reference on the dashboard, through Flask's test client on the real
PostgreSQL: the same search as `GET /api/v1/transactions`, its amounts with thousands
separators and links to the users, an empty result said so, a bad filter refused on the page
(422), and a user's key kept out (403)."""
from __future__ import annotations

import re

from pipeline import wallets
from pipeline.money import MINOR_UNITS, Currency
from pipeline.users import create_api_key, create_user
from tests.test_dashboard import operator, operator_token, sign_in  # noqa: F401 (fixtures)
from tests.test_dashboard_payouts import text_of


def deposit(services, user_id: str, amount_minor: int, reference: str | None) -> None:
    """A deposit of `amount_minor` SGD with `reference`, as an admin would make it."""
    request = wallets.MoneyRequest(Currency("SGD", MINOR_UNITS["SGD"]), amount_minor, reference)
    with services.uow() as uow:
        wallets.deposit(uow, services.settings, user_id, request)
        uow.commit()


def test_a_deposit_is_found_by_its_reference_with_its_amount_grouped_and_a_link_to_its_user(services, operator):
    ana = create_user(services.uow(), "Ana Lim", "ana@example.com")
    ben = create_user(services.uow(), "Ben Tan", "ben@example.com")
    deposit(services, ana.id, 1_234_50, "inv-42")
    deposit(services, ben.id, 99_00, "inv-43")

    page = operator.get("/dashboard/transactions?reference=inv-42")

    assert page.status_code == 200
    rows = re.findall(r'<tr id="entry-.*?</tr>', page.text, re.S)
    assert len(rows) == 1
    assert "deposit 1,234.50 SGD 0.00" in text_of(rows[0]) and "inv-42" in rows[0]
    assert f'href="/dashboard/users/{ana.id}"' in rows[0] and ben.id not in page.text
    narrowed = operator.get(f"/dashboard/transactions?reference=inv-42&kind=deposit&user_id={ana.id}")
    assert "1,234.50 SGD" in narrowed.text
    assert 'id="no-transaction"' in operator.get("/dashboard/transactions?reference=inv-42&kind=withdrawal").text


def test_the_transactions_page_pages_by_cursor_newest_first(services, operator, monkeypatch):
    from web import dashboard_transactions

    monkeypatch.setattr(dashboard_transactions, "TRANSACTIONS_PER_PAGE", 2)
    ana = create_user(services.uow(), "Ana Lim", "ana@example.com")
    for amount_minor in (1_00, 2_00, 3_00):
        deposit(services, ana.id, amount_minor, "batch-7")

    first = operator.get("/dashboard/transactions?reference=batch-7")
    next_link = re.search(r'id="next-page" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    second = operator.get(next_link)

    assert re.findall(r"(\d\.00) SGD", first.text) == ["3.00", "2.00"]
    assert re.findall(r"(\d\.00) SGD", second.text) == ["1.00"] and 'id="next-page"' not in second.text
    assert "reference=batch-7" in next_link


def test_a_reference_nobody_used_shows_that_nothing_matches(services, operator):
    page = operator.get("/dashboard/transactions?reference=nobody-used-this")

    assert page.status_code == 200 and 'id="no-transaction"' in page.text and '<tr id="entry-' not in page.text


def test_a_bad_filter_is_refused_on_the_page_with_422_and_its_message(services, operator):
    unknown_kind = operator.get("/dashboard/transactions?reference=inv-42&kind=gift")
    bad_user = operator.get("/dashboard/transactions?reference=inv-42&user_id=not-a-uuid")
    bad_cursor = operator.get("/dashboard/transactions?reference=inv-42&cursor=%25%25")

    assert unknown_kind.status_code == 422
    assert "kind is not valid (kind: one of deposit" in text_of(unknown_kind.text)
    assert "[validation_failed]" in unknown_kind.text and 'id="transaction-lookup"' in unknown_kind.text
    assert bad_user.status_code == 422 and "user_id: must be a uuid" in bad_user.text
    assert bad_cursor.status_code == 422 and "cursor: use next_cursor from a previous page" in bad_cursor.text


def test_the_navigation_leads_staff_to_transactions_and_a_users_key_is_refused_403(app, services, operator):
    user = create_user(services.uow(), "Eve", "eve@example.com")
    deposit(services, user.id, 5_00, "inv-42")
    as_user = app.test_client()
    assert sign_in(as_user, create_api_key(services.uow(), f"user:{user.id}")).status_code == 302

    refused = as_user.get("/dashboard/transactions?reference=inv-42")

    assert refused.status_code == 403 and "inv-42" not in refused.text
    assert 'href="/dashboard/transactions"' in operator.get("/dashboard/users").text
    assert 'href="/dashboard/transactions"' not in as_user.get(f"/dashboard/me/{user.id}").text
