"""Events: the outbox written with each movement, the publisher to Redis Streams, and
`GET /api/v1/events` as Server-Sent Events, on the real PostgreSQL and Redis. The last
test runs gunicorn (gthread), the scheduler and a worker as real processes."""
from __future__ import annotations

import dataclasses
import io
import json
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
import requests
from sqlalchemy import text

from jobs.events import drain, publish_events
from pipeline import events, wallets
from pipeline.bulk.upload import upload
from pipeline.event_feed import Delivery, FeedLimits, Subscription, follow
from pipeline.events import ALL_EVENTS_STREAM, USER_SHARD_STREAM, publish_pending, user_shard
from pipeline.money import currency
from pipeline.users import create_api_key
from storage.event_streams import RedisEventLog
from tests.processes import Process
from tests.conftest import test_environ
from tests.test_bulk_end_to_end import Worker
from tests.test_bulk_pipeline import RecordingQueue, apply_all, csv_of, seed_users

ROOT = Path(__file__).resolve().parent.parent
#: How long a server process gets to answer, and an SSE client to receive every event, in seconds.
START_S = 30
RECEIVE_S = 60


@pytest.fixture
def streams(settings, clean_database):
    """The test Redis with no event stream left over (the queues of other tests are left alone)."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    for key in client.scan_iter(match=f"{ALL_EVENTS_STREAM}*", count=1_000):
        client.delete(key)
    yield client
    client.close()


def outbox(engine) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT w.user_id::text, j.kind, p.amount FROM event_outbox o JOIN postings p ON p.id = o.posting_id"
            " JOIN wallets w ON w.id = p.wallet_id JOIN journal_entries j ON j.id = p.journal_entry_id"
            " ORDER BY o.id")).all()


def ledger_posting_ids(engine, user_id: str) -> list[str]:
    with engine.connect() as connection:
        return [str(posting_id) for posting_id in connection.execute(text(
            "SELECT p.id FROM postings p JOIN wallets w ON w.id = p.wallet_id WHERE w.user_id = :user_id"
            " ORDER BY p.id"), {"user_id": user_id}).scalars()]


def money(amount: str, code: str = "SGD") -> wallets.MoneyRequest:
    return wallets.MoneyRequest(currency(code), int(amount.replace(".", "")), None)


def move(services, use_case, *args) -> wallets.Moved:
    with services.uow() as uow:
        moved = use_case(uow, services.settings, *args)
        uow.commit()
    return moved


def stream_events(client: redis.Redis, key: str) -> list[dict]:
    return [json.loads(fields["event"]) for _, fields in client.xrange(key)]


def deduplicated(received: list[dict]) -> list[dict]:
    seen, unique = set(), []
    for event in received:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            unique.append(event)
    return unique


def assert_balances_follow(received: list[dict]) -> None:
    """Each balance follows from the one before: nothing missing, nothing out of order."""
    balance = 0
    for event in received:
        change = int(event["amount"].replace(".", "")) + int(event["fee"].replace(".", ""))
        balance += change if event["direction"] == "credit" else -change
        assert int(event["balance_after"].replace(".", "")) == balance, (event, balance)


# The outbox ------------------------------------------------------------------------------------


def test_a_deposit_and_a_transfer_write_one_outbox_row_per_user_posting_and_none_for_system_wallets(
        services, clean_database):
    alice, bob = seed_users(services, 2)

    move(services, wallets.deposit, alice, money("100.00"))
    move(services, wallets.transfer, alice, bob, money("30.00"))

    assert outbox(services.engine) == [(alice, "deposit", 10_000), (alice, "transfer", -3_000),
                                       (bob, "transfer", 3_000)]


def test_a_rolled_back_movement_writes_no_outbox_row(services, clean_database):
    alice, bob = seed_users(services, 2)
    move(services, wallets.deposit, alice, money("100.00"))

    with services.uow() as uow:
        wallets.transfer(uow, services.settings, alice, bob, money("30.00"))
        assert len(uow.connection.execute(text("SELECT id FROM event_outbox")).all()) == 3  # seen inside
    # left without commit: rolled back

    assert outbox(services.engine) == [(alice, "deposit", 10_000)]


def test_a_refused_transfer_over_http_writes_no_outbox_row(services, client, admin_token):
    alice, bob = seed_users(services, 2)
    move(services, wallets.deposit, alice, money("10.00"))

    response = client.post("/api/v1/wallet/transfer", headers={
        "Authorization": f"Bearer {admin_token}", "Idempotency-Key": "too-much"},
        json={"from_user_id": alice, "to_user_id": bob, "amount": "10.01", "currency": "SGD"})

    assert response.status_code == 422
    assert outbox(services.engine) == [(alice, "deposit", 1_000)]


def test_a_bulk_credit_chunk_writes_one_outbox_row_per_credited_row(services, settings, clean_database):
    users = seed_users(services, 5)
    bulk_settings = dataclasses.replace(settings, bulk_credit_chunk_rows=2)
    queue = RecordingQueue()
    lines = [f"{user},{n + 1}.00" for n, user in enumerate(users)] + [f"{users[0]},0.50", "not-a-uuid,1.00"]

    upload(services.uow, queue, bulk_settings, csv_of(lines))
    apply_all(services, bulk_settings, queue.take())

    rows = outbox(services.engine)
    assert len(rows) == 6 and {kind for _, kind, _ in rows} == {"bulk_credit"}
    assert sorted(amount for _, _, amount in rows) == [50, 100, 200, 300, 400, 500]


# The publisher ---------------------------------------------------------------------------------


def test_the_publisher_moves_every_event_to_the_streams_in_ledger_order_per_wallet_and_empties_the_outbox(
        services, settings, streams):
    users = seed_users(services, 4)
    for user in users:
        move(services, wallets.deposit, user, money("100.00"))

    def transfers(offset: int):
        for n in range(30):
            move(services, wallets.transfer, users[(n + offset) % 4], users[(n + offset + 1) % 4], money("1.00"))

    threads = [threading.Thread(target=transfers, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log = RedisEventLog.from_settings(settings)
    while publish_pending(services.uow, log, batch_max=50):
        pass

    assert outbox(services.engine) == []
    everything = stream_events(streams, ALL_EVENTS_STREAM)
    assert len(everything) == 4 + 4 * 30 * 2
    for user in users:
        mine = [event for event in everything if event["user_id"] == user]
        assert [event["event_id"] for event in mine] == ledger_posting_ids(services.engine, user)
        shard = USER_SHARD_STREAM.format(shard=user_shard(user, settings.events_user_shards))
        assert [event for event in stream_events(streams, shard) if event["user_id"] == user] == mine
        assert_balances_follow(mine)


def test_an_event_carries_its_type_amount_balance_and_transaction(services, settings, streams):
    alice, bob = seed_users(services, 2)
    move(services, wallets.deposit, alice, money("100.00"))
    sent = move(services, wallets.transfer, alice, bob, money("30.00"))

    publish_pending(services.uow, RedisEventLog.from_settings(settings), batch_max=10)

    deposit, debit, credit = stream_events(streams, ALL_EVENTS_STREAM)
    assert (deposit["type"], deposit["amount"], deposit["balance_after"]) == ("deposit", "100.00", "100.00")
    assert {key: debit[key] for key in ("type", "user_id", "currency", "amount", "balance_after",
                                        "transaction_id", "counterparty_user_id")} == {
        "type": "transfer.sent", "user_id": alice, "currency": "SGD", "amount": "30.00",
        "balance_after": "70.00", "transaction_id": sent.entry.id, "counterparty_user_id": bob}
    assert (credit["type"], credit["user_id"], credit["balance_after"]) == ("transfer.received", bob, "30.00")
    assert debit["occurred_at"].endswith("Z") and debit["activity_id"] is None


class CrashAfterAppend:
    """Appends to Redis, then dies before the outbox rows are deleted, as a killed publisher would."""

    def __init__(self, log):
        self.log = log

    def append(self, batch):
        self.log.append(batch)
        raise RuntimeError("publisher killed between XADD and the delete")


def test_a_publisher_crash_between_append_and_delete_publishes_the_events_again_with_the_same_ids(
        services, settings, streams):
    alice, bob = seed_users(services, 2)
    move(services, wallets.deposit, alice, money("100.00"))
    move(services, wallets.transfer, alice, bob, money("30.00"))
    log = RedisEventLog.from_settings(settings)

    with pytest.raises(RuntimeError):
        publish_pending(services.uow, CrashAfterAppend(log), batch_max=10)
    assert len(outbox(services.engine)) == 3
    assert publish_pending(services.uow, log, batch_max=10) == 3

    received = stream_events(streams, ALL_EVENTS_STREAM)
    assert len(received) == 6 and outbox(services.engine) == []
    assert [event["event_id"] for event in deduplicated(received)] == [event["event_id"] for event in received[:3]]
    assert [event["event_id"] for event in deduplicated(received) if event["user_id"] == alice] == \
        ledger_posting_ids(services.engine, alice)


def test_a_second_publisher_publishes_nothing_while_the_first_holds_the_lock(services, settings, streams):
    (alice,) = seed_users(services, 1)
    move(services, wallets.deposit, alice, money("1.00"))
    log = RedisEventLog.from_settings(settings)

    with services.uow() as first:
        assert first.events.take_publisher_lock()
        assert publish_pending(services.uow, log, batch_max=10) == 0
    assert drain(services.uow, log, batch_max=10, poll_interval_s=0.01, run_s=0.05) == 1


def test_the_publisher_job_survives_an_unreachable_redis_and_keeps_the_events_for_later(
        services, settings, streams, caplog):
    (alice,) = seed_users(services, 1)
    move(services, wallets.deposit, alice, money("1.00"))
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    unreachable = SimpleNamespace(settings=dataclasses.replace(settings, redis_url=nowhere), uow=services.uow)

    publish_events(unreachable)  # does not raise

    assert "event publisher: ConnectionError, will try again" in caplog.text
    assert outbox(services.engine) == [(alice, "deposit", 100)]


def test_bulk_credit_events_go_to_the_activity_stream_with_their_row_numbers(services, settings, streams):
    users = seed_users(services, 3)
    bulk_settings = dataclasses.replace(settings, bulk_credit_chunk_rows=2)
    queue = RecordingQueue()
    lines = [f"{user},{n + 1}.00" for n, user in enumerate(users)]
    activity_id = upload(services.uow, queue, bulk_settings, csv_of(lines)).activity.id
    apply_all(services, bulk_settings, queue.take())

    publish_pending(services.uow, RedisEventLog.from_settings(settings), batch_max=10)

    credited = stream_events(streams, events.ACTIVITY_STREAM.format(activity_id=activity_id))
    assert sorted((event["row_number"], event["user_id"], event["amount"]) for event in credited) == [
        (n + 2, user, f"{n + 1}.00") for n, user in enumerate(users)]
    assert {event["type"] for event in credited} == {"bulk_credit.credited"}
    assert {event["activity_id"] for event in credited} == {activity_id}
    assert 0 < streams.ttl(events.ACTIVITY_STREAM.format(activity_id=activity_id)) <= settings.events_activity_ttl_s


# The feed, on a stub stream ---------------------------------------------------------------------


class StubReader:
    """Returns `batches` one read at a time, then nothing; time passes only while a read waits in vain."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.reads = []
        self.now = 0.0

    def last_id(self, stream):
        return "5-0"

    def read(self, stream, after_id, block_ms, count):
        self.reads.append((after_id, block_ms, count))
        if self.batches:
            return self.batches.pop(0)
        self.now += block_ms / 1000
        return []


