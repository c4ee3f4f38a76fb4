"""Bulk-credit files over HTTP on the real PostgreSQL: a structural CSV error refuses the whole
file and stores nothing (issue 8, case 2), a `file` part without a filename is a file (case 5,
also against a real gunicorn), and every row keeps its original cells and its posting, so
that an INVALID export can be corrected and uploaded as it is (case 9)."""
from __future__ import annotations

import csv
import dataclasses
import io
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from pipeline.users import create_api_key
from tests.conftest import test_environ
from tests.processes import Process
from tests.test_bulk_pipeline import RecordingQueue, apply_all, balances, query, seed_users

URL = "/api/v1/wallet/bulk-credit"
#: How long gunicorn gets to answer its first request, in seconds.
START_S = 30


@pytest.fixture
def http(queued_http):
    return queued_http


def post_file(http, content: bytes, file_name: str | None = "credits.csv"):
    return http.post(URL, data={"file": (io.BytesIO(content), file_name)}, content_type="multipart/form-data")


def multipart_without_file_name(content: bytes, boundary: str = "wallet-test-boundary") -> tuple[bytes, str]:
    """The body `curl -F 'file=<payouts.csv'` sends: a part named file, with no filename."""
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n".encode() + content
            + f"\r\n--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


def stored(engine) -> tuple[int, int, int]:
    return query(engine, "SELECT (SELECT count(*) FROM bulk_activities), (SELECT count(*) FROM bulk_rows),"
                         " (SELECT count(*) FROM bulk_chunks)")[0]


# --- Case 2: a structural CSV error is never read as data ----------------------------------------

def test_an_unclosed_quote_refuses_the_whole_file_naming_its_line_and_stores_nothing(services, http, queue,
                                                                                     clean_database):
    a, b, c, d = seed_users(services, 4)
    content = f'uuid,amount,reference\n{a},10.00,"Bonus Q3\n{b},1.00,r-b\n{c},2.00,r-c\n{d},3.00,r-d\n'.encode()

    response = post_file(http, content)

    assert (response.status_code, response.json["code"]) == (422, "unreadable_file")
    assert response.mimetype == "application/problem+json"
    assert "line 2" in response.json["detail"]
    assert response.json["errors"] == [{"field": "file", "message": response.json["detail"]}]
    assert stored(clean_database) == (0, 0, 0) and queue.take() == []


def test_a_space_before_a_quote_makes_an_ordinary_cell_and_no_payee_is_swallowed(services, http, queue,
                                                                                clean_database):
    a, b, c = seed_users(services, 3)
    content = f'uuid,amount,reference\n{a},10.00, "Bonus Q3\n{b},20.00,R2"\n{c},30.00,R3\n'.encode()

    response = post_file(http, content)

    assert (response.status_code, response.json["total_records"]) == (202, 3)
    rows = http.get(f"/api/v1/wallet/bulk-credit/{response.json['activity_id']}/rows").json["data"]
    assert [(row["user_id"], row["reference"]) for row in rows] == [(a, '"Bonus Q3'), (b, 'R2"'), (c, "R3")]


@pytest.mark.parametrize("broken_line, reason", [
    ('{user},1.00,"Bonus', "opens a quote that is never closed"),
    ('{user},1.00,"Bonus"Q3', "text after a closing quote"),
    ("{user},1.00,ok\x00", "NUL character"),
    ("{user},1.00," + "x" * 5_000, "longer than 4096 characters"),
])
def test_a_structural_error_after_thousands_of_rows_rolls_the_upload_back_whole(
        services, http, queue, clean_database, broken_line, reason):
    users = seed_users(services, 3_000)
    lines = [f"{user},1.00,r-{number}" for number, user in enumerate(users)]
    lines.append(broken_line.format(user=users[0]))
    content = ("uuid,amount,reference\r\n" + "\r\n".join(lines + lines[:5]) + "\r\n").encode()

    response = post_file(http, content)

    assert (response.status_code, response.json["code"]) == (422, "unreadable_file")
    assert reason in response.json["detail"] and "line 3002" in response.json["detail"]
    assert stored(clean_database) == (0, 0, 0) and queue.take() == []
    assert post_file(http, b"uuid,amount\n" + f"{users[0]},1.00\n".encode()).status_code == 202  # still usable


def test_bytes_that_are_not_utf8_are_refused_naming_the_line(http, clean_database):
    content = "uuid,amount,reference\n3f1c2a9e-4b7d-4c1e-9a2b-5d6e7f809a1b,1.00,Café\n".encode("latin-1")
    response = post_file(http, content)
    assert (response.status_code, response.json["code"]) == (422, "unreadable_file")
    assert "line 2 is not UTF-8" in response.json["detail"] and stored(clean_database) == (0, 0, 0)


