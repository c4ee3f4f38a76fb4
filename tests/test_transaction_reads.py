"""Reading the ledger: a large journal entry's postings come in pages with a total (issue 8,
case 4), and a `user:` key sees only its own side of a movement (finding 10), on the real
PostgreSQL and Redis."""
from __future__ import annotations

import dataclasses
import json
import uuid

import pytest

from pipeline import wallets
from pipeline.bulk.upload import upload
from pipeline.events import publish_pending
from pipeline.users import create_api_key
from storage.event_streams import RedisEventLog
from tests.test_bulk_pipeline import RecordingQueue, apply_all, csv_of, query, seed_users
from tests.test_events import money, move, streams  # noqa: F401  (a fixture)

#: Postings per answer, as API.md says; and rows of a bulk file that makes more than two pages.
POSTINGS_PAGE_ROWS_MAX = 1_000
BULK_ROWS = 2 * POSTINGS_PAGE_ROWS_MAX + 101


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def all_postings(client, token: str, entry_id: str) -> tuple[list[dict], list[dict]]:
    """Every page of the entry's postings, following postings_next_cursor; and the answers."""
    answers, cursor = [], None
    while True:
        query = {"postings_cursor": cursor} if cursor else {}
        response = client.get(f"/api/v1/transactions/{entry_id}", query_string=query, headers=bearer(token))
        assert response.status_code == 200, response.get_json()
        answers.append(response.get_json())
        cursor = answers[-1]["postings_next_cursor"]
        if cursor is None:
            return [posting for answer in answers for posting in answer["postings"]], answers


def cents(amount: str) -> int:
    return int(amount.replace(".", ""))


# Case 4: no read truncates silently ------------------------------------------------------------


def test_a_bulk_chunks_entry_pages_all_its_postings_with_an_exact_total_that_sums_to_zero(
        services, settings, client, admin_token):
    users = seed_users(services, BULK_ROWS)
    bulk_settings = dataclasses.replace(settings, bulk_credit_chunk_rows=BULK_ROWS)
    queue = RecordingQueue()
    upload(services.uow, queue, bulk_settings, csv_of([f"{user},1.{n % 100:02d}" for n, user in enumerate(users)]))
    apply_all(services, bulk_settings, queue.take())
    ((entry_id, posting_count),) = query(services.engine, "SELECT p.journal_entry_id::text, count(*) FROM postings p"
                                                          " JOIN journal_entries j ON j.id = p.journal_entry_id"
                                                          " WHERE j.kind = 'bulk_credit' GROUP BY 1")

    postings, answers = all_postings(client, admin_token, entry_id)

    assert posting_count > BULK_ROWS  # every row, and the funding account's debit
    assert [len(answer["postings"]) for answer in answers] == [
        POSTINGS_PAGE_ROWS_MAX, POSTINGS_PAGE_ROWS_MAX, posting_count - 2 * POSTINGS_PAGE_ROWS_MAX]
    assert {answer["postings_total"] for answer in answers} == {posting_count}
    assert len({posting["id"] for posting in postings}) == posting_count  # no duplicate, none missing
    assert [posting["id"] for posting in postings] == sorted(posting["id"] for posting in postings)
    assert sum(cents(posting["amount"]) for posting in postings) == 0
    assert {posting["user_id"] for posting in postings} - {None} == set(users)


def test_a_small_entry_answers_all_its_postings_with_their_total_and_no_cursor(services, client, admin_token):
    alice, bob = seed_users(services, 2)
    move(services, wallets.deposit, alice, money("10.00"))
    sent = move(services, wallets.transfer, alice, bob, money("4.00"))

    answer = client.get(f"/api/v1/transactions/{sent.entry.id}", headers=bearer(admin_token)).get_json()

    assert (answer["postings_total"], answer["postings_next_cursor"]) == (2, None)
    assert sorted(cents(posting["amount"]) for posting in answer["postings"]) == [-400, 400]


def test_a_forged_postings_cursor_is_refused_with_422_naming_the_parameter(services, client, admin_token):
    (alice,) = seed_users(services, 1)
    deposit = move(services, wallets.deposit, alice, money("1.00"))

    for forged in ("nope", "cC05OTk5OTk5OTk5OTk5OTk5OTk5OTk", "-1"):
        response = client.get(f"/api/v1/transactions/{deposit.entry.id}", query_string={"postings_cursor": forged},
                              headers=bearer(admin_token))
        assert response.status_code == 422 and response.mimetype == "application/problem+json"
        assert response.get_json()["errors"][0]["field"] == "postings_cursor"


# Finding 10: each party sees only its own side ------------------------------------------------


@pytest.fixture
def transfer_between(services, clean_database):
    """Alice (10.00) sends Bob (who holds 50.00) 0.01; their keys and the transfer."""
    alice, bob = seed_users(services, 2)
    move(services, wallets.deposit, alice, money("10.00"))
    move(services, wallets.deposit, bob, money("50.00"))
    sent = move(services, wallets.transfer, alice, bob, money("0.01"))
    tokens = {user: create_api_key(services.uow(), f"user:{user}") for user in (alice, bob)}
    return alice, bob, tokens, sent.entry.id


def wallet_id_of(services, user_id: str) -> int:
    return query(services.engine, "SELECT id FROM wallets WHERE user_id = :u", u=user_id)[0][0]


