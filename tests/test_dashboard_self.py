"""A user's own page on the dashboard, through Flask's test client on the real PostgreSQL and
Redis: a `user:<id>` key signs in to its own page and reaches nothing else, nor another
user's page; the page shows balances and history, follows the user's own events only, checks
a transfer as it is typed and sends it once per form, whatever the clicks."""
from __future__ import annotations

import dataclasses
import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from pipeline import audit, lifecycle, wallets
from pipeline.events import ALL_EVENTS_STREAM, publish_pending, user_shard
from pipeline.users import create_api_key, create_user
from storage.event_streams import RedisEventLog
from tests.test_bulk_pipeline import balances, query
from tests.test_bulk_reversal import move
from tests.test_dashboard import csrf_of, sign_in
from tests.test_dashboard_payouts import flashes, text_of
from web import dashboard_self

#: 1.5% of the amount, paid by the sender, as the seed's mini wallet charged.
FEE_BPS = 150


@pytest.fixture
def fee_settings(services, app):
    """The app with TRANSFER_FEE_BPS=150 and event feeds that end after 0.3 s."""
    original = services.settings
    services.settings = dataclasses.replace(original, transfer_fee_bps=FEE_BPS, events_feed_duration_max_s=0.3,
                                            events_feed_block_ms=100)
    yield services.settings
    services.settings = original


@pytest.fixture
def alice(services, clean_database) -> str:
    user = create_user(services.uow(), "Alice Tan", "alice@example.com")
    move(services, wallets.deposit, user.id, 1_000_00)
    return user.id


@pytest.fixture
def bob(services, clean_database) -> str:
    return create_user(services.uow(), "Bob Lim", "bob@example.com").id


@pytest.fixture
def as_alice(app, services, alice, fee_settings):
    client = app.test_client()
    assert sign_in(client, create_api_key(services.uow(), f"user:{alice}")).status_code == 302
    return client


def transfer_key_of(client, user_id: str) -> str:
    return re.search(r'name="transfer_key" value="([^"]+)"', client.get(f"/dashboard/me/{user_id}").text).group(1)


def send(client, user_id: str, key: str, **fields):
    return client.post(f"/dashboard/me/{user_id}/transfer",
                       data={"csrf_token": csrf_of(client), "transfer_key": key, "currency": "SGD", **fields})


def test_a_user_key_signs_in_to_its_own_page_which_shows_balance_and_history(as_alice, alice, bob, services):
    move(services, wallets.deposit, alice, 1_234_00)

    home = as_alice.get("/dashboard/")
    page = as_alice.get(f"/dashboard/me/{alice}")

    assert home.status_code == 302 and home.headers["Location"] == f"/dashboard/me/{alice}"
    shown = text_of(page.text)
    assert page.status_code == 200 and "Alice Tan" in shown and "My wallet" in shown
    assert "SGD 2,234.00 0.00 2,234.00 active" in shown
    assert "deposit +1,234.00 SGD 0.00 2,234.00" in shown and "deposit +1,000.00 SGD 0.00 1,000.00" in shown
    assert "Bulk credit" not in shown and "Reconciliation" not in shown  # no operator's menu
    assert "1.5% of the amount" in shown


def every_dashboard_rule(app):
    return [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("dashboard.")]


