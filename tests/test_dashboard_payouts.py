"""Paying out safely from the dashboard, through Flask's test client on the real PostgreSQL:
check a file (the dry run: a preview, nothing stored), upload it with its options, and
approve or reject it with a second key. Chunk messages are recorded and applied by the test."""
from __future__ import annotations

import copy
import dataclasses
import io
import re
import threading
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.bulk import release
from pipeline.users import create_api_key, find_api_key
from tests.test_bulk_pipeline import apply_all, balances, fund, query, seed_users
from tests.test_dashboard import activity_id_of, csrf_of, sign_in, upload, upload_key_of
from tests.test_funding import account_balance, reserved
from tests.test_preview import counts
from web.inputs import REQUEST_BODY_MAX_BYTES
from web.display import amount, grouped


@pytest.fixture
def dashboard(app, services, queue):
    """Signs in a new test client with a new key of `scope`, on an app that needs `approval`;
    returns (client, api key id)."""
    def signed_in(scope: str, approval: str = "always"):
        configured = copy.copy(services)  # the same engine, another approval rule
        configured.settings = dataclasses.replace(services.settings, bulk_credit_approval=approval)
        app.extensions["wallet"] = configured
        app.extensions["wallet.chunk_queue"] = queue
        client, token = app.test_client(), create_api_key(services.uow(), scope)
        assert sign_in(client, token).status_code == 302
        return client, find_api_key(services.uow(), token).id

    return signed_in


def check(client, content: str, **fields):
    return client.post("/dashboard/uploads/check", content_type="multipart/form-data",
                       data={"file": (io.BytesIO(content.encode()), "payroll.csv"), "csrf_token": csrf_of(client),
                             **fields})