@pytest.mark.parametrize("sent, kept", [("pay\x00outs.csv", "pay\ufffdouts.csv"),
                                        ("pay\x01outs\u202ecsv.exe", "pay\ufffdouts\ufffdcsv.exe"),
                                        ("paie-été.csv", "paie-été.csv")])
def test_a_file_name_is_kept_storable_and_showable_not_a_500(services, http, sent, kept):
    [user] = seed_users(services, 1)
    response = post_file(http, f"uuid,amount\n{user},1.00\n".encode(), file_name=sent)
    assert response.status_code == 202
    stored_name = query(services.engine, "SELECT file_name FROM bulk_activities WHERE id = :a",
                        a=response.json["activity_id"])[0][0]
    assert stored_name == kept


# --- Case 5: a `file` part without a filename ------------------------------------------------------

def test_a_file_part_without_a_filename_is_accepted(services, http):
    users = seed_users(services, 2)
    body, content_type = multipart_without_file_name(f"uuid,amount\n{users[0]},1.00\n{users[1]},2.00\n".encode())

    response = http.post(URL, data=body, content_type=content_type)

    assert (response.status_code, response.json["total_records"]) == (202, 2)
    assert http.get(f"{URL}/{response.json['activity_id']}").json["valid_records"] == 2


def test_a_file_sent_twice_or_a_truncated_multipart_body_is_a_422(http, clean_database):
    body, content_type = multipart_without_file_name(b"uuid,amount\n")
    twice = body.replace(b"--\r\n", b"\r\n") + body.split(b"\r\n", 1)[1]
    truncated = body[:-30]
    for sent in (twice, truncated):
        response = http.post(URL, data=sent, content_type=content_type)
        assert response.status_code == 422, response.json
    assert stored(clean_database) == (0, 0, 0)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gunicorn(tmp_path, settings, clean_database):
    """gunicorn gthread with one worker on a free port, as `make up` runs it; chunk messages go to
    the test Redis, where no worker reads them (this test is about the upload)."""
    port = free_port()
    web = Process(tmp_path / "web.log", [
        sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", "4",
        "--bind", f"127.0.0.1:{port}", "api:create_app()"], test_environ(STREAMS_PER_PROCESS_MAX="2"))
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                if requests.get(f"{base_url}/healthz", timeout=3).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"gunicorn did not start: {web.tail()}"
            time.sleep(0.2)
        yield base_url, web
    finally:
        web.stop()
        redis.Redis.from_url(settings.redis_url).flushdb()  # the chunk messages nobody will read