def test_a_user_key_is_refused_every_operator_page_and_action_with_403(app, as_alice, alice, bob, engine):
    placeholders = {"user_id": alice, "activity_id": str(uuid.uuid4()), "code": "SGD", "filename": "dashboard.css"}
    tried = 0
    for rule in every_dashboard_rule(app):
        if rule.endpoint in dashboard_self.ENDPOINTS or rule.endpoint == "dashboard.home":
            continue
        path = rule.build(placeholders, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            answer = as_alice.open(path, method=method, data={"csrf_token": csrf_of(as_alice), "reason": "x"})
            assert answer.status_code == 403, (method, path, answer.status_code)
            assert "opens its own page only" in answer.text
            tried += 1

    assert tried >= 15  # uploads, retries, approvals, users, reconciliations, ...
    assert query(engine, "SELECT count(*) FROM reconciliations") == [(0,)]
    assert as_alice.get(f"/dashboard/users/{alice}").status_code == 403  # even about themselves


def test_no_key_reaches_another_users_own_page_and_nothing_moves_for_it(app, services, as_alice, alice, bob, engine):
    before = balances(engine)
    operator = app.test_client()
    assert sign_in(operator, create_api_key(services.uow(), "admin")).status_code == 302

    for client, user_id in ((as_alice, bob), (operator, alice)):
        assert client.get(f"/dashboard/me/{user_id}").status_code == 403
        assert client.get(f"/dashboard/me/{user_id}/events").status_code == 403
        assert client.get(f"/dashboard/me/{user_id}/transfer-check?amount=1.00").status_code == 403
        sent = send(client, user_id, dashboard_self.new_transfer_key(), to_user_id=alice, amount="1.00")
        assert sent.status_code == 403
    assert as_alice.get("/dashboard/me/not-a-uuid").status_code == 422
    assert balances(engine) == before


def check(client, user_id: str, **fields):
    return client.get(f"/dashboard/me/{user_id}/transfer-check", query_string={"currency": "SGD", **fields})


def field_errors(answer) -> dict[str, str]:
    return {error["field"]: error["message"] for error in answer.get_json().get("errors", [])}


def test_a_transfer_is_checked_as_it_is_typed_with_the_fee_the_api_charges(as_alice, alice, bob):
    passing = check(as_alice, alice, to_user_id=bob, amount="10.00")
    assert passing.status_code == 200
    assert passing.get_json() == {"currency": "SGD", "amount": "10.00", "fee": "0.15", "total": "10.15",
                                  "available": "1000.00"}

    for amount in ("abc", "1.234", "0", "-5.00", "1e3", ""):
        refused = check(as_alice, alice, to_user_id=bob, amount=amount)
        assert refused.status_code == 422 and refused.mimetype == "application/problem+json", amount
        assert refused.get_json()["code"] == "validation_failed" and set(field_errors(refused)) == {"amount"}, amount

    short = check(as_alice, alice, to_user_id=bob, amount="990.00")  # 990.00 + 14.85 > 1,000.00
    assert (short.status_code, short.get_json()["code"]) == (422, "insufficient_funds")
    assert "14.85 SGD" in field_errors(short)["amount"] and "1000.00 SGD" in field_errors(short)["amount"]
    assert check(as_alice, alice, to_user_id=bob, amount="985.22").status_code == 200  # 985.22 + 14.78

    for to_user_id, says in ((alice, "your own id"), (str(uuid.uuid4()), "no user"), ("bob", "uuid")):
        refused = check(as_alice, alice, to_user_id=to_user_id, amount="1.00")
        assert refused.status_code == 422 and says in field_errors(refused)["to_user_id"]
    both = check(as_alice, alice, to_user_id=alice, amount="5000.00")
    assert set(field_errors(both)) == {"to_user_id", "amount"}


def test_a_transfer_from_a_frozen_wallet_is_refused_while_it_is_typed(services, as_alice, alice, bob):
    with services.uow() as uow:
        lifecycle.set_frozen(uow, alice, "SGD", True, "fraud check", audit.COMMAND_LINE)
        uow.commit()

    refused = check(as_alice, alice, to_user_id=bob, amount="1.00")

    assert refused.status_code == 422 and "frozen" in field_errors(refused)["currency"]


def test_a_transfer_form_sent_twice_transfers_once_and_says_so(as_alice, alice, bob, engine):
    key = transfer_key_of(as_alice, alice)

    first = send(as_alice, alice, key, to_user_id=bob, amount="10.00", reference="lunch")
    shown_first = flashes(as_alice.get(first.headers["Location"]))
    second = send(as_alice, alice, key, to_user_id=bob, amount="10.00", reference="lunch")
    shown_second = flashes(as_alice.get(second.headers["Location"]))

    assert first.status_code == second.status_code == 302
    assert "Sent 10.00 SGD" in shown_first and "fee of 0.15 SGD" in shown_first
    assert "sent already" in shown_second
    assert balances(engine) == {alice: 989_85, bob: 10_00}
    assert query(engine, "SELECT kind, amount, fee, reference FROM journal_entries WHERE kind = 'transfer'") == [
        ("transfer", 10_00, 15, "lunch")]
    page = text_of(as_alice.get(f"/dashboard/me/{alice}").text)
    assert "transfer −10.00 SGD 0.15 989.85" in page and bob[:8] in page


def test_two_submissions_of_one_form_at_once_transfer_once(app, as_alice, alice, bob, engine):
    key = transfer_key_of(as_alice, alice)
    twin = app.test_client()  # the same session in a second connection: a double click that raced
    twin.set_cookie("session", as_alice.get_cookie("session").value)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda client: send(client, alice, key, to_user_id=bob, amount="10.00"),
                                (as_alice, twin)))

    assert [answer.status_code for answer in answers] == [302, 302]
    assert balances(engine) == {alice: 989_85, bob: 10_00}
    assert query(engine, "SELECT count(*) FROM journal_entries WHERE kind = 'transfer'") == [(1,)]