def test_each_party_of_a_transfer_sees_only_its_own_posting_and_an_admin_sees_both(
        services, client, admin_token, transfer_between):
    alice, bob, tokens, entry_id = transfer_between
    alice_wallet, bob_wallet = wallet_id_of(services, alice), wallet_id_of(services, bob)

    seen = {user: client.get(f"/api/v1/transactions/{entry_id}", headers=bearer(tokens[user])).get_json()
            for user in (alice, bob)}
    admin = client.get(f"/api/v1/transactions/{entry_id}", headers=bearer(admin_token)).get_json()

    assert [(p["wallet_id"], p["amount"], p["balance_after"]) for p in seen[alice]["postings"]] == [
        (alice_wallet, "-0.01", "9.99")]
    assert [(p["wallet_id"], p["amount"], p["balance_after"]) for p in seen[bob]["postings"]] == [
        (bob_wallet, "0.01", "50.01")]
    # As JSON strings, amounts are quoted: a timestamp such as 07:17:59.997 never matches them.
    assert '"50.01"' not in json.dumps(seen[alice])
    assert '"9.99"' not in json.dumps(seen[bob])
    assert seen[alice]["postings_total"] == seen[bob]["postings_total"] == 1
    assert {(p["wallet_id"], p["balance_after"]) for p in admin["postings"]} == {
        (alice_wallet, "9.99"), (bob_wallet, "50.01")}


def test_a_user_key_gets_404_for_an_entry_it_has_no_posting_in_exactly_as_for_an_unknown_one(
        services, client, transfer_between):
    alice, bob, tokens, entry_id = transfer_between
    (carol,) = seed_users(services, 1)
    carol_token = create_api_key(services.uow(), f"user:{carol}")
    bob_deposit = query(services.engine, "SELECT id::text FROM journal_entries WHERE kind = 'deposit'"
                                         " AND to_user_id = :u", u=bob)[0][0]

    strangers = [client.get(f"/api/v1/transactions/{entry_id}", headers=bearer(carol_token)),
                 client.get(f"/api/v1/transactions/{bob_deposit}", headers=bearer(tokens[alice]))]
    unknown = client.get(f"/api/v1/transactions/{uuid.uuid4()}", headers=bearer(carol_token))

    for response in [*strangers, unknown]:
        assert response.status_code == 404 and response.get_json()["code"] == "not_found"


def test_a_user_sees_only_its_own_credit_in_a_bulk_chunks_entry_and_the_amount_it_received(
        services, settings, client, admin_token):
    users = seed_users(services, 3)
    queue = RecordingQueue()
    upload(services.uow, queue, settings, csv_of([f"{user},{n + 1}.00" for n, user in enumerate(users)]))
    apply_all(services, settings, queue.take())
    ((entry_id,),) = query(services.engine, "SELECT id::text FROM journal_entries WHERE kind = 'bulk_credit'")
    token = create_api_key(services.uow(), f"user:{users[1]}")

    answer = client.get(f"/api/v1/transactions/{entry_id}", headers=bearer(token)).get_json()

    assert [(p["user_id"], p["amount"], p["balance_after"]) for p in answer["postings"]] == [(users[1], "2.00", "2.00")]
    assert (answer["amount"], answer["postings_total"]) == ("2.00", 1)


def test_a_users_history_lists_only_its_own_postings_with_its_own_balances(services, client, transfer_between):
    alice, bob, tokens, entry_id = transfer_between

    history = {user: client.get(f"/api/v1/users/{user}/transactions", headers=bearer(tokens[user])).get_json()
               for user in (alice, bob)}

    alice_item = next(item for item in history[alice]["data"] if item["id"] == entry_id)
    bob_item = next(item for item in history[bob]["data"] if item["id"] == entry_id)
    assert (alice_item["direction"], alice_item["balance_after"], alice_item["counterparty_user_id"]) == (
        "debit", "9.99", bob)
    assert (bob_item["direction"], bob_item["balance_after"], bob_item["counterparty_user_id"]) == (
        "credit", "50.01", alice)
    assert '"50.01"' not in json.dumps(history[alice]) and '"9.99"' not in json.dumps(history[bob])
    assert client.get(f"/api/v1/users/{bob}/transactions", headers=bearer(tokens[alice])).status_code == 403


def test_a_users_event_stream_carries_only_its_own_side_of_a_transfer(
        services, settings, app, streams, transfer_between):
    alice, bob, tokens, entry_id = transfer_between
    publish_pending(services.uow, RedisEventLog.from_settings(settings), batch_max=100)
    original = services.settings
    services.settings = dataclasses.replace(original, events_feed_duration_max_s=0.3, events_feed_block_ms=100)
    try:
        bodies = {user: app.test_client().get("/api/v1/events", query_string={"user_id": user, "last_event_id": "0"},
                                              headers=bearer(tokens[user])).get_data(as_text=True)
                  for user in (alice, bob)}
    finally:
        services.settings = original

    for user, other in ((alice, bob), (bob, alice)):
        received = [json.loads(line[6:]) for line in bodies[user].splitlines() if line.startswith("data: ")]
        transfer = [event for event in received if event["transaction_id"] == entry_id]
        assert len(transfer) == 1 and {event["user_id"] for event in received} == {user}
    assert "50.01" not in bodies[alice] and "9.99" not in bodies[bob]