def test_a_user_feed_skips_other_users_of_its_shard_and_sends_heartbeats_until_its_duration_ends():
    reader = StubReader([[("6-0", "alice", '{"n":1}'), ("7-0", "bob", '{"n":2}'), ("8-0", "alice", '{"n":3}')]])
    limits = FeedLimits(duration_max_s=3, block_ms=1_000, read_count_max=50)

    sent = list(follow(reader, Subscription("shard", "alice"), None, limits, clock=lambda: reader.now))

    assert sent == [Delivery("6-0", '{"n":1}'), Delivery("8-0", '{"n":3}'), Delivery(), Delivery(), Delivery()]
    assert reader.reads == [("5-0", 1_000, 50), ("8-0", 1_000, 50), ("8-0", 1_000, 50), ("8-0", 1_000, 50)]
    assert reader.now == 3


# HTTP: scopes and validation ---------------------------------------------------------------------


@pytest.fixture
def short_feeds(services, app):
    """The app with feeds that end after 0.3 s, so a test client can read a whole response."""
    original = services.settings
    services.settings = dataclasses.replace(original, events_feed_duration_max_s=0.3, events_feed_block_ms=100)
    yield app
    services.settings = original


def get_events(client, token, **query):
    return client.get("/api/v1/events", query_string=query, headers={"Authorization": f"Bearer {token}"})