def test_a_refused_transfer_shows_the_apis_code_and_moves_nothing(as_alice, alice, bob, engine):
    def refusal_of(key: str, **fields) -> str:
        sent = send(as_alice, alice, key, **fields)
        return flashes(as_alice.get(sent.headers["Location"]))

    assert "insufficient_funds" in refusal_of(transfer_key_of(as_alice, alice), to_user_id=bob, amount="999.00")
    assert "same_wallet" in refusal_of(transfer_key_of(as_alice, alice), to_user_id=alice, amount="1.00")
    assert "transfer_key" in refusal_of("my-own-key", to_user_id=bob, amount="1.00")
    assert "amount" in refusal_of(transfer_key_of(as_alice, alice), to_user_id=bob, amount="1.001")
    assert balances(engine) == {alice: 1_000_00}


def users_in_one_shard(services, shards: int) -> tuple[str, str]:
    """Two users whose events share a stream shard, so only the feed's filter tells them apart."""
    first = str(uuid.uuid4())
    while user_shard(second := str(uuid.uuid4()), shards) != user_shard(first, shards):
        pass
    with services.uow() as uow:
        uow.bulk.copy_users([(first, "Cleo", f"{first}@example.test"), (second, "Dev", f"{second}@example.test")])
        uow.commit()
    return first, second


def test_the_own_event_stream_sends_the_users_events_and_never_another_users(app, services, settings, fee_settings):
    streams = redis.Redis.from_url(settings.redis_url)
    for key in streams.scan_iter(match=f"{ALL_EVENTS_STREAM}*", count=1_000):
        streams.delete(key)
    cleo, dev = users_in_one_shard(services, fee_settings.events_user_shards)
    move(services, wallets.deposit, cleo, 50_00)
    move(services, wallets.deposit, dev, 70_00)
    move(services, wallets.deposit, cleo, 3_00)
    publish_pending(services.uow, RedisEventLog.from_settings(settings), batch_max=100)
    client = app.test_client()
    assert sign_in(client, create_api_key(services.uow(), f"user:{cleo}")).status_code == 302

    stream = client.get(f"/dashboard/me/{cleo}/events?last_event_id=0")  # from the oldest entry kept

    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    sent = [json.loads(line[6:]) for line in stream.get_data(as_text=True).splitlines() if line.startswith("data: ")]
    assert [(event["user_id"], event["amount"], event["balance_after"]) for event in sent] == [
        (cleo, "50.00", "50.00"), (cleo, "3.00", "53.00")]
    assert dev not in stream.get_data(as_text=True)
    assert app.test_client().get(f"/dashboard/me/{cleo}/events").status_code == 401  # signed out
