"""The dashboard through Flask's test client, on the real PostgreSQL: sign-in, CSRF, pages,
and the first events of the live progress stream. Chunk messages are recorded and applied
by the test (the browser test, test_dashboard_browser.py, uses real worker processes)."""
from __future__ import annotations

import dataclasses
import io
import json
import re

import pytest

from api import create_app
from pipeline.bulk import chunks
from pipeline.users import create_api_key, create_user
from tests.test_bulk_pipeline import CHUNK_ROWS, RecordingQueue, balances, query, seed_users
from web import dashboard_events


@pytest.fixture
def queue(app):
    app.extensions["wallet.chunk_queue"] = recording = RecordingQueue()
    return recording


@pytest.fixture
def operator_token(services, clean_database) -> str:
    return create_api_key(services.uow(), "operator")


def csrf_of(client) -> str:
    with client.session_transaction() as session:
        return session["csrf_token"]


def sign_in(client, token: str):
    client.get("/dashboard/sign-in")
    return client.post("/dashboard/sign-in", data={"api_key": token, "csrf_token": csrf_of(client)})


@pytest.fixture
def operator(client, operator_token):
    assert sign_in(client, operator_token).status_code == 302
    return client


def upload_key_of(client) -> str:
    """The upload form's key, as the home page renders it (each check renders a new one)."""
    return re.search(r'name="upload_key" value="([^"]+)"', client.get("/dashboard/").text).group(1)


def upload(client, content: bytes, key: str | None = None, **fields):
    return client.post("/dashboard/uploads", content_type="multipart/form-data",
                       data={"file": (io.BytesIO(content), "credits.csv"), "csrf_token": csrf_of(client),
                             "upload_key": key or upload_key_of(client), **fields})


def activity_id_of(response) -> str:
    return re.search(r"/dashboard/activities/([0-9a-f-]{36})$", response.headers["Location"]).group(1)


def events_of(stream, count: int) -> list[tuple[str, dict]]:
    """Reads `count` named events from a text/event-stream body, skipping comments and retry lines."""
    found = []
    for chunk in stream:
        for block in chunk.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
            if "event" in fields:
                found.append((fields["event"], json.loads(fields["data"])))
        if len(found) >= count:
            return found
    return found


def test_a_bad_key_is_refused_and_signs_nobody_in(client, operator_token):
    refused = sign_in(client, "wp_not-a-key")

    assert refused.status_code == 401
    assert "This API key is not valid." in refused.text
    assert client.get("/dashboard/").status_code == 302


def test_an_operator_signs_in_and_the_cookie_holds_a_digest_of_the_key_never_the_key(app, client, operator_token):
    signed_in = sign_in(client, operator_token)

    assert (signed_in.status_code, signed_in.headers["Location"]) == (302, "/dashboard/")
    home = client.get("/dashboard/")
    assert home.status_code == 200 and "Pay out a CSV" in home.text and "operator" in home.text
    cookie = client.get_cookie("session")
    assert operator_token not in cookie.value
    assert operator_token not in json.dumps(app.session_interface.get_signing_serializer(app).loads(cookie.value))
    assert "script-src 'self'" in home.headers["Content-Security-Policy"]


def test_signing_in_goes_back_to_the_page_asked_for_but_never_to_another_site(client, operator_token):
    client.get("/dashboard/sign-in")
    token = csrf_of(client)
    back = client.post("/dashboard/sign-in", data={"api_key": operator_token, "csrf_token": token,
                                                   "next": "/dashboard/reconciliations?cursor=x"})
    assert back.headers["Location"] == "/dashboard/reconciliations?cursor=x"
    for elsewhere in ("https://example.com/dashboard/", "//example.com/dashboard/", "/api/v1/users"):
        client.get("/dashboard/sign-in")
        away = client.post("/dashboard/sign-in", data={"api_key": operator_token, "csrf_token": csrf_of(client),
                                                       "next": elsewhere})
        assert away.headers["Location"] == "/dashboard/"


def test_a_post_without_the_session_csrf_token_is_refused_and_does_nothing(engine, operator):
    missing = operator.post("/dashboard/reconciliations", data={})
    forged = operator.post("/dashboard/reconciliations", data={"csrf_token": "forged"})
    sign_in_without = operator.post("/dashboard/sign-in", data={"api_key": "anything"})

    assert [missing.status_code, forged.status_code, sign_in_without.status_code] == [400, 400, 400]
    assert "The form has expired" in forged.text
    assert query(engine, "SELECT count(*) FROM reconciliations")[0][0] == 0