def worker_peak_rss_kb(master_pid: int) -> int:
    [worker_pid] = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    status = Path(f"/proc/{worker_pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def test_gunicorn_accepts_a_large_file_part_without_a_filename_and_streams_it(services, gunicorn):
    base_url, web = gunicorn
    token = create_api_key(services.uow(), "admin")
    headers = {"Authorization": f"Bearer {token}"}
    users = seed_users(services, 15_000)
    content = ("uuid,amount\n" + "".join(f"{user},1.00\n" for user in users)).encode()
    assert len(content) > 600_000  # past the 500 KB form-field memory limit that answered 413

    accepted = requests.post(f"{base_url}{URL}", files={"file": (None, content)}, headers=headers, timeout=120)

    assert (accepted.status_code, accepted.json()["total_records"]) == (202, 15_000), accepted.text
    activity = requests.get(f"{base_url}{URL}/{accepted.json()['activity_id']}", headers=headers, timeout=30).json()
    assert (activity["valid_records"], activity["invalid_records"]) == (15_000, 0)

    # A 60 MB part goes to disk as it arrives: the worker's peak memory barely moves. Its header is
    # refused (after the whole body is read and hashed), so the test stays short.
    before_kb = worker_peak_rss_kb(web.process.pid)
    large = b"name,amount\n" + b"x" * 60_000_000 + b"\n"
    refused = requests.post(f"{base_url}{URL}", files={"file": (None, large)}, headers=headers, timeout=300)
    assert (refused.status_code, refused.json()["code"]) == (422, "unreadable_file")
    assert worker_peak_rss_kb(web.process.pid) - before_kb < 20_000


# --- Case 9: every row keeps its original cells, and its posting ----------------------------------

def test_invalid_rows_keep_their_reference_currency_and_original_cells(services, http, queue):
    [user] = seed_users(services, 1)
    content = (f"uuid,amount,currency,reference\n{user},12.5,sgd,inv-1\n"
               f"{user},-3.00,JPY,refund 7\nnot-a-user, 4.00 ,SGD,\"pay, Q3\"\n{user},1.00\n").encode()
    activity_id = post_file(http, content).json["activity_id"]
    apply_all(services, services.settings, queue.take())

    rows = http.get(f"{URL}/{activity_id}/rows").json["data"]

    assert [(row["status"], row["currency"], row["reference"]) for row in rows] == [
        ("SUCCESS", "SGD", "inv-1"), ("INVALID", "JPY", "refund 7"), ("INVALID", "SGD", "pay, Q3"),
        ("INVALID", "SGD", None)]
    assert [row["raw"] for row in rows] == [
        {"uuid": user, "amount": "12.5", "currency": "sgd", "reference": "inv-1"},
        {"uuid": user, "amount": "-3.00", "currency": "JPY", "reference": "refund 7"},
        {"uuid": "not-a-user", "amount": " 4.00 ", "currency": "SGD", "reference": "pay, Q3"},
        {"uuid": user, "amount": "1.00"}]
    assert (rows[1]["user_id"], rows[1]["amount"], rows[2]["user_id"], rows[2]["amount"]) == (
        user, "-3.00", "not-a-user", "4.00")
    assert rows[0]["amount"] == "12.50" and rows[3]["error_code"] == "malformed_row"


def test_each_success_row_names_its_own_posting_in_json_and_in_the_export(services, http, queue, clean_database):
    users = seed_users(services, 3)
    content = "uuid,amount\n" + "".join(f"{user},{number}.00\n" for number, user in enumerate(users, 1))
    activity_id = post_file(http, content.encode()).json["activity_id"]
    apply_all(services, services.settings, queue.take())

    rows = http.get(f"{URL}/{activity_id}/rows").json["data"]
    export = http.get(f"{URL}/{activity_id}/rows", headers={"Accept": "text/csv"})
    exported = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))

    postings = dict(query(clean_database, "SELECT b.row_number, p.id FROM postings p JOIN bulk_rows b"
                                          " ON b.id = p.bulk_row_id"))
    assert [row["posting_id"] for row in rows] == [postings[2], postings[3], postings[4]]
    assert len(set(postings.values())) == 3
    assert [int(line["posting_id"]) for line in exported] == [postings[2], postings[3], postings[4]]
    assert 'filename="bulk-credit-' + activity_id + '-all-rows.csv"' in export.headers["Content-Disposition"]


def test_an_invalid_rows_export_corrected_uploads_as_it_is_and_credits(services, http, queue):
    users = seed_users(services, 3)
    content = (f"reference,uuid,amount\n=cmd|' /C calc'!A0,{users[0]},5.00\nr-2,{users[1]},-7.00\n"
               f"r-3,{users[2]},1.00\n").encode()
    activity_id = post_file(http, content).json["activity_id"]
    apply_all(services, services.settings, queue.take())

    export = http.get(f"{URL}/{activity_id}/rows?status=INVALID", headers={"Accept": "text/csv"})
    text = export.get_data(as_text=True)
    assert 'filename="bulk-credit-' + activity_id + '-invalid-rows.csv"' in export.headers["Content-Disposition"]
    assert text.splitlines()[0] == "reference,uuid,amount,row_number,error_code,error_message"
    assert text.splitlines()[1].startswith(f"r-2,{users[1]},'-7.00,3,invalid_amount,")
    # Only the invalid row is in the file; the operator fixes its amount and uploads the file as it is.
    corrected = text.replace(",'-7.00,", ",7.00,")
    again = post_file(http, corrected.encode(), file_name="corrected.csv")
    assert (again.status_code, again.json["total_records"]) == (202, 1)
    apply_all(services, services.settings, queue.take())
    assert balances(services.engine)[users[1]] == 700
    [row] = http.get(f"{URL}/{again.json['activity_id']}/rows").json["data"]
    assert (row["status"], row["reference"], row["raw"]["row_number"]) == ("SUCCESS", "r-2", "3")


@pytest.mark.parametrize("line", ["{user},1,000.00", "{user}", "{user},2.00,extra,cells"])
def test_an_invalid_export_of_a_row_of_the_wrong_width_uploaded_unchanged_pays_nothing(services, http, queue, line):
    [user] = seed_users(services, 1)
    activity_id = post_file(http, f"uuid,amount\n{line.format(user=user)}\n".encode()).json["activity_id"]
    export = http.get(f"{URL}/{activity_id}/rows?status=INVALID", headers={"Accept": "text/csv"}).get_data()

    again = post_file(http, export)
    apply_all(services, services.settings, queue.take())

    [row] = http.get(f"{URL}/{again.json['activity_id']}/rows").json["data"]
    assert (row["status"], row["error_code"]) == ("INVALID", "malformed_row")
    assert user not in balances(services.engine)


