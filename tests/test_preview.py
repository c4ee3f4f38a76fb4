"""A preview (dry run) checks a file exactly as its upload would, unknown users, references
used before and the funding check included, and leaves nothing behind."""
from __future__ import annotations

import io

from tests.test_bulk_pipeline import RecordingQueue, apply_all, fund, query, seed_users

URL = "/api/v1/wallet/bulk-credit"


def counts(engine) -> tuple:
    return query(engine, "SELECT (SELECT count(*) FROM bulk_rows), (SELECT count(*) FROM bulk_activities),"
                         " (SELECT count(*) FROM journal_entries), (SELECT count(*) FROM event_outbox),"
                         " (SELECT count(*) FROM bulk_references), (SELECT count(*) FROM bulk_chunks)")[0]


def check(http, content: str, **fields):
    return http.post(URL, data={"file": (io.BytesIO(content.encode()), "payouts.csv"), "dry_run": "true", **fields},
                     content_type="multipart/form-data")


def test_a_preview_answers_totals_errors_and_the_funding_verdict_and_stores_nothing(services, http, engine):
    http.application.extensions["wallet.chunk_queue"] = queue = RecordingQueue()
    a, b = seed_users(services, 2, funding_minor=0)
    fund(services, "SGD", 1_000)
    paid = http.post(URL, data={"file": (io.BytesIO(f"uuid,amount,reference\n{a},1.00,inv-1\n".encode()), "a.csv")},
                     content_type="multipart/form-data").json["activity_id"]
    apply_all(services, services.settings, queue.take())
    before = counts(engine)
    content = (f"uuid,amount,reference\n{a},2.00,inv-1\n{b},5.00,inv-2\n{b},3.00,inv-3\n"
               f"not-a-user,1.00,inv-4\n{b},7,JPY\n")

    response = check(http, content.replace(",7,JPY", ",1.00,inv-5"))

    assert response.status_code == 200
    body = response.json
    assert (body["dry_run"], body["total_records"], body["valid_records"], body["invalid_records"]) == (
        True, 5, 3, 2)
    assert body["totals"] == [{"currency": "SGD", "rows": 3, "amount": "9.00"}]
    assert body["funding"] == [{"currency": "SGD", "required": "9.00", "available": "9.00", "sufficient": True}]
    assert [(e["row_number"], e["error_code"]) for e in body["errors"]] == [
        (2, "duplicate_reference"), (5, "invalid_user_id")]
    assert paid in body["errors"][0]["error_message"]
    assert counts(engine) == before
    assert queue.take() == []


def test_a_preview_of_a_file_the_account_cannot_pay_says_so(services, http, engine):
    [user] = seed_users(services, 1, funding_minor=0)
    body = check(http, f"uuid,amount\n{user},10.00\n").json
    assert body["funding"] == [{"currency": "SGD", "required": "10.00", "available": "0.00", "sufficient": False}]


def test_a_preview_of_a_paid_file_names_it_and_caps_its_error_list(services, http, engine):
    http.application.extensions["wallet.chunk_queue"] = RecordingQueue()
    [user] = seed_users(services, 1)
    content = f"uuid,amount\n{user},1.00\n" + "x,1.00\n" * 150
    paid = http.post(URL, data={"file": (io.BytesIO(content.encode()), "a.csv")},
                     content_type="multipart/form-data").json["activity_id"]

    body = check(http, content.replace("\n", "\r\n")).json

    assert body["duplicate_of"] == paid and body["invalid_records"] == 150
    assert len(body["errors"]) == 100 and body["errors_shown_max"] == 100


def test_a_broken_file_is_refused_by_the_preview_as_by_the_upload(http, clean_database):
    response = check(http, 'uuid,amount\nx,"1.00\n')
    assert (response.status_code, response.json["code"]) == (422, "unreadable_file")
