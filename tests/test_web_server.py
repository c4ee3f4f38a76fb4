"""The web server as deployed: gunicorn with gunicorn.conf.py (its worker class, its checks) as
a real process on a free port. Long-lived streams and slow clients never take the threads that
ordinary requests need, and gunicorn's own error answers are problem+json (issue 8, findings 11
and 14)."""
from __future__ import annotations

import re
import socket
import sys
import threading
import time
import uuid

import pytest
import requests

from pipeline import wallets
from pipeline.bulk.upload import upload
from pipeline.users import create_api_key
from tests.processes import Process
from tests.conftest import test_environ
from tests.test_bulk_pipeline import RecordingQueue, csv_of, seed_users
from tests.test_events import free_port, money, move, wait_listening
from web.dashboard_events import BUSY_RECONNECT_MS
from web.gunicorn_worker import HEAD_TIMEOUT_S

#: Threads of the worker and its stream budget, as deployed by default (WEB_THREADS, STREAMS_PER_PROCESS_MAX).
THREADS = 8
STREAMS_MAX = 4
#: A generous bound for an ordinary request while streams or slow clients are open, in seconds:
#: a liveness check, not a benchmark. Without the fix these requests never answer at all.
ANSWER_S = 5
#: Slow clients, each sending one byte of its request head every SLOW_BYTE_INTERVAL_S.
SLOW_CLIENTS = 40
SLOW_BYTE_INTERVAL_S = 2


def start_gunicorn(tmp_path, **environ: str) -> tuple[str, Process]:
    port = free_port()
    web = Process(tmp_path / "web.log", [
        sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", str(THREADS),
        "--bind", f"127.0.0.1:{port}", "api:create_app()"], test_environ(**environ))
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(base_url, web)
    except AssertionError:
        web.stop()
        raise
    return base_url, web


@pytest.fixture
def server(tmp_path, clean_database):
    base_url, web = start_gunicorn(tmp_path, STREAMS_PER_PROCESS_MAX=str(STREAMS_MAX),
                                   EVENTS_FEED_DURATION_MAX_S="60", EVENTS_FEED_BLOCK_MS="1000")
    yield base_url
    web.stop()


def assert_answers_quickly(method: str, url: str, status: int, **kwargs) -> requests.Response:
    started = time.monotonic()
    response = requests.request(method, url, timeout=ANSWER_S, **kwargs)
    assert response.status_code == status, response.text
    assert time.monotonic() - started < ANSWER_S
    return response


def dashboard_session(base_url: str, token: str) -> requests.Session:
    session = requests.Session()
    form = session.get(f"{base_url}/dashboard/sign-in", timeout=ANSWER_S).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    signed_in = session.post(f"{base_url}/dashboard/sign-in", data={"api_key": token, "csrf_token": csrf},
                             allow_redirects=False, timeout=ANSWER_S)
    assert signed_in.status_code == 302, signed_in.text
    return session


# Finding 11: streams ---------------------------------------------------------------------------


def test_streams_past_the_shared_budget_are_refused_and_health_checks_and_transfers_still_answer(
        services, settings, server):
    alice, bob = seed_users(services, 2)
    move(services, wallets.deposit, alice, money("10.00"))
    admin = create_api_key(services.uow(), "admin")
    activity_id = upload(services.uow, RecordingQueue(), settings, csv_of([f"{alice},1.00"])).activity.id
    dashboard = dashboard_session(server, create_api_key(services.uow(), "operator"))
    bearer = {"Authorization": f"Bearer {admin}"}

    opened = []
    try:
        # What the finding used: 4 event feeds and 4 dashboard streams, on 8 threads.
        for _ in range(STREAMS_MAX):
            opened.append(requests.get(f"{server}/api/v1/events", params={"user_id": alice}, headers=bearer,
                                       stream=True, timeout=ANSWER_S))
            opened.append(dashboard.get(f"{server}/dashboard/activities/{activity_id}/events", stream=True,
                                        timeout=ANSWER_S))
        feeds, progress = opened[0::2], opened[1::2]
        refused_feeds = [response for response in feeds if response.status_code == 503]
        streaming = [response for response in opened if response.status_code == 200 and not next(
            response.iter_content(chunk_size=None, decode_unicode=True)).startswith(f"retry: {BUSY_RECONNECT_MS}")]

        assert len(streaming) == STREAMS_MAX
        assert {response.status_code for response in feeds} <= {200, 503}
        assert {response.status_code for response in progress} == {200}
        for refused in refused_feeds:
            assert refused.headers["Content-Type"] == "application/problem+json"
            assert refused.json()["code"] == "too_many_event_streams" and int(refused.headers["Retry-After"]) > 0
        past_budget = requests.get(f"{server}/api/v1/events", params={"user_id": bob}, headers=bearer,
                                   stream=True, timeout=ANSWER_S)
        assert past_budget.status_code == 503 and past_budget.json()["code"] == "too_many_event_streams"

        assert_answers_quickly("GET", f"{server}/healthz", 200)
        sent = assert_answers_quickly(
            "POST", f"{server}/api/v1/wallet/transfer", 201,
            json={"from_user_id": alice, "to_user_id": bob, "amount": "1.00", "currency": "SGD"},
            headers={**bearer, "Idempotency-Key": str(uuid.uuid4())})
        assert sent.json()["amount"] == "1.00"

        for response in opened:
            response.close()
        time.sleep(1)  # the server notices the closed streams at their next write (a heartbeat)
        deadline = time.monotonic() + 3 * ANSWER_S
        while True:  # their slots come back
            again = requests.get(f"{server}/api/v1/events", params={"user_id": bob}, headers=bearer,
                                 stream=True, timeout=ANSWER_S)
            again.close()
            if again.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert again.status_code == 200
    finally:
        for response in opened:
            response.close()