def test_a_formula_escaped_in_an_export_uploads_back_as_the_value_it_was(services, http, queue):
    [user] = seed_users(services, 1)
    content = f"uuid,amount,reference\n{user},oops,=SUM(A1)\n{user},1.00,-\n".encode()
    activity_id = post_file(http, content).json["activity_id"]
    export = http.get(f"{URL}/{activity_id}/rows?status=INVALID", headers={"Accept": "text/csv"}).get_data(as_text=True)
    assert f"{user},oops,'=SUM(A1)," in export  # a spreadsheet shows it as text, never runs it

    again = post_file(http, export.replace(",oops,", ",2.00,").encode())
    [row] = http.get(f"{URL}/{again.json['activity_id']}/rows").json["data"]
    assert (row["reference"], row["amount"], row["error_code"]) == ("=SUM(A1)", "2.00", None)


def test_a_report_of_outcomes_cannot_be_uploaded_again_and_pay_twice(services, http, queue):
    [user] = seed_users(services, 1)
    activity_id = post_file(http, f"uuid,amount\n{user},1.00\n".encode()).json["activity_id"]
    apply_all(services, services.settings, queue.take())
    report = http.get(f"{URL}/{activity_id}/rows?status=SUCCESS", headers={"Accept": "text/csv"})
    assert 'success-rows.csv"' in report.headers["Content-Disposition"]

    again = post_file(http, report.get_data())

    assert (again.status_code, again.json["code"]) == (422, "unreadable_file")
    assert "export ?status=INVALID" in again.json["detail"]
    assert balances(services.engine)[user] == 100


def test_an_idempotency_key_postgresql_cannot_store_is_a_422_not_a_500(http):
    response = http.post(URL, data={"file": (io.BytesIO(b"uuid,amount\n"), "credits.csv")},
                         content_type="multipart/form-data", headers={"Idempotency-Key": "key\x00one"})
    assert (response.status_code, response.json["code"]) == (422, "validation_failed")


def test_a_file_part_without_a_filename_has_the_same_byte_limit(services, http, monkeypatch, clean_database):
    monkeypatch.setattr(services, "settings", dataclasses.replace(services.settings, bulk_credit_max_bytes=1_000))
    body, content_type = multipart_without_file_name(b"uuid,amount\n" + b"x" * 2_000)
    response = http.post(URL, data=body, content_type=content_type)
    assert (response.status_code, response.json["code"]) == (413, "payload_too_large")
    assert stored(clean_database) == (0, 0, 0)


@pytest.mark.parametrize("fields, named", [
    ({"dry_run": "maybe"}, "dry_run"), ({"execute_at": "next week"}, "execute_at"),
    ({"funding_account": "other"}, "funding_account"),  # unknown (test_bulk_references.py has the rest)
    ({"dryrun": "true"}, "dryrun"),
])
def test_an_upload_option_misspelt_or_out_of_range_is_refused_and_pays_nothing(
        services, http, queue, clean_database, fields, named):
    [user] = seed_users(services, 1)
    response = http.post(URL, data={"file": (io.BytesIO(f"uuid,amount\n{user},1.00\n".encode()), "a.csv"), **fields},
                         content_type="multipart/form-data")

    assert (response.status_code, response.json["code"]) == (422, "validation_failed")
    assert [error["field"] for error in response.json["errors"]] == [named]
    assert stored(clean_database) == (0, 0, 0) and queue.take() == []


def test_the_default_values_of_upload_options_are_accepted(services, http, queue):
    [user] = seed_users(services, 1)
    fields = {"dry_run": "false", "funding_account": "default", "allow_duplicate_content": "false"}
    response = http.post(URL, data={"file": (io.BytesIO(f"uuid,amount\n{user},1.00\n".encode()), "a.csv"), **fields},
                         content_type="multipart/form-data")
    assert response.status_code == 202


def test_an_option_sent_twice_or_in_the_query_is_refused_and_pays_nothing(services, http, queue, clean_database):
    [user] = seed_users(services, 1)
    content = f"uuid,amount\n{user},1.00\n".encode()
    twice = http.post(URL, data={"file": (io.BytesIO(content), "a.csv"), "dry_run": ["false", "true"]},
                      content_type="multipart/form-data")
    in_query = http.post(f"{URL}?dry_run=true", data={"file": (io.BytesIO(content), "a.csv")},
                         content_type="multipart/form-data")

    assert (twice.status_code, [e["field"] for e in twice.json["errors"]]) == (422, ["dry_run"])
    assert (in_query.status_code, [e["field"] for e in in_query.json["errors"]]) == (422, ["dry_run"])
    assert stored(clean_database) == (0, 0, 0) and queue.take() == []