def test_a_user_token_streams_its_own_events_but_not_another_users_nor_an_activity(services, client, streams):
    alice, bob = seed_users(services, 2)
    alice_token = create_api_key(services.uow(), f"user:{alice}")

    forbidden = get_events(client, alice_token, user_id=bob)
    activity = get_events(client, alice_token, activity_id=str(uuid.uuid4()))

    assert forbidden.status_code == 403 and forbidden.json["code"] == "forbidden"
    assert activity.status_code == 403
    assert client.get("/api/v1/events", query_string={"user_id": alice}).status_code == 401


def test_an_events_request_needs_exactly_one_valid_filter_and_a_valid_last_event_id(services, client, admin_token):
    assert get_events(client, admin_token).status_code == 422
    assert get_events(client, admin_token, user_id=str(uuid.uuid4()), activity_id=str(uuid.uuid4())).status_code == 422
    assert get_events(client, admin_token, user_id="nope").status_code == 422
    assert get_events(client, admin_token, user_id=str(uuid.uuid4()), last_event_id="1-0; drop").status_code == 422


def test_an_operator_streams_an_activity_and_a_user_streams_itself_as_server_sent_events(
        services, short_feeds, streams):
    client = short_feeds.test_client()
    (alice,) = seed_users(services, 1)
    operator = create_api_key(services.uow(), "operator")
    alice_token = create_api_key(services.uow(), f"user:{alice}")

    for token, query in ((operator, {"activity_id": str(uuid.uuid4())}), (alice_token, {"user_id": alice})):
        response = get_events(client, token, **query)
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        body = response.get_data(as_text=True)  # ends after EVENTS_FEED_DURATION_MAX_S
        assert body.startswith("retry: ") and ": heartbeat" in body