# Finding 11: slow request heads ---------------------------------------------------------------


def test_slow_request_heads_hold_no_thread_and_are_closed_with_408_within_the_head_timeout(server):
    slow = [socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1]))) for _ in range(SLOW_CLIENTS)]
    stop = threading.Event()

    def drip():
        while not stop.wait(SLOW_BYTE_INTERVAL_S):
            for sock in slow:
                try:
                    sock.sendall(b"X")
                except OSError:
                    pass  # closed by the server: what the test waits for
    for sock in slow:
        sock.sendall(b"G")
    started = time.monotonic()
    dripping = threading.Thread(target=drip, daemon=True)
    dripping.start()
    try:
        time.sleep(SLOW_BYTE_INTERVAL_S + 1)

        assert_answers_quickly("GET", f"{server}/healthz", 200)

        answers = []
        for sock in slow:
            sock.settimeout(max(0.1, started + HEAD_TIMEOUT_S + ANSWER_S - time.monotonic()))
            answers.append(sock.recv(4096))
            assert sock.recv(4096) == b""  # and then closed
        assert time.monotonic() - started < HEAD_TIMEOUT_S + ANSWER_S
        assert {answer.split(b"\r\n", 1)[0] for answer in answers} == {b"HTTP/1.1 408 Request Timeout"}
        assert all(b"application/problem+json" in answer and b'"code": "request_timeout"' in answer
                   for answer in answers)
    finally:
        stop.set()
        for sock in slow:
            sock.close()


def test_a_kept_alive_connection_serves_one_request_after_another(server):
    with requests.Session() as session:
        first = session.get(f"{server}/healthz", timeout=ANSWER_S)
        second = session.get(f"{server}/healthz", timeout=ANSWER_S)

    assert first.status_code == second.status_code == 200


# Finding 14: gunicorn's own answers --------------------------------------------------------------


def raw_answer(base_url: str, request: bytes) -> tuple[int, str, bytes]:
    with socket.create_connection(("127.0.0.1", int(base_url.rsplit(":", 1)[1])), timeout=ANSWER_S) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    content_type = re.search(rb"Content-Type: ([^\r]+)", head).group(1).decode()
    return status, content_type, body


@pytest.mark.parametrize("request_bytes, status, code", [
    (b"GET /" + b"a" * 5_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request_line_too_long"),
    (b"GET /" + b"a" * 70_000, 414, "request_line_too_long"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-N%d: v\r\n" % n for n in range(150)) + b"\r\n",
     431, "request_headers_too_large"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 9_000 + b"\r\n\r\n", 431, "request_headers_too_large"),
    (b"GET /healthz HTTP/1.1\r\n" + b"X-Many: v\r\n" * 9_000, 431, "request_headers_too_large"),
    (b"GARBAGE\r\n\r\n", 400, "malformed_request"),
    (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", 400, "malformed_request"),
], ids=["long-request-line", "request-line-past-the-head-limit", "too-many-fields", "long-field",
        "head-past-the-limit", "garbage", "field-without-colon"])
def test_gunicorns_own_refusals_are_problem_json(server, request_bytes, status, code):
    answered, content_type, body = raw_answer(server, request_bytes)

    assert (answered, content_type) == (status, "application/problem+json")
    problem = requests.models.complexjson.loads(body)
    assert (problem["status"], problem["code"]) == (status, code) and problem["detail"]


def test_a_stream_budget_above_half_the_threads_stops_gunicorn_at_start(tmp_path, clean_database):
    web = Process(tmp_path / "web.log", [
        sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", str(THREADS),
        "--bind", f"127.0.0.1:{free_port()}", "api:create_app()"],
        test_environ(STREAMS_PER_PROCESS_MAX=str(THREADS // 2 + 1)))
    try:
        exit_status = web.process.wait(timeout=60)
    finally:
        web.stop()

    assert exit_status != 0
    assert "at most half of them may stream" in web.log_path.read_text()