def text_of(html: str) -> str:
    """The page's text, tags and runs of white space dropped: what a reader sees."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def flashes(response) -> str:
    return " ".join(re.findall(r'<p class="flash [a-z]+" role="status">(.*?)</p>', response.text, re.S))


def test_checking_a_file_shows_its_preview_with_thousands_separators_and_stores_nothing(
        services, dashboard, engine):
    operator, _ = dashboard("operator", approval="SGD:10000.00")
    a, b = seed_users(services, 2, funding_minor=0)
    fund(services, "SGD", 1_500_000_00)
    before = counts(engine)
    content = (f"uuid,amount,currency\n{a},999999.99,SGD\n{b},234567.90,SGD\nnot-a-user,1.00,SGD\n"
               f"{a},-5,SGD\n{b},2500,JPY\n")

    checked = check(operator, content)

    assert checked.status_code == 200
    shown = text_of(checked.text)
    assert "Preview of payroll.csv · nothing was stored" in shown
    assert re.search(r'id="preview-total">5<.*id="preview-valid">3<.*id="preview-invalid">2<', checked.text, re.S)
    assert "SGD 2 1,234,567.89 1,500,000.00 sufficient" in shown
    assert "JPY 1 2,500 0 short by 2,500" in shown
    assert "Needs approval" in shown and "Funding short" in shown
    assert "4 invalid_user_id" in shown and "5 invalid_amount" in shown
    assert 'data-checked="true"' in checked.text
    assert counts(engine) == before
    assert query(engine, "SELECT count(*) FROM bulk_activities")[0][0] == 0


def test_a_file_larger_than_other_forms_may_be_is_checked_and_uploaded_whole(services, dashboard, engine):
    operator, _ = dashboard("operator", approval="none")
    [user] = seed_users(services, 1)
    rows = REQUEST_BODY_MAX_BYTES // len(f"{user},1.00\n") + 1_000
    content = f"uuid,amount\n" + f"{user},1.00\n" * rows
    assert len(content) > REQUEST_BODY_MAX_BYTES

    checked = check(operator, content)
    uploaded = upload(operator, content.encode())

    assert checked.status_code == 200 and f"SGD {rows:,} {rows:,}.00" in text_of(checked.text)
    assert query(engine, "SELECT total_records FROM bulk_activities WHERE id = :a", a=activity_id_of(uploaded)) == [
        (rows,)]


def test_a_check_links_the_earlier_activity_of_the_same_rows_unless_duplicates_are_allowed(
        services, dashboard, queue):
    operator, _ = dashboard("operator", approval="none")
    [user] = seed_users(services, 1)
    paid = activity_id_of(upload(operator, f"uuid,amount\n{user},1.00\n".encode()))

    again = check(operator, f"\ufeffuuid,amount\r\n{user},1.00\r\n")  # the same rows, saved again
    allowed = check(operator, f"uuid,amount\n{user},1.00\n", allow_duplicate_content="true")

    assert f'href="/dashboard/activities/{paid}"' in again.text and "pays nothing" in again.text
    assert 'id="preview-duplicate"' not in allowed.text and "Preview of payroll.csv" in allowed.text


@pytest.mark.parametrize("content, fields, field, code", [
    ('uuid,amount\n"unclosed,1.00\n', {}, None, "unreadable_file"),
    ("uuid,amount\n{user},1.00\n", {"funding_account": "nobody"}, "funding_account", "validation_failed"),
    ("uuid,amount\n{user},1.00\n", {"execute_at": "2020-01-01T00:00"}, "execute_at", "validation_failed"),
])
def test_a_check_that_cannot_preview_says_why_naming_the_field_and_stores_nothing(
        services, dashboard, engine, content, fields, field, code):
    operator, _ = dashboard("operator")
    [user] = seed_users(services, 1)
    before = counts(engine)

    refused = check(operator, content.format(user=user), **fields)

    assert refused.status_code == 422 and refused.mimetype == "text/html"
    assert f"<code>{code}</code>" in refused.text and 'data-checked="false"' in refused.text
    if field:
        assert f"<code>{field}</code>" in refused.text
    assert counts(engine) == before


def test_an_upload_takes_the_options_checked_and_a_form_sent_twice_stores_one_activity(
        services, dashboard, engine, queue):
    operator, _ = dashboard("operator", approval="none")
    [user] = seed_users(services, 1, funding_minor=0)
    fund(services, "SGD", 50_00, account="payroll")
    later = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(second=0, microsecond=0)
    key = upload_key_of(operator)
    fields = {"funding_account": "payroll", "execute_at": later.strftime("%Y-%m-%dT%H:%M"),
              "allow_duplicate_content": "true"}

    first = upload(operator, f"uuid,amount\n{user},10.00\n".encode(), key, **fields)
    second = upload(operator, f"uuid,amount\n{user},10.00\n".encode(), key, **fields)

    activity_id = activity_id_of(first)
    assert activity_id_of(second) == activity_id
    assert query(engine, "SELECT status, funding_account, execute_at FROM bulk_activities") == [
        ("SCHEDULED", "payroll", later)]
    page = text_of(operator.get(f"/dashboard/activities/{activity_id}").text)
    assert f"Scheduled: it is released at {later:%Y-%m-%d %H:%M:00} UTC; nothing is reserved" in page
    assert "SGD 1 10.00 50.00 sufficient" in page and queue.take() == []
    stale = upload(operator, f"uuid,amount\n{user},10.00\n".encode(), "not-a-key")
    assert "form is out of date" in flashes(operator.get(stale.headers["Location"]))


def test_an_approver_sees_the_review_and_approves_and_the_uploaders_own_key_is_refused(
        services, dashboard, engine, queue):
    users = seed_users(services, 3)
    admin, admin_key = dashboard("admin")
    content = "".join(f"{user},{1000 + n}.50\n" for n, user in enumerate(users))
    activity_id = activity_id_of(upload(admin, ("uuid,amount\n" + content).encode()))

    page = admin.get(f"/dashboard/activities/{activity_id}")
    assert "AWAITING_APPROVAL" in page.text and 'id="approve"' in page.text and 'id="own-upload"' in page.text
    assert "SGD 3 3,004.50" in text_of(page.text) and "sufficient" in page.text
    own = admin.post(f"/dashboard/activities/{activity_id}/approve", data={"csrf_token": csrf_of(admin)})
    refusal = flashes(admin.get(own.headers["Location"]))
    assert "Not approved: the key that uploaded this file cannot approve it" in refusal and "[same_approver]" in refusal
    assert (reserved(engine, activity_id), queue.take()) == (0, [])

    approver, approver_key = dashboard("approver")
    approved = approver.post(f"/dashboard/activities/{activity_id}/approve", data={"csrf_token": csrf_of(approver)},
                             follow_redirects=True)
    assert "Approved: its total is reserved" in flashes(approved)
    assert reserved(engine, activity_id) == 3_004_50
    apply_all(services, services.settings, queue.take())
    done = text_of(approver.get(f"/dashboard/activities/{activity_id}").text)
    assert "Completed: every valid row was credited." in done and f"Approved by key #{approver_key}" in done
    assert f"AWAITING_APPROVAL UPLOADED key #{approver_key} approved" in done
    assert sum(balances(engine).values()) == 3_004_50
    assert query(engine, "SELECT action, api_key_id FROM audit_events WHERE object_id = :a ORDER BY id",
                 a=activity_id) == [("bulk_credit.upload", admin_key), ("bulk_credit.approve", approver_key)]


def test_two_approvals_at_once_approve_once_and_the_other_reads_that_it_was_decided(services, dashboard, engine,
                                                                                   queue, app):
    users = seed_users(services, 3)
    operator, _ = dashboard("operator")
    activity_id = activity_id_of(upload(operator, ("uuid,amount\n" + "".join(f"{u},1.00\n" for u in users)).encode()))
    approver, _ = dashboard("approver")
    second = app.test_client()  # the same session in a second tab, clicking at the same moment
    second.set_cookie("session", approver.get_cookie("session").value)
    barrier, answers = threading.Barrier(2), []

    def click(client):
        barrier.wait(timeout=30)
        answers.append(flashes(client.post(f"/dashboard/activities/{activity_id}/approve",
                                           data={"csrf_token": csrf_of(approver)}, follow_redirects=True)))

    threads = [threading.Thread(target=click, args=(client,)) for client in (approver, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(answer.split(":")[0] for answer in answers) == ["Approved", "Not approved"]
    assert any("[invalid_state]" in answer and "not awaiting approval" in answer for answer in answers)
    assert query(engine, "SELECT count(*) FROM journal_entries WHERE kind = 'reservation'")[0][0] == 1
    assert query(engine, "SELECT count(*) FROM audit_events WHERE action = 'bulk_credit.approve'")[0][0] == 1
    assert reserved(engine, activity_id) == 300
    chunk_ids = queue.take()
    assert len(chunk_ids) == len(set(chunk_ids)) == query(engine, "SELECT count(*) FROM bulk_chunks")[0][0]


def test_a_rejection_needs_a_reason_then_moves_nothing_and_the_page_says_who_and_why(services, dashboard, engine):
    [user] = seed_users(services, 1)
    operator, _ = dashboard("operator")
    activity_id = activity_id_of(upload(operator, f"uuid,amount\n{user},7.00\n".encode()))
    approver, approver_key = dashboard("approver")
    funding_before = account_balance(engine)
    url = f"/dashboard/activities/{activity_id}/reject"

    blank = approver.post(url, data={"csrf_token": csrf_of(approver), "reason": "  "}, follow_redirects=True)
    assert "Not rejected: say why (reason: a text of 1 to 500 characters)" in flashes(blank)
    rejected = approver.post(url, data={"csrf_token": csrf_of(approver), "reason": "wrong month"},
                             follow_redirects=True)

    assert "Rejected: nothing moved; its 1 rows will not be paid." in flashes(rejected)
    shown = text_of(rejected.text)
    assert "Rejected by an approver: nothing moved." in shown and "Reason: wrong month" in shown
    assert f"REJECTED key #{approver_key} wrong month" in shown and 'id="approve"' not in rejected.text
    assert account_balance(engine) == funding_before and balances(engine) == {}


def test_an_approvers_queue_lists_only_the_files_awaiting_approval(services, dashboard):
    [user] = seed_users(services, 1)
    operator, _ = dashboard("operator", approval="SGD:100.00")
    small = activity_id_of(upload(operator, f"uuid,amount\n{user},1.00\n".encode()))
    large = activity_id_of(upload(operator, f"uuid,amount\n{user},100.00\n".encode()))
    approver, _ = dashboard("approver", approval="SGD:100.00")

    queue_page = approver.get("/dashboard/?status=AWAITING_APPROVAL")
    everything = approver.get("/dashboard/")

    assert large[:8] in queue_page.text and small[:8] not in queue_page.text
    assert large[:8] in everything.text and small[:8] in everything.text
    assert "No activity is SCHEDULED." in approver.get("/dashboard/?status=SCHEDULED").text
    assert approver.get("/dashboard/?status=PAID").status_code == 422


def test_each_key_sees_only_the_buttons_of_its_scope_and_a_forged_post_is_refused(services, dashboard, engine):
    [user] = seed_users(services, 1)
    operator, _ = dashboard("operator")
    activity_id = activity_id_of(upload(operator, f"uuid,amount\n{user},1.00\n".encode()))
    approver, _ = dashboard("approver")

    operator_page, approver_page = (client.get(f"/dashboard/activities/{activity_id}").text
                                    for client in (operator, approver))
    assert 'id="approve"' not in operator_page and 'id="cancel"' in operator_page
    assert 'id="approve"' in approver_page and 'id="cancel"' not in approver_page
    assert 'id="upload"' not in approver.get("/dashboard/").text
    assert operator.post(f"/dashboard/activities/{activity_id}/approve",
                         data={"csrf_token": csrf_of(operator)}).status_code == 403
    assert approver.post(f"/dashboard/activities/{activity_id}/cancel",
                         data={"csrf_token": csrf_of(approver), "reason": "x"}).status_code == 403
    assert upload(approver, b"uuid,amount\n", "dashboard-" + "k" * 32).status_code == 403
    assert approver.post(f"/dashboard/activities/{activity_id}/approve", data={}).status_code == 400  # no CSRF token
    forged_check = operator.post("/dashboard/uploads/check", content_type="multipart/form-data",
                                 data={"file": (io.BytesIO(b"uuid,amount\n"), "a.csv"), "csrf_token": "forged"})
    assert forged_check.status_code == 400
    assert approver.post(f"/dashboard/activities/{activity_id}/reject",
                         data={"csrf_token": "forged", "reason": "x"}).status_code == 400
    assert query(engine, "SELECT status FROM bulk_activities") == [("AWAITING_APPROVAL",)]


def test_a_file_short_of_funds_shows_what_is_missing_and_an_approval_is_refused_until_a_top_up(
        services, dashboard, engine, queue):
    a, b = seed_users(services, 2, funding_minor=0)
    fund(services, "SGD", 1_000_00)
    operator, _ = dashboard("operator")
    activity_id = activity_id_of(upload(operator, f"uuid,amount\n{a},1500.00\n{b},750.25\n".encode()))
    approver, _ = dashboard("approver")

    waiting = text_of(approver.get(f"/dashboard/activities/{activity_id}").text)
    assert "SGD 2 2,250.25 1,000.00 short by 1,250.25" in waiting
    assert "Missing in default : 1,250.25 SGD." in waiting
    short = approver.post(f"/dashboard/activities/{activity_id}/approve", data={"csrf_token": csrf_of(approver)},
                          follow_redirects=True)
    assert "Not approved:" in flashes(short) and "[insufficient_funds]" in flashes(short)

    unreviewed, _ = dashboard("operator", approval="none")  # the same file's twin, with no approval needed
    later = activity_id_of(upload(unreviewed, f"uuid,amount\n{a},1500.00\n{b},750.26\n".encode()))
    page = text_of(unreviewed.get(f"/dashboard/activities/{later}").text)
    assert "Waiting for funds: the funding account default holds less" in page
    assert "Missing in default : 1,250.26 SGD." in page
    fund(services, "SGD", 1_250_26)
    assert release.release_funded(services.uow, queue, services.settings) == 1
    apply_all(services, services.settings, queue.take())
    assert "Completed: every valid row was credited." in text_of(unreviewed.get(f"/dashboard/activities/{later}").text)


def test_every_status_reads_as_a_sentence_with_its_badge(services, dashboard, engine, queue, settings):
    chunk_rows = services.settings.bulk_credit_chunk_rows
    users = seed_users(services, 4 + 2 * chunk_rows)
    operator, _ = dashboard("operator", approval="none")
    failing = dataclasses.replace(services.settings, bulk_credit_fail_user_ids=frozenset(users[:1]))

    def uploaded(lines: str, **fields) -> str:
        return activity_id_of(upload(operator, f"uuid,amount\n{lines}".encode(), **fields))

    failed = uploaded("not-a-user,1.00\n")
    partial = uploaded(f"{users[0]},1.00\n{users[1]},1.00\n")
    apply_all(services, failing, queue.take())
    cancelled = uploaded(f"{users[2]},1.00\n")
    queue.take()
    operator.post(f"/dashboard/activities/{cancelled}/cancel", data={"csrf_token": csrf_of(operator),
                                                                    "reason": "paid by hand"})
    uploaded_only = uploaded(f"{users[3]},2.00\n")
    queue.take()
    processing = uploaded("".join(f"{user},1.00\n" for user in users[4:]))
    apply_all(services, services.settings, queue.take()[:1])  # one chunk of two

    for activity_id, status, sentence in [
            (failed, "FAILED", "Failed: no valid row was credited."),
            (partial, "PARTIALLY_COMPLETED", "Partially completed: some valid rows failed."),
            (cancelled, "CANCELLED", "Cancelled: the rows not yet paid were cancelled"),
            (uploaded_only, "UPLOADED", "Stored and released"),
            (processing, "PROCESSING", "Being paid: workers credit its rows chunk by chunk.")]:
        page = operator.get(f"/dashboard/activities/{activity_id}").text
        assert f'<span id="status" class="badge {status.lower()}">{status}</span>' in page
        assert sentence in text_of(page)
    assert "Reason: paid by hand" in text_of(operator.get(f"/dashboard/activities/{cancelled}").text)
    home = text_of(operator.get("/dashboard/").text)
    assert all(status in home for status in ("FAILED", "PARTIALLY_COMPLETED", "CANCELLED", "UPLOADED", "PROCESSING"))


def test_amounts_show_thousands_separators_exactly_and_other_text_as_it_is():
    assert [amount(123_456_789, "SGD"), amount(-100_000_00, "SGD"), amount(1_000_000, "JPY"), amount(5, "SGD")] == [
        "1,234,567.89", "-100,000.00", "1,000,000", "0.05"]
    assert [grouped("999999999999.999"), grouped("12,5"), grouped("1e6"), grouped("")] == [
        "999,999,999,999.999", "12,5", "1e6", ""]


def test_a_settled_activity_shows_its_totals_per_currency_with_separators(services, dashboard, queue):
    users = seed_users(services, 3)
    operator, _ = dashboard("operator", approval="none")
    failing = dataclasses.replace(services.settings, bulk_credit_fail_user_ids=frozenset(users[2:]))
    content = f"uuid,amount,currency\n{users[0]},999999.99,SGD\n{users[1]},2000.01,SGD\n{users[2]},1500,JPY\n"
    activity_id = activity_id_of(upload(operator, content.encode()))
    apply_all(services, failing, queue.take())

    page = text_of(operator.get(f"/dashboard/activities/{activity_id}").text)

    assert "JPY 1,500 0 1,500 0" in page
    assert "SGD 1,002,000.00 1,002,000.00 0.00 0.00" in page