def test_signed_out_pages_lead_to_sign_in_and_the_event_stream_answers_401(client, clean_database):
    page = client.get("/dashboard/users?user_id=x")
    stream = client.get("/dashboard/activities/00000000-0000-4000-8000-000000000000/events")

    assert page.status_code == 302 and page.headers["Location"].startswith("/dashboard/sign-in?next=")
    assert stream.status_code == 401


def test_the_event_stream_sends_the_counters_first_then_each_change_and_ends_when_the_activity_is_final(
        services, settings, operator, queue):
    users = seed_users(services, 2 * CHUNK_ROWS)
    content = ("uuid,amount\n" + "".join(f"{user},1.00\n" for user in users)).encode()
    uploaded = upload(operator, content)
    activity_id = activity_id_of(uploaded)

    stream = operator.get(f"/dashboard/activities/{activity_id}/events", buffered=False)
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    body = iter(stream.response)
    [(name, first)] = events_of(body, 1)
    assert (name, first["status"], first["pending_records"], first["successful_records"]) == (
        "progress", "UPLOADED", 2 * CHUNK_ROWS, 0)
    for chunk_id in queue.take():
        chunks.apply_chunk(services.uow, settings, chunk_id)
    later = events_of(body, 2)
    stream.close()

    assert later[-2][0] == "progress" and later[-2][1]["status"] == "COMPLETED"
    assert later[-2][1]["successful_records"] == 2 * CHUNK_ROWS
    assert later[-1] == ("end", {"status": "COMPLETED"})


def test_an_operator_uploads_filters_failed_rows_downloads_them_and_retries_them(services, settings, operator, queue):
    users = seed_users(services, 4)
    faulty = sorted(users[:2])
    content = ("uuid,amount\n" + "".join(f"{user},2.50\n" for user in users) + "not-a-uuid,1.00\n").encode()
    activity_id = activity_id_of(upload(operator, content))
    failing = dataclasses.replace(settings, bulk_credit_fail_user_ids=frozenset(faulty))
    for chunk_id in queue.take():
        chunks.apply_chunk(services.uow, failing, chunk_id)

    page = operator.get(f"/dashboard/activities/{activity_id}?status=FAILED")
    assert "PARTIALLY_COMPLETED" in page.text and all(user in page.text for user in faulty)
    assert "injected_fault" in page.text and all(user not in page.text for user in set(users) - set(faulty))
    invalid = operator.get(f"/dashboard/activities/{activity_id}?status=INVALID")
    assert "invalid_user_id" in invalid.text
    exported = operator.get(f"/dashboard/activities/{activity_id}/rows.csv?status=FAILED")
    assert exported.mimetype == "text/csv"
    lines = exported.text.strip().splitlines()
    assert lines[0].startswith("row_number,user_id") and sorted(line.split(",")[1] for line in lines[1:]) == faulty

    retried = operator.post(f"/dashboard/activities/{activity_id}/retry", data={"csrf_token": csrf_of(operator)})
    assert retried.status_code == 302
    assert "2 failed rows were sent again." in operator.get(retried.headers["Location"]).text
    for chunk_id in queue.take():
        chunks.apply_chunk(services.uow, settings, chunk_id)
    assert "COMPLETED" in operator.get(f"/dashboard/activities/{activity_id}").text
    assert balances(services.engine) == {user: 250 for user in users}
    home = operator.get("/dashboard/")
    assert activity_id[:8] in home.text and "COMPLETED" in home.text


def test_a_user_page_shows_wallets_and_history(services, settings, operator, queue):
    [user] = seed_users(services, 1)
    activity_id = activity_id_of(upload(operator, f"uuid,amount\n{user},12.34\n".encode()))
    for chunk_id in queue.take():
        chunks.apply_chunk(services.uow, settings, chunk_id)

    page = operator.get(f"/dashboard/users?user_id={user}", follow_redirects=True)

    assert page.status_code == 200
    assert "12.34" in page.text and "SGD" in page.text and activity_id[:8] in page.text
    assert operator.get("/dashboard/users/00000000-0000-4000-8000-000000000000").status_code == 404


