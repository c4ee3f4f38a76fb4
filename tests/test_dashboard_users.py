"""Finding a user on the dashboard and reading their page, through Flask's test client on the
real PostgreSQL: a lookup by id, email (whatever its case) or external id opens the user's
page, several matches are listed, and the page shows wallets and history with thousands
separators."""
from __future__ import annotations

from pipeline import audit, holds, wallets
from pipeline.users import create_user
from tests.test_bulk_reversal import move
from tests.test_dashboard import operator, operator_token  # noqa: F401 (fixtures)
from tests.test_dashboard_payouts import text_of


def test_a_lookup_by_email_external_id_or_id_opens_the_users_page(services, operator):
    ana = create_user(services.uow(), "Ana Lim", "ana@example.com", "crm-42")
    create_user(services.uow(), "Ben Tan", "ben@example.com", "crm-43")

    by_email = operator.get("/dashboard/users?q=ANA@Example.com")
    by_external_id = operator.get("/dashboard/users?q=crm-42")
    by_id = operator.get(f"/dashboard/users?q={ana.id}")

    assert {by_email.headers["Location"], by_external_id.headers["Location"], by_id.headers["Location"]} == {
        f"/dashboard/users/{ana.id}"}
    page = operator.get(f"/dashboard/users/{ana.id}")
    assert page.status_code == 200 and "Ana Lim" in page.text and "crm-42" in page.text


def test_a_lookup_matching_several_users_lists_them_and_one_matching_none_says_so(services, operator):
    first = create_user(services.uow(), "Chen", "chen@example.com", "shared@example.com")
    second = create_user(services.uow(), "Dara", "shared@example.com", None)

    several = operator.get("/dashboard/users?q=shared@example.com")
    none = operator.get("/dashboard/users?q=nobody@example.com")
    refused = operator.get("/dashboard/users?q=" + "x" * 400)

    assert several.status_code == 200
    assert f'href="/dashboard/users/{first.id}"' in several.text and f'href="/dashboard/users/{second.id}"' in several.text
    assert none.status_code == 200 and 'id="no-match"' in none.text
    assert refused.status_code == 422 and "[validation_failed]" in refused.text and "external_id" in refused.text


def test_an_external_id_shaped_like_a_uuid_is_found_when_no_user_has_that_id(services, operator):
    """It opened the page of a user id that did not exist (404), never searching external ids."""
    crm_id = "9abf8d29-6a5a-404b-b87e-3479297efc7c"
    eve = create_user(services.uow(), "Eve", "eve@example.com", crm_id)

    found = operator.get(f"/dashboard/users?q={crm_id}")

    assert found.status_code == 302 and found.headers["Location"] == f"/dashboard/users/{eve.id}"


def test_a_users_page_shows_balance_held_available_and_history_with_thousands_separators(services, operator):
    user = create_user(services.uow(), "Eve", "eve@example.com")
    move(services, wallets.deposit, user.id, 1_234_567_89)
    move(services, wallets.withdraw, user.id, 1_000_00)
    with services.uow() as uow:
        request = holds.parse_hold_request({"user_id": user.id, "amount": "2000.00", "currency": "SGD"},
                                           services.settings, "hold-1")
        holds.place(uow, request, audit.COMMAND_LINE)
        uow.commit()

    page = text_of(operator.get(f"/dashboard/users/{user.id}").text)

    assert "SGD 1,233,567.89 2,000.00 1,231,567.89 active" in page
    assert "withdrawal debit 1,000.00 SGD 0.00 1,233,567.89" in page
    assert "deposit credit 1,234,567.89 SGD 0.00 1,234,567.89" in page
    assert operator.get("/dashboard/users/not-a-uuid").status_code == 422
    assert operator.get("/dashboard/users/00000000-0000-4000-8000-000000000000").status_code == 404


def test_signed_out_the_users_pages_lead_to_sign_in(client, clean_database):
    page = client.get("/dashboard/users?q=ana@example.com")

    assert page.status_code == 302 and "/dashboard/sign-in" in page.headers["Location"]