def test_the_openapi_document_describes_the_event_stream(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/api/v1/events"]["get"]

    assert {parameter["name"] for parameter in operation["parameters"]} >= {"user_id", "activity_id", "Last-Event-ID"}
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"401", "403", "422", "503"} <= set(operation["responses"])

def test_a_process_serves_at_most_its_limit_of_event_streams_and_frees_a_slot_when_one_closes(
        services, short_feeds, streams, admin_token):
    services.settings = dataclasses.replace(services.settings, streams_per_process_max=1)
    client = short_feeds.test_client()
    user_id = str(uuid.uuid4())

    first = get_events(client, admin_token, user_id=user_id)  # open: its body is not read yet
    refused = get_events(client, admin_token, user_id=user_id)
    first.close()
    after = get_events(client, admin_token, user_id=user_id)

    assert first.status_code == 200
    assert (refused.status_code, refused.json["code"]) == (503, "too_many_event_streams")
    assert after.status_code == 200 and after.get_data(as_text=True).startswith("retry: ")

# End to end: gunicorn (gthread), the scheduler's publisher and a worker as real processes ------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def live_stack(tmp_path, streams):
    """gunicorn gthread on a free port, the scheduler (whose publisher moves the outbox) and one worker;
    every one is stopped afterwards, even when another failed to start."""
    port = free_port()
    environ = test_environ(EVENTS_FEED_DURATION_MAX_S="60", EVENTS_FEED_BLOCK_MS="500")
    base_url = f"http://127.0.0.1:{port}"
    started: list = []
    try:
        started.append(Process(tmp_path / "web.log", [
            sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", "8",
            "--bind", f"127.0.0.1:{port}", "api:create_app()"], environ))
        started.append(Process(tmp_path / "scheduler.log", [sys.executable, "-m", "jobs"], environ))
        started.append(Worker(tmp_path / "worker.log"))
        wait_listening(base_url, started[0])
        started[-1].wait_ready()
        yield base_url, started
    finally:
        for process in started:
            process.stop()


def wait_listening(base_url: str, web: Process) -> None:
    deadline = time.monotonic() + START_S
    while True:
        try:
            if requests.get(f"{base_url}/healthz", timeout=3).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet, or still loading the app
        assert time.monotonic() < deadline, f"gunicorn did not start: {web.tail()}"
        time.sleep(0.2)


class SseClient:
    """Reads `GET /api/v1/events` in a thread; `events` fills up as they arrive."""

    def __init__(self, url: str, token: str, last_event_id: str | None = None, **query: str):
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.response = requests.get(url, params=query, headers=headers, stream=True, timeout=(5, 30))
        assert self.response.status_code == 200, self.response.text
        self.events: list[tuple[str, dict]] = []
        self.heartbeats = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        entry_id = None
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line.startswith("id: "):
                    entry_id = line[4:]
                elif line.startswith("data: "):
                    self.events.append((entry_id, json.loads(line[6:])))
                elif line.startswith(": heartbeat"):
                    self.heartbeats += 1
        except (requests.RequestException, AttributeError):
            pass  # closed by the test (urllib3 drops its socket under the reading thread)

    def wait_for(self, count: int, logs) -> list[dict]:
        deadline = time.monotonic() + RECEIVE_S
        while len(deduplicated([event for _, event in self.events])) < count:
            assert time.monotonic() < deadline, (f"{len(self.events)} of {count} events received\n"
                                                 + "\n".join(process.tail() for process in logs))
            time.sleep(0.1)
        return deduplicated([event for _, event in self.events])

    def close(self) -> None:
        self.response.close()