def test_reconciliation_runs_are_listed_and_one_can_be_started(engine, operator):
    started = operator.post("/dashboard/reconciliations", data={"csrf_token": csrf_of(operator), "full": "on"})

    assert started.status_code == 302
    assert query(engine, "SELECT status, full_pass FROM reconciliations") == [("queued", True)]
    listed = operator.get("/dashboard/reconciliations")
    assert "queued" in listed.text and "full" in listed.text


def test_every_web_process_reads_the_cookies_of_the_others_without_a_secret_key_set(settings):
    unset = dataclasses.replace(settings, secret_key="")
    first, second = create_app(unset), create_app(unset)
    other_database = create_app(dataclasses.replace(unset, database_url=unset.database_url + "_other"))

    assert first.secret_key == second.secret_key
    assert other_database.secret_key != first.secret_key
    assert create_app(dataclasses.replace(settings, secret_key="s" * 40)).secret_key == "s" * 40


def test_a_file_above_the_size_limit_gets_an_error_page_not_json(app, operator):
    app.config["MAX_CONTENT_LENGTH"] = 1_000

    refused = upload(operator, b"uuid,amount\n" + b"x" * 2_000)

    assert refused.status_code == 413
    assert refused.mimetype == "text/html" and "Error 413" in refused.text


class FakeClock:
    def __init__(self):
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


def test_a_stream_whose_activity_never_settles_sends_one_event_then_heartbeats_and_ends_at_its_time_limit():
    clock, reads = FakeClock(), []
    processing = {"status": "PROCESSING", "pending_records": 5, "final": False}

    def read_activity():
        reads.append(clock())
        return processing

    body = list(dashboard_events.progress_events(read_activity, clock, clock.sleep))

    assert body[0] == f"retry: {dashboard_events.RECONNECT_MS}\n\n"
    assert sum(part.startswith("event: progress") for part in body) == 1
    heartbeats = sum(part.startswith(":") for part in body)
    expected = dashboard_events.STREAM_DURATION_S // dashboard_events.HEARTBEAT_INTERVAL_S
    assert expected - 1 <= heartbeats <= expected
    assert len(reads) == dashboard_events.STREAM_DURATION_S / dashboard_events.POLL_INTERVAL_S + 1


def test_streams_beyond_the_shared_budget_get_a_busy_event_and_hold_no_slot(services, app, operator, queue):
    original = services.settings
    services.settings = dataclasses.replace(original, streams_per_process_max=1)
    (user,) = seed_users(services, 1)
    activity_id = activity_id_of(upload(operator, f"uuid,amount\n{user},1.00\n".encode()))
    url = f"/dashboard/activities/{activity_id}/events"
    try:
        first = operator.get(url, buffered=False)  # open: it holds the only slot
        busy = operator.get(url).get_data(as_text=True)
        first.close()
        after = operator.get(url, buffered=False)
        after_start = next(iter(after.response)).decode()
        after.close()
    finally:
        services.settings = original

    assert busy.startswith(f"retry: {dashboard_events.BUSY_RECONNECT_MS}\n\n") and "event: busy" in busy
    assert after_start == f"retry: {dashboard_events.RECONNECT_MS}\n\n"


def test_signing_out_ends_the_session_on_the_server_so_a_saved_cookie_signs_nobody_in(app, operator):
    saved = operator.get_cookie("session").value
    assert operator.get("/dashboard/").status_code == 200

    signed_out = operator.post("/dashboard/sign-out", data={"csrf_token": csrf_of(operator)})
    replayed = app.test_client()
    replayed.set_cookie("session", saved)

    assert signed_out.status_code == 302
    assert replayed.get("/dashboard/").headers["Location"].startswith("/dashboard/sign-in")
    assert replayed.get("/dashboard/activities/00000000-0000-4000-8000-000000000000/events").status_code == 401
    assert replayed.post("/dashboard/reconciliations", data={"csrf_token": csrf_of(replayed)}).status_code == 302


def test_two_sign_ins_are_two_sessions_and_signing_out_of_one_keeps_the_other(app, client, operator_token):
    other = app.test_client()
    assert sign_in(client, operator_token).status_code == 302
    assert sign_in(other, operator_token).status_code == 302

    client.post("/dashboard/sign-out", data={"csrf_token": csrf_of(client)})

    assert client.get("/dashboard/").status_code == 302
    assert other.get("/dashboard/").status_code == 200
