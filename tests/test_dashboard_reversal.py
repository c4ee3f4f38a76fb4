"""Reversing a credit from the dashboard, through Flask's test client on the real PostgreSQL:
the Reverse button runs the API's reversal use case once per form, a reversal's page links
the credit it reverses, the credit's rows show what reversed them, and refusals show the
API's message and code. Chunk messages are recorded and applied by the test."""
from __future__ import annotations

import re
import threading

from pipeline import wallets
from tests.test_bulk_pipeline import apply_all, balances, query, seed_users
from tests.test_bulk_reversal import move
from tests.test_dashboard import activity_id_of, csrf_of, upload
from tests.test_dashboard_payouts import dashboard, flashes, text_of  # noqa: F401 (a fixture)
from tests.test_funding import account_balance


def credited(services, operator, queue, users: list[str], amounts: list[str]) -> str:
    """Uploads a credit of one row per user (references r2, r3, ...) and applies it."""
    lines = "".join(f"{user},{value},r{n}\n" for n, (user, value) in enumerate(zip(users, amounts), start=2))
    activity_id = activity_id_of(upload(operator, f"uuid,amount,reference\n{lines}".encode()))
    apply_all(services, services.settings, queue.take())
    return activity_id


def reverse_key_of(client, activity_id: str) -> str:
    """The Reverse form's key, as the credit's page renders it (each render makes a new one)."""
    page = client.get(f"/dashboard/activities/{activity_id}").text
    return re.search(r'name="reverse_key" value="([^"]+)"', page).group(1)


def reverse(client, activity_id: str, key: str | None = None, **fields):
    data = {"csrf_token": csrf_of(client), "reason": "wrong file",
            "reverse_key": key or reverse_key_of(client, activity_id), **fields}
    return client.post(f"/dashboard/activities/{activity_id}/reverse", data=data)


def reversals(engine) -> list[tuple]:
    return query(engine, "SELECT id::text, reverses_activity_id::text FROM bulk_activities WHERE kind = 'reversal'")


def test_an_operator_reverses_chosen_rows_and_their_money_goes_back_to_the_funding_account(
        services, dashboard, engine, queue):
    operator, operator_key = dashboard("operator", approval="none")
    users = seed_users(services, 3)
    credit_id = credited(services, operator, queue, users, ["1234.50", "20.00", "5.00"])
    funded = account_balance(engine)
    page = operator.get(f"/dashboard/activities/{credit_id}")
    assert 'id="reverse"' in page.text and "r3" in text_of(page.text)
    assert f'href="/dashboard/users/{users[0]}"' in page.text

    started = reverse(operator, credit_id, row_numbers="2, 4")

    reversal_id = re.search(r"/dashboard/activities/([0-9a-f-]{36})$", started.headers["Location"]).group(1)
    assert reversals(engine) == [(reversal_id, credit_id)]
    opened = operator.get(started.headers["Location"])
    assert "Reversal started: 2 rows to take back, 0 not reversible." in flashes(opened)
    assert f'href="/dashboard/activities/{credit_id}"' in opened.text and 'id="reverses"' in opened.text
    assert 'id="reverse"' not in opened.text  # a reversal is not reversed in turn
    apply_all(services, services.settings, queue.take())
    assert balances(engine) == {users[0]: 0, users[1]: 20_00, users[2]: 0}
    assert account_balance(engine) == funded + 1_239_50
    done = text_of(operator.get(f"/dashboard/activities/{reversal_id}").text)
    assert "Completed: the money of every reversible row is back in the funding account." in done
    assert "1,234.50" in done
    rows = text_of(operator.get(f"/dashboard/activities/{credit_id}").text)
    assert f"{reversal_id[:8]} row 2 SUCCESS" in rows and f"{reversal_id[:8]} row 4 SUCCESS" in rows
    assert f"{reversal_id[:8]} row 3" not in rows
    home = text_of(operator.get("/dashboard/").text)
    assert f"{reversal_id[:8]} reversal of credits.csv COMPLETED 2" in home, home[-400:]
    assert query(engine, "SELECT action, api_key_id, object_id FROM audit_events WHERE action = 'bulk_credit.reverse'"
                 ) == [("bulk_credit.reverse", operator_key, credit_id)]