def post(base_url: str, token: str, path: str, body: dict) -> dict:
    response = requests.post(f"{base_url}/api/v1{path}", json=body, timeout=10, headers={
        "Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())})
    assert response.status_code == 201, response.text
    return response.json()


def test_an_sse_client_receives_every_transfer_and_bulk_credit_event_of_its_user_in_order(
        services, live_stack):
    base_url, processes = live_stack
    alice, bob, carol = seed_users(services, 3)
    admin = create_api_key(services.uow(), "admin")
    alice_token = create_api_key(services.uow(), f"user:{alice}")
    operator = create_api_key(services.uow(), "operator")
    feed = SseClient(f"{base_url}/api/v1/events", alice_token, user_id=alice)
    forbidden = requests.get(f"{base_url}/api/v1/events", params={"user_id": bob}, timeout=5,
                             headers={"Authorization": f"Bearer {alice_token}"})

    post(base_url, admin, "/wallet/deposit", {"user_id": alice, "amount": "50.00", "currency": "SGD"})
    for n in range(10):
        post(base_url, admin, "/wallet/transfer", {"from_user_id": alice, "to_user_id": bob, "amount": "1.00",
                                                   "currency": "SGD"})
        if n == 4:
            post(base_url, admin, "/wallet/transfer", {"from_user_id": bob, "to_user_id": alice, "amount": "0.50",
                                                       "currency": "SGD"})
    csv = f"uuid,amount\n{alice},7.00\n{bob},8.00\n{alice},9.00\n{carol},1.00\n".encode()
    uploaded = requests.post(f"{base_url}/api/v1/wallet/bulk-credit", timeout=10,
                             headers={"Authorization": f"Bearer {operator}"},
                             files={"file": ("credits.csv", io.BytesIO(csv), "text/csv")})
    assert uploaded.status_code == 202, uploaded.text
    activity_feed = SseClient(f"{base_url}/api/v1/events", operator, last_event_id="0",
                              activity_id=uploaded.json()["activity_id"])

    received = feed.wait_for(1 + 10 + 1 + 2, processes)
    activity_events = activity_feed.wait_for(4, processes)
    resumed = SseClient(f"{base_url}/api/v1/events", alice_token, last_event_id=feed.events[4][0], user_id=alice)
    rest = resumed.wait_for(14 - 5, processes)
    for client in (feed, activity_feed, resumed):
        client.close()

    assert forbidden.status_code == 403
    assert {event["user_id"] for event in received} == {alice}
    assert [event["event_id"] for event in received] == ledger_posting_ids(services.engine, alice)
    assert [event["type"] for event in received] == (["deposit"] + ["transfer.sent"] * 5 + ["transfer.received"]
                                                     + ["transfer.sent"] * 5 + ["bulk_credit.credited"] * 2)
    assert_balances_follow(received)
    assert received[-1]["balance_after"] == "56.50"  # 50 - 10 x 1.00 + 0.50 + 7.00 + 9.00
    assert rest == received[5:]
    assert sorted(event["row_number"] for event in activity_events) == [2, 3, 4, 5]


def test_a_feed_resumed_after_events_were_trimmed_away_says_so_with_a_gap_event(services, short_feeds, streams,
                                                                                 admin_token):
    client = short_feeds.test_client()
    user_id = str(uuid.uuid4())
    key = USER_SHARD_STREAM.format(shard=user_shard(user_id, services.settings.events_user_shards))
    ids = [streams.xadd(key, {"user_id": user_id, "event": json.dumps({"n": n})}) for n in range(5)]
    streams.xtrim(key, maxlen=2, approximate=False)  # what MAXLEN does to a stream no one read for long

    trimmed = get_events(client, admin_token, user_id=user_id, last_event_id=ids[0]).get_data(as_text=True)
    kept = get_events(client, admin_token, user_id=user_id, last_event_id=ids[3]).get_data(as_text=True)
    oldest = get_events(client, admin_token, user_id=user_id, last_event_id="0").get_data(as_text=True)

    assert "event: gap" in trimmed and ids[0] in trimmed and 'data: {"n": 4}' in trimmed
    assert "event: gap" not in kept and "event: gap" not in oldest
    assert trimmed.index("event: gap") < trimmed.index(f"id: {ids[3]}")
