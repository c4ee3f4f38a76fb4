"""Body limits against a real gunicorn (as deployed: gunicorn.conf.py), over raw sockets: a body past
REQUEST_BODY_MAX_BYTES is refused with 413 from its Content-Length before the rest is sent, and a
chunked body is cut off at the limit as it is read; only the CSV upload takes more. No money
moves on a refusal."""
from __future__ import annotations

import socket
import sys
import threading
import uuid

import pytest
import requests
from sqlalchemy import text

from pipeline.users import create_api_key
from tests.conftest import test_environ
from tests.processes import Process
from tests.test_events import free_port, wait_listening
from web.inputs import REQUEST_BODY_MAX_BYTES

#: What a test claims to send: far past any limit, as in the security review.
CLAIMED_BYTES = 150 * 1024 * 1024
#: How long the server gets to answer once the test stops sending, in seconds.
ANSWER_S = 20


@pytest.fixture
def server(tmp_path, clean_database):
    port = free_port()
    web = Process(tmp_path / "web.log", [
        sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", "8",  # gunicorn.conf.py's worker class
        "--bind", f"127.0.0.1:{port}", "api:create_app()"], test_environ())
    try:
        wait_listening(f"http://127.0.0.1:{port}", web)
        yield port
    finally:
        web.stop()


@pytest.fixture
def admin(services, clean_database) -> str:
    return create_api_key(services.uow(), "admin")


@pytest.fixture
def user_id(server, admin) -> str:
    response = requests.post(f"http://127.0.0.1:{server}/api/v1/users", json={"name": "Ana", "email": "a@example.com"},
                             headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def exchange(port: int, head: str, body_parts, *, stop_after_bytes: int | None = None) -> str:
    """Sends `head` and then the parts (in a thread, since the server may stop reading), and
    returns the status line and headers of the answer."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_S)

    def send():
        sent = 0
        try:
            connection.sendall(head.encode("latin-1"))
            for part in body_parts:
                connection.sendall(part)
                sent += len(part)
                if stop_after_bytes is not None and sent >= stop_after_bytes:
                    return
        except OSError:
            pass  # the server answered and closed: what some of these tests expect

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        answer = b""
        while b"\r\n\r\n" not in answer:
            received = connection.recv(65536)
            if not received:
                break
            answer += received
    finally:
        connection.close()
    return answer.split(b"\r\n\r\n")[0].decode("latin-1")


def chunked(parts):
    for part in parts:
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def padding(total_bytes: int, part_bytes: int = 64 * 1024):
    """JSON's own whitespace: a body padded with it is still the deposit, with no field added."""
    for _ in range(total_bytes // part_bytes):
        yield b" " * part_bytes


def deposit_head(port: int, token: str, framing: str) -> str:
    return (f"POST /api/v1/wallet/deposit HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Idempotency-Key: {uuid.uuid4()}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n")


def journal_entries(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM journal_entries")).scalar_one()


def test_a_deposit_declaring_150_mb_is_refused_with_413_before_its_body_is_sent(server, engine, admin, user_id):
    start = f'{{"user_id": "{user_id}", "amount": "1.00", "currency": "SGD"'.encode()
    head = deposit_head(server, admin, f"Content-Length: {CLAIMED_BYTES}")

    answer = exchange(server, head, [start, b"x" * 65536], stop_after_bytes=1)

    assert answer.startswith("HTTP/1.1 413"), answer
    assert "application/problem+json" in answer
    assert journal_entries(engine) == 0


def test_a_chunked_deposit_past_the_limit_is_refused_with_413_and_moves_nothing(server, engine, admin, user_id):
    start = f'{{"user_id": "{user_id}", "amount": "1.00", "currency": "SGD"'.encode()
    parts = [start, *padding(2 * REQUEST_BODY_MAX_BYTES), b'}']

    answer = exchange(server, deposit_head(server, admin, "Transfer-Encoding: chunked"), chunked(parts))

    assert answer.startswith("HTTP/1.1 413"), answer
    assert journal_entries(engine) == 0


def test_a_chunked_deposit_under_the_limit_moves_the_money(server, engine, admin, user_id):
    body = f'{{"user_id": "{user_id}", "amount": "1.00", "currency": "SGD"'.encode()
    parts = [body, *padding(REQUEST_BODY_MAX_BYTES // 2), b'}']

    answer = exchange(server, deposit_head(server, admin, "Transfer-Encoding: chunked"), chunked(parts))

    assert answer.startswith("HTTP/1.1 201"), answer
    assert journal_entries(engine) == 1


def sign_in_head(port: int, framing: str) -> str:
    return (f"POST /dashboard/sign-in HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n")


def test_an_unauthenticated_sign_in_declaring_150_mb_is_refused_with_413_before_its_body_is_sent(server):
    answer = exchange(server, sign_in_head(server, f"Content-Length: {CLAIMED_BYTES}"),
                      [b"api_key=" + b"x" * 65536], stop_after_bytes=1)

    assert answer.startswith("HTTP/1.1 413"), answer


def test_a_chunked_sign_in_past_the_limit_is_refused_with_413(server):
    parts = [b"csrf_token=x&api_key=", *padding(2 * REQUEST_BODY_MAX_BYTES)]

    answer = exchange(server, sign_in_head(server, "Transfer-Encoding: chunked"), chunked(parts))

    assert answer.startswith("HTTP/1.1 413"), answer


def test_a_csv_upload_past_the_json_limit_is_accepted(server, admin, user_id):
    rows = REQUEST_BODY_MAX_BYTES // 40 + 1_000
    csv = "uuid,amount\n" + "".join(f"{user_id},{n % 100 + 1}.00\n" for n in range(rows))

    response = requests.post(f"http://127.0.0.1:{server}/api/v1/wallet/bulk-credit",
                             files={"file": ("big.csv", csv.encode(), "text/csv")},
                             headers={"Authorization": f"Bearer {admin}"}, timeout=120)

    assert response.status_code == 202, response.text
    assert response.json()["total_records"] == rows