def test_one_reverse_form_sent_twice_or_from_two_tabs_at_once_makes_one_reversal(
        services, dashboard, engine, queue, app):
    operator, _ = dashboard("operator", approval="none")
    users = seed_users(services, 2)
    credit_id = credited(services, operator, queue, users, ["10.00", "20.00"])
    key = reverse_key_of(operator, credit_id)
    second = app.test_client()  # the same session in a second tab, clicking at the same moment
    second.set_cookie("session", operator.get_cookie("session").value)
    barrier, answers = threading.Barrier(2), []

    def click(client):
        barrier.wait(timeout=30)
        answers.append(reverse(client, credit_id, key).headers["Location"])

    threads = [threading.Thread(target=click, args=(client,)) for client in (operator, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    again = reverse(operator, credit_id, key)

    [(reversal_id, _)] = reversals(engine)
    assert answers == [f"/dashboard/activities/{reversal_id}"] * 2
    assert again.headers["Location"] == f"/dashboard/activities/{reversal_id}"
    assert "This form was sent before" in flashes(operator.get(again.headers["Location"]))
    apply_all(services, services.settings, queue.take())
    assert balances(engine) == {user: 0 for user in users}
    assert query(engine, "SELECT count(*) FROM audit_events WHERE action = 'bulk_credit.reverse'") == [(1,)]


def test_a_second_form_over_the_same_rows_reverses_nothing_and_says_why(services, dashboard, engine, queue):
    operator, _ = dashboard("operator", approval="none")
    users = seed_users(services, 2)
    credit_id = credited(services, operator, queue, users, ["10.00", "20.00"])
    reverse(operator, credit_id)
    apply_all(services, services.settings, queue.take())

    again = operator.get(reverse(operator, credit_id).headers["Location"])

    assert "Reversal started: 0 rows to take back, 2 not reversible." in flashes(again)
    assert "not_reversible" in again.text
    assert balances(engine) == {user: 0 for user in users} and queue.take() == []


def test_refused_reversals_show_the_apis_message_and_code_and_move_nothing(services, dashboard, engine, queue):
    operator, _ = dashboard("operator", approval="none")
    users = seed_users(services, 2)
    credit_id = credited(services, operator, queue, users, ["10.00", "20.00"])
    cases = [({"row_numbers": "2, 99"}, "some rows named are not in the activity",
              "row_numbers: no row 99 in activity", "[validation_failed]"),
             ({"row_numbers": "2-x"}, "the rows to reverse are not valid", "row_numbers:", "[validation_failed]"),
             ({"reason": "  "}, "say why", "reason:", "[validation_failed]"),
             ({"reverse_key": "forged"}, "the form is out of date", "reverse_key:", "[validation_failed]")]
    for fields, detail, field, code in cases:
        refused = reverse(operator, credit_id, **fields)
        assert refused.headers["Location"] == f"/dashboard/activities/{credit_id}"
        shown = flashes(operator.get(refused.headers["Location"]))
        assert f"Nothing was reversed: {detail}" in shown and field in shown and code in shown, shown
    assert reversals(engine) == [] and balances(engine) == {users[0]: 10_00, users[1]: 20_00}

    reversal_id = activity_id_of(reverse(operator, credit_id, row_numbers="3"))
    of_a_reversal = flashes(operator.get(reverse(operator, reversal_id, key=reverse_key_of(operator, credit_id))
                                         .headers["Location"]))
    assert "is a reversal; reverse the credit it reverses instead [invalid_state]" in of_a_reversal
    assert operator.post("/dashboard/activities/00000000-0000-4000-8000-000000000000/reverse",
                         data={"csrf_token": csrf_of(operator)}).status_code == 404


def test_an_approver_sees_no_reverse_button_and_is_refused(services, dashboard, engine, queue):
    operator, _ = dashboard("operator", approval="none")
    users = seed_users(services, 1)
    credit_id = credited(services, operator, queue, users, ["10.00"])
    approver, _ = dashboard("approver", approval="none")

    page = approver.get(f"/dashboard/activities/{credit_id}")
    refused = approver.post(f"/dashboard/activities/{credit_id}/reverse",
                            data={"csrf_token": csrf_of(approver), "reason": "no", "reverse_key": "x"})

    assert 'id="reverse"' not in page.text and refused.status_code == 403
    assert reversals(engine) == []


def test_a_reversal_whose_payee_spent_the_money_can_be_cancelled_from_its_page(services, dashboard, engine, queue):
    operator, _ = dashboard("operator", approval="none")
    users = seed_users(services, 2)
    credit_id = credited(services, operator, queue, users, ["10.00", "20.00"])
    move(services, wallets.withdraw, users[1], 15_00)  # the payee spent most of it
    reversal_id = activity_id_of(reverse(operator, credit_id))
    apply_all(services, services.settings, queue.take())
    page = operator.get(f"/dashboard/activities/{reversal_id}")
    assert "PARTIALLY_COMPLETED" in page.text and "insufficient_funds" in page.text
    assert "hidden" not in re.search(r'<form id="cancel"[^>]*>', page.text).group(0)

    cancelled = operator.post(f"/dashboard/activities/{reversal_id}/cancel",
                              data={"csrf_token": csrf_of(operator), "reason": "leave it"}, follow_redirects=True)

    assert "Cancelled: 1 rows will not be paid" in flashes(cancelled)
    assert query(engine, "SELECT status FROM bulk_activities WHERE id = :a", a=reversal_id) == [("CANCELLED",)]
    assert balances(engine) == {users[0]: 0, users[1]: 5_00}
