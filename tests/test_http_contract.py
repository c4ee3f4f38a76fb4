"""The HTTP contract of ../shared/API.md, "Users and wallets", "Money movement" and the probes.

Each endpoint's success shape (exact field names, amounts as decimal strings in the
currency's digits, RFC 3339 UTC timestamps) and each documented error as
application/problem+json with a stable `code`.
"""
from __future__ import annotations

import base64
import re
import threading
import urllib.parse
import uuid

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text

from api import create_app
from pipeline.config import Settings
from pipeline.users import create_api_key
from tests import conftest
from tests.conftest import assert_ledger_invariants

RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
USER_FIELDS = {"id", "name", "email", "external_id", "created_at", "closed_at"}
WALLET_FIELDS = {"currency", "balance", "held", "available", "status", "updated_at"}
HISTORY_FIELDS = {"id", "kind", "amount", "fee", "currency", "direction", "balance_after",
                  "counterparty_user_id", "reference", "activity_id", "created_at"}
# `reference` is echoed back on every movement in addition to the documented fields.
DEPOSIT_FIELDS = {"id", "kind", "user_id", "amount", "currency", "balance_after", "created_at", "reference"}
TRANSFER_FIELDS = {"id", "kind", "from_user_id", "to_user_id", "amount", "fee", "currency", "created_at", "reference"}
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def assert_problem(response, status: int, code: str, fields: set[str] | None = None) -> dict:
    """An RFC 9457 problem with our stable code; `fields` are those named in `errors`."""
    assert response.status_code == status, response.data
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert PROBLEM_FIELDS <= set(body) <= PROBLEM_FIELDS | {"errors"}
    assert body["status"] == status and body["code"] == code
    assert all(isinstance(body[name], str) and body[name] for name in ("type", "title", "detail"))
    if fields is not None:
        assert all(set(error) == {"field", "message"} and error["message"] for error in body["errors"])
        assert {error["field"] for error in body["errors"]} == fields
    return body


def assert_timestamp(value: str) -> None:
    assert RFC3339_UTC.fullmatch(value), value


class Api:
    """A Flask test client that sends one token and makes up idempotency keys."""

    def __init__(self, client, token: str | None):
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **kwargs):
        return self.client.get(path, headers=self.headers, **kwargs)

    def post(self, path: str, body, key: str | None = "fresh"):
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = str(uuid.uuid4()) if key == "fresh" else key
        return self.client.post(path, json=body, headers=headers)

    def user(self, name: str = "Ana", email: str | None = None, **extra) -> dict:
        response = self.post("/api/v1/users", {"name": name, "email": email or f"{uuid.uuid4()}@example.com", **extra},
                             key=None)
        assert response.status_code == 201, response.data
        return response.get_json()

    def deposit(self, user_id: str, amount: str, currency: str = "SGD"):
        return self.post("/api/v1/wallet/deposit", {"user_id": user_id, "amount": amount, "currency": currency})

    def transfer(self, from_user_id: str, to_user_id: str, amount: str, currency: str = "SGD"):
        return self.post("/api/v1/wallet/transfer", {"from_user_id": from_user_id, "to_user_id": to_user_id,
                                                     "amount": amount, "currency": currency})


@pytest.fixture
def admin(client, admin_token) -> Api:
    return Api(client, admin_token)


@pytest.fixture
def token_for(services, clean_database):
    return lambda scope: create_api_key(services.uow(), scope)


# --- users ------------------------------------------------------------------------------

def test_creating_a_user_returns_201_with_the_user(admin):
    response = admin.post("/api/v1/users", {"name": "Ana Tan", "email": "ana@example.com", "external_id": "crm-1"},
                          key=None)
    assert response.status_code == 201
    assert response.mimetype == "application/json"
    user = response.get_json()
    assert set(user) == USER_FIELDS
    assert uuid.UUID(user["id"])
    assert (user["name"], user["email"], user["external_id"]) == ("Ana Tan", "ana@example.com", "crm-1")
    assert_timestamp(user["created_at"])
    assert admin.user()["external_id"] is None


def test_reading_a_user_returns_what_was_created(admin):
    user = admin.user(external_id="crm-2")
    response = admin.get(f"/api/v1/users/{user['id']}")
    assert response.status_code == 200
    assert response.get_json() == user


def test_a_duplicate_email_or_external_id_is_a_409(admin):
    admin.user(email="ana@example.com", external_id="crm-3")
    assert_problem(admin.post("/api/v1/users", {"name": "B", "email": "ana@example.com"}, key=None), 409, "conflict")
    assert_problem(admin.post("/api/v1/users", {"name": "B", "email": "ANA@example.com"}, key=None), 409, "conflict")
    body = assert_problem(admin.post("/api/v1/users", {"name": "B", "email": "b@example.com", "external_id": "crm-3"},
                                     key=None), 409, "conflict")
    assert "external_id" in body["detail"]


def test_concurrent_sign_ups_with_one_email_create_one_user_and_409_the_rest(app, admin, engine):
    clients = [app.test_client() for _ in range(8)]
    responses = [None] * len(clients)
    start = threading.Barrier(len(clients), timeout=30)

    def sign_up(index: int) -> None:
        start.wait()
        responses[index] = clients[index].post("/api/v1/users", json={"name": f"Ana {index}", "email": "ana@example.com"},
                                               headers=admin.headers)

    threads = [threading.Thread(target=sign_up, args=(index,)) for index in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(response.status_code for response in responses) == [201] + [409] * 7
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "conflict")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM users WHERE email = 'ana@example.com'")).scalar_one() == 1


def test_an_invalid_user_is_a_422_naming_each_field(admin):
    response = admin.post("/api/v1/users", {"name": "", "email": "not-an-email", "external_id": 7}, key=None)
    assert_problem(response, 422, "validation_failed", {"name", "email", "external_id"})


# JSON can carry a NUL character or a lone surrogate; PostgreSQL's text can hold neither.
UNSTORABLE_TEXT = ["a\\u0000b", "\\ud800", "x\\udfff"]


@pytest.mark.parametrize("unstorable", UNSTORABLE_TEXT)
@pytest.mark.parametrize("field", ["name", "email", "external_id"])
def test_a_user_field_with_text_postgresql_cannot_store_is_a_422(admin, field, unstorable):
    fields = {"name": '"Ana"', "email": '"ana@example.com"', "external_id": '"crm-9"'}
    fields[field] = f'"{unstorable}@example.com"' if field == "email" else f'"{unstorable}"'
    raw = "{" + ", ".join(f'"{name}": {value}' for name, value in fields.items()) + "}"
    response = admin.client.post("/api/v1/users", data=raw, content_type="application/json", headers=admin.headers)
    assert_problem(response, 422, "validation_failed", {field})


def test_an_unknown_user_is_a_404_and_a_malformed_id_a_422(admin):
    unknown = uuid.uuid4()
    for suffix in ("", "/wallets", "/balance", "/transactions"):
        assert_problem(admin.get(f"/api/v1/users/{unknown}{suffix}"), 404, "not_found")
        assert_problem(admin.get(f"/api/v1/users/not-a-uuid{suffix}"), 422, "validation_failed", {"user_id"})


# --- wallets and balances ---------------------------------------------------------------

def test_wallets_list_each_currency_with_its_balance_in_its_own_digits(admin):
    user = admin.user()["id"]
    assert admin.get(f"/api/v1/users/{user}/wallets").get_json() == {"data": []}
    assert admin.deposit(user, "12.50").status_code == 201
    assert admin.deposit(user, "1000", "JPY").status_code == 201

    response = admin.get(f"/api/v1/users/{user}/wallets")

    assert response.status_code == 200
    wallets = response.get_json()["data"]
    assert all(set(wallet) == WALLET_FIELDS for wallet in wallets)
    for wallet in wallets:
        assert_timestamp(wallet.pop("updated_at"))
    assert sorted(wallets, key=lambda w: w["currency"]) == [
        {"currency": "JPY", "balance": "1000", "held": "0", "available": "1000", "status": "active"},
        {"currency": "SGD", "balance": "12.50", "held": "0.00", "available": "12.50", "status": "active"},
    ]


def test_the_balance_of_a_currency_with_no_wallet_is_zero(admin):
    user = admin.user()["id"]
    assert admin.deposit(user, "0.05").status_code == 201
    assert admin.get(f"/api/v1/users/{user}/balance?currency=SGD").get_json() == \
        {"user_id": user, "currency": "SGD", "balance": "0.05", "held": "0.00", "available": "0.05"}
    assert admin.get(f"/api/v1/users/{user}/balance?currency=USD").get_json() == \
        {"user_id": user, "currency": "USD", "balance": "0.00", "held": "0.00", "available": "0.00"}
    assert admin.get(f"/api/v1/users/{user}/balance?currency=JPY").get_json() == \
        {"user_id": user, "currency": "JPY", "balance": "0", "held": "0", "available": "0"}
    assert admin.get(f"/api/v1/users/{user}/balance").get_json()["currency"] == "SGD"  # DEFAULT_CURRENCY


@pytest.mark.parametrize("code", ["EUR", "XXX", "sgd", ""])
def test_the_balance_of_an_unsupported_currency_is_a_422(admin, code):
    user = admin.user()["id"]
    assert_problem(admin.get(f"/api/v1/users/{user}/balance?currency={code}"), 422, "validation_failed", {"currency"})


# --- money movement ---------------------------------------------------------------------

def test_a_deposit_returns_201_with_the_new_balance(admin, engine):
    user = admin.user()["id"]
    assert admin.deposit(user, "2.50").status_code == 201
    response = admin.post("/api/v1/wallet/deposit", {"user_id": user, "amount": "10.00", "currency": "SGD",
                                                     "reference": "top-up 7"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == DEPOSIT_FIELDS
    assert uuid.UUID(body["id"])
    assert {k: body[k] for k in ("kind", "user_id", "amount", "currency", "balance_after", "reference")} == {
        "kind": "deposit", "user_id": user, "amount": "10.00", "currency": "SGD", "balance_after": "12.50",
        "reference": "top-up 7"}
    assert_timestamp(body["created_at"])
    assert admin.deposit(user, "1000", "JPY").get_json()["balance_after"] == "1000"
    assert_ledger_invariants(engine)


def test_a_withdrawal_returns_201_and_takes_the_money_out(admin, engine):
    user = admin.user()["id"]
    admin.deposit(user, "20.00")
    response = admin.post("/api/v1/wallet/withdraw", {"user_id": user, "amount": "7.25", "currency": "SGD"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == DEPOSIT_FIELDS
    assert (body["kind"], body["user_id"], body["amount"], body["balance_after"]) == ("withdrawal", user, "7.25", "12.75")
    assert_timestamp(body["created_at"])
    assert admin.get(f"/api/v1/users/{user}/balance").get_json()["balance"] == "12.75"
    assert_ledger_invariants(engine)


def test_withdrawing_more_than_the_balance_is_a_422_insufficient_funds(admin):
    user = admin.user()["id"]
    admin.deposit(user, "5.00")
    response = admin.post("/api/v1/wallet/withdraw", {"user_id": user, "amount": "5.01", "currency": "SGD"})
    assert_problem(response, 422, "insufficient_funds")
    response = admin.post("/api/v1/wallet/withdraw", {"user_id": user, "amount": "1", "currency": "USD"})
    assert_problem(response, 422, "insufficient_funds")  # no USD wallet at all
    assert admin.get(f"/api/v1/users/{user}/balance").get_json()["balance"] == "5.00"


def test_a_transfer_returns_201_and_the_sender_pays_amount_and_fee(services, clean_database, admin_token, engine):
    app = create_app(Settings.from_environ(conftest.test_environ(TRANSFER_FEE_BPS="150")))
    try:
        api = Api(app.test_client(), admin_token)
        ana, ben = api.user()["id"], api.user()["id"]
        api.deposit(ana, "100.00")
        response = api.transfer(ana, ben, "10.00")
        assert response.status_code == 201
        body = response.get_json()
        assert set(body) == TRANSFER_FIELDS
        assert {k: body[k] for k in TRANSFER_FIELDS - {"id", "created_at"}} == {
            "kind": "transfer", "from_user_id": ana, "to_user_id": ben, "amount": "10.00", "fee": "0.15",
            "currency": "SGD", "reference": None}
        assert_timestamp(body["created_at"])
        assert api.get(f"/api/v1/users/{ana}/balance").get_json()["balance"] == "89.85"
        assert api.get(f"/api/v1/users/{ben}/balance").get_json()["balance"] == "10.00"
        sent = api.get(f"/api/v1/users/{ana}/transactions").get_json()["data"][0]
        received = api.get(f"/api/v1/users/{ben}/transactions").get_json()["data"][0]
        assert (sent["direction"], sent["amount"], sent["fee"], sent["balance_after"]) == ("debit", "10.00", "0.15", "89.85")
        assert (received["direction"], received["amount"], received["fee"], received["balance_after"]) == \
            ("credit", "10.00", "0.00", "10.00")
        postings = api.get(f"/api/v1/transactions/{body['id']}").get_json()["postings"]
        assert sorted((p["user_id"] or p["system_wallet"], p["amount"]) for p in postings) == sorted(
            [(ana, "-10.15"), (ben, "10.00"), ("fees", "0.15")])
        # The fee is half-up rounded to the minor unit: 0.33 * 1.5% = 0.00495 -> 0.00, 0.34 -> 0.01.
        assert api.transfer(ana, ben, "0.33").get_json()["fee"] == "0.00"
        assert api.transfer(ana, ben, "0.34").get_json()["fee"] == "0.01"
    finally:
        app.extensions["wallet"].engine.dispose()
    assert_ledger_invariants(engine)


def test_a_transfer_to_oneself_is_a_422_same_wallet(admin):
    ana = admin.user()["id"]
    admin.deposit(ana, "10.00")
    assert_problem(admin.transfer(ana, ana, "1.00"), 422, "same_wallet")


def test_a_transfer_with_an_unknown_user_is_a_404(admin):
    ana = admin.user()["id"]
    admin.deposit(ana, "10.00")
    assert_problem(admin.transfer(ana, str(uuid.uuid4()), "1.00"), 404, "not_found")
    assert_problem(admin.transfer(str(uuid.uuid4()), ana, "1.00"), 404, "not_found")
    assert admin.get(f"/api/v1/users/{ana}/balance").get_json()["balance"] == "10.00"


@pytest.mark.parametrize("path", ["/api/v1/wallet/deposit", "/api/v1/wallet/withdraw"])
def test_a_deposit_or_withdrawal_for_an_unknown_user_is_a_404(admin, engine, path):
    response = admin.post(path, {"user_id": str(uuid.uuid4()), "amount": "1.00", "currency": "SGD"})
    assert_problem(response, 404, "not_found")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM journal_entries")).scalar_one() == 0


def test_a_transfer_of_more_than_the_balance_is_a_422_insufficient_funds(admin):
    ana, ben = admin.user()["id"], admin.user()["id"]
    admin.deposit(ana, "10.00")
    assert_problem(admin.transfer(ana, ben, "10.01"), 422, "insufficient_funds")
    assert_problem(admin.transfer(ben, ana, "0.01"), 422, "insufficient_funds")  # ben has no wallet
    assert admin.get(f"/api/v1/users/{ana}/balance").get_json()["balance"] == "10.00"
    assert admin.get(f"/api/v1/users/{ben}/wallets").get_json() == {"data": []}


@pytest.mark.parametrize("amount, currency", [
    ("12.345", "SGD"),   # more digits than SGD has
    ("1.5", "JPY"),      # JPY has none
    ("0", "SGD"), ("0.00", "SGD"), ("-5.00", "SGD"),
    ("1e3", "SGD"), ("NaN", "SGD"), ("Infinity", "SGD"), (" 5.00", "SGD"), ("5,00", "SGD"), ("", "SGD"),
    (12.5, "SGD"), (10, "SGD"), (None, "SGD"), (True, "SGD"),
    ("10000000000000.01", "SGD"),  # above the largest amount one movement may carry
    ("1" * 5000, "SGD"), ("0" * 5000 + "1", "SGD"),  # int() refuses more than 4,300 digits
])
@pytest.mark.parametrize("path", ["/api/v1/wallet/deposit", "/api/v1/wallet/withdraw", "/api/v1/wallet/transfer"])
def test_a_malformed_amount_is_a_422_naming_the_amount(admin, path, amount, currency):
    ana, ben = admin.user()["id"], admin.user()["id"]
    body = {"from_user_id": ana, "to_user_id": ben} if path.endswith("transfer") else {"user_id": ana}
    assert_problem(admin.post(path, body | {"amount": amount, "currency": currency}), 422, "validation_failed",
                   {"amount"})


@pytest.mark.parametrize("currency", ["EUR", "XXX", "sgd", None, 702])
def test_an_unsupported_currency_is_a_422_naming_the_currency(admin, currency):
    ana = admin.user()["id"]
    response = admin.post("/api/v1/wallet/deposit", {"user_id": ana, "amount": "1.00", "currency": currency})
    assert_problem(response, 422, "validation_failed", {"currency"})


@pytest.mark.parametrize("body, field", [
    ({"user_id": "not-a-uuid"}, "user_id"),
    ({"user_id": None}, "user_id"),
    ({"user_id": 42}, "user_id"),
])
def test_a_malformed_user_id_is_a_422(admin, body, field):
    response = admin.post("/api/v1/wallet/deposit", {"amount": "1.00", "currency": "SGD"} | body)
    assert_problem(response, 422, "validation_failed", {field})
    response = admin.post("/api/v1/wallet/transfer", {"from_user_id": str(uuid.uuid4()), "amount": "1.00",
                                                      "currency": "SGD", "to_user_id": body["user_id"]})
    assert_problem(response, 422, "validation_failed", {"to_user_id"})


@pytest.mark.parametrize("reference", ["", "x" * 201, 42])
def test_a_malformed_reference_is_a_422(admin, reference):
    ana = admin.user()["id"]
    response = admin.post("/api/v1/wallet/deposit", {"user_id": ana, "amount": "1.00", "currency": "SGD",
                                                     "reference": reference})
    assert_problem(response, 422, "validation_failed", {"reference"})


@pytest.mark.parametrize("unstorable", UNSTORABLE_TEXT)
@pytest.mark.parametrize("path", ["/api/v1/wallet/deposit", "/api/v1/wallet/transfer"])
def test_a_reference_with_text_postgresql_cannot_store_is_a_422(admin, path, unstorable):
    ana, ben = admin.user()["id"], admin.user()["id"]
    admin.deposit(ana, "5.00")
    users = f'"from_user_id": "{ana}", "to_user_id": "{ben}"' if path.endswith("transfer") else f'"user_id": "{ana}"'
    raw = f'{{{users}, "amount": "1.00", "currency": "SGD", "reference": "{unstorable}"}}'
    response = admin.client.post(path, data=raw, content_type="application/json",
                                 headers={**admin.headers, "Idempotency-Key": "k"})
    assert_problem(response, 422, "validation_failed", {"reference"})
    assert admin.get(f"/api/v1/users/{ana}/balance").get_json()["balance"] == "5.00"


def test_a_money_movement_without_an_idempotency_key_is_a_400(admin):
    ana = admin.user()["id"]
    response = admin.post("/api/v1/wallet/deposit", {"user_id": ana, "amount": "1.00", "currency": "SGD"}, key=None)
    assert_problem(response, 400, "idempotency_key_missing")
    assert admin.get(f"/api/v1/users/{ana}/balance").get_json()["balance"] == "0.00"


@pytest.mark.parametrize("key", ["x" * 256, "a\x00b"])
def test_an_idempotency_key_that_cannot_be_stored_is_a_422(admin, key):
    ana = admin.user()["id"]
    response = admin.post("/api/v1/wallet/deposit", {"user_id": ana, "amount": "1.00", "currency": "SGD"}, key=key)
    assert_problem(response, 422, "validation_failed", {"Idempotency-Key"})
    assert admin.get(f"/api/v1/users/{ana}/balance").get_json()["balance"] == "0.00"


def test_a_body_that_is_not_a_json_object_is_a_400(admin):
    response = admin.client.post("/api/v1/wallet/deposit", data="[1, 2]", content_type="application/json",
                                 headers={**admin.headers, "Idempotency-Key": "k"})
    assert_problem(response, 400, "malformed_request")


# --- transactions -----------------------------------------------------------------------

def test_a_transaction_is_returned_with_its_postings(admin, engine):
    ana, ben = admin.user()["id"], admin.user()["id"]
    admin.deposit(ana, "30.00")
    moved = admin.transfer(ana, ben, "12.50").get_json()

    response = admin.get(f"/api/v1/transactions/{moved['id']}")

    assert response.status_code == 200
    body = response.get_json()
    assert {k: body[k] for k in TRANSFER_FIELDS} == moved
    assert body["kind"] == "transfer" and body["amount"] == "12.50" and body["fee"] == "0.00"
    postings = body["postings"]
    assert {(p["user_id"], p["amount"], p["balance_after"]) for p in postings} == {
        (ana, "-12.50", "17.50"), (ben, "12.50", "12.50")}
    assert all(p["system_wallet"] is None for p in postings)
    deposit_id = admin.get(f"/api/v1/users/{ana}/transactions").get_json()["data"][-1]["id"]
    deposit = admin.get(f"/api/v1/transactions/{deposit_id}").get_json()
    assert {(p["user_id"], p["system_wallet"], p["amount"]) for p in deposit["postings"]} == {
        (ana, None, "30.00"), (None, "bank", "-30.00")}


def test_an_unknown_transaction_is_a_404_and_a_malformed_id_a_422(admin):
    assert_problem(admin.get(f"/api/v1/transactions/{uuid.uuid4()}"), 404, "not_found")
    assert_problem(admin.get("/api/v1/transactions/42"), 422, "validation_failed", {"id"})


# --- history ----------------------------------------------------------------------------

def test_history_lists_both_sides_of_a_transfer_newest_first(admin):
    ana, ben = admin.user()["id"], admin.user()["id"]
    admin.deposit(ana, "30.00")
    admin.deposit(ana, "500", "JPY")
    admin.post("/api/v1/wallet/withdraw", {"user_id": ana, "amount": "50", "currency": "JPY"})
    admin.transfer(ana, ben, "12.50")

    sent = admin.get(f"/api/v1/users/{ana}/transactions")
    received = admin.get(f"/api/v1/users/{ben}/transactions").get_json()["data"]

    assert sent.status_code == 200
    assert set(sent.get_json()) == {"data", "next_cursor"} and sent.get_json()["next_cursor"] is None
    items = sent.get_json()["data"]
    assert all(set(item) == HISTORY_FIELDS for item in items + received)
    for item in items + received:
        assert_timestamp(item["created_at"])
    assert [(i["kind"], i["direction"], i["amount"], i["fee"], i["currency"], i["balance_after"],
             i["counterparty_user_id"]) for i in items] == [
        ("transfer", "debit", "12.50", "0.00", "SGD", "17.50", ben),
        ("withdrawal", "debit", "50", "0", "JPY", "450", None),
        ("deposit", "credit", "500", "0", "JPY", "500", None),
        ("deposit", "credit", "30.00", "0.00", "SGD", "30.00", None),
    ]
    assert [(i["kind"], i["direction"], i["amount"], i["balance_after"], i["counterparty_user_id"])
            for i in received] == [("transfer", "credit", "12.50", "12.50", ana)]
    assert received[0]["id"] == items[0]["id"]
    only_jpy = admin.get(f"/api/v1/users/{ana}/transactions?currency=JPY").get_json()["data"]
    assert [i["currency"] for i in only_jpy] == ["JPY", "JPY"]


def test_history_pages_with_a_cursor_newest_first_without_overlap(admin):
    ana = admin.user()["id"]
    created = [admin.deposit(ana, f"{n}.00").get_json()["id"] for n in range(1, 8)]

    seen, cursor, pages = [], None, 0
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = admin.get(f"/api/v1/users/{ana}/transactions{query}").get_json()
        pages += 1
        assert len(page["data"]) <= 3
        seen += [item["id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10

    assert pages == 3
    assert seen == list(reversed(created))
    default = admin.get(f"/api/v1/users/{ana}/transactions").get_json()
    assert len(default["data"]) == 7 and default["next_cursor"] is None


def test_a_movement_arriving_between_pages_neither_repeats_nor_hides_an_item(admin):
    ana = admin.user()["id"]
    created = [admin.deposit(ana, f"{n}.00").get_json()["id"] for n in range(1, 6)]
    first = admin.get(f"/api/v1/users/{ana}/transactions?limit=2").get_json()

    newer = admin.deposit(ana, "99.00").get_json()["id"]
    rest = admin.get(f"/api/v1/users/{ana}/transactions?limit=10&cursor={first['next_cursor']}").get_json()

    assert [item["id"] for item in first["data"] + rest["data"]] == list(reversed(created))
    assert admin.get(f"/api/v1/users/{ana}/transactions?limit=1").get_json()["data"][0]["id"] == newer


def test_history_pages_hold_twenty_items_unless_asked_otherwise(admin):
    ana = admin.user()["id"]
    for n in range(21):
        assert admin.deposit(ana, f"{n + 1}.00").status_code == 201
    first = admin.get(f"/api/v1/users/{ana}/transactions").get_json()
    assert [item["amount"] for item in first["data"]] == [f"{n}.00" for n in range(21, 1, -1)]
    rest = admin.get(f"/api/v1/users/{ana}/transactions?cursor={first['next_cursor']}").get_json()
    assert [item["amount"] for item in rest["data"]] == ["1.00"] and rest["next_cursor"] is None


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("query, field", [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=-1", "limit"), ("limit=abc", "limit"), ("limit=", "limit"),
    ("limit=%C2%B2", "limit"),  # "²" is a digit to str.isdigit() but not to int()
    ("limit=" + "1" * 5000, "limit"),
    ("cursor=not-a-cursor!", "cursor"), ("currency=EUR", "currency"),
    # Cursors are opaque, but a forged one is refused before it reaches PostgreSQL.
    (f"cursor={cursor_of('p' + '9' * 30)}", "cursor"), (f"cursor={cursor_of('p-1')}", "cursor"),
    (f"cursor={cursor_of('q1')}", "cursor"), (f"cursor={cursor_of('p' + '1' * 5000)}", "cursor"),
])
def test_history_refuses_a_bad_limit_cursor_or_currency_with_a_422(admin, query, field):
    ana = admin.user()["id"]
    assert_problem(admin.get(f"/api/v1/users/{ana}/transactions?{query}"), 422, "validation_failed", {field})


@pytest.mark.parametrize("limit", ["1", "100"])
def test_history_accepts_a_limit_from_1_to_100(admin, limit):
    ana = admin.user()["id"]
    admin.deposit(ana, "1.00")
    assert admin.get(f"/api/v1/users/{ana}/transactions?limit={limit}").status_code == 200


# --- authentication and scopes ----------------------------------------------------------

ENDPOINTS = [
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/users/{user}"),
    ("GET", "/api/v1/users/{user}/wallets"),
    ("GET", "/api/v1/users/{user}/balance"),
    ("GET", "/api/v1/users/{user}/transactions"),
    ("POST", "/api/v1/wallet/deposit"),
    ("POST", "/api/v1/wallet/withdraw"),
    ("POST", "/api/v1/wallet/transfer"),
    ("GET", "/api/v1/transactions/{user}"),
]


@pytest.mark.parametrize("authorization", [None, "Bearer ", "Bearer wp_not-a-real-token", "Basic YWRtaW46YWRtaW4="])
@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_every_endpoint_needs_a_valid_token(client, admin_token, method, path, authorization):
    headers = {"Idempotency-Key": "k"} | ({"Authorization": authorization} if authorization else {})
    response = client.open(path.format(user=uuid.uuid4()), method=method, json={}, headers=headers)
    assert_problem(response, 401, "unauthenticated")


def test_an_operator_reads_everything_but_moves_no_money(admin, token_for, engine):
    ana, ben = admin.user()["id"], admin.user()["id"]
    admin.deposit(ana, "10.00")
    operator = Api(admin.client, token_for("operator"))
    for path in (f"/api/v1/users/{ana}", f"/api/v1/users/{ana}/wallets", f"/api/v1/users/{ana}/balance",
                 f"/api/v1/users/{ana}/transactions"):
        assert operator.get(path).status_code == 200, path
    assert_problem(operator.deposit(ana, "1.00"), 403, "forbidden")
    assert_problem(operator.post("/api/v1/wallet/withdraw", {"user_id": ana, "amount": "1.00", "currency": "SGD"}),
                   403, "forbidden")
    assert_problem(operator.transfer(ana, ben, "1.00"), 403, "forbidden")
    deposit_id = operator.get(f"/api/v1/users/{ana}/transactions").get_json()["data"][0]["id"]
    assert operator.get(f"/api/v1/transactions/{deposit_id}").status_code == 200
    assert admin.get(f"/api/v1/users/{ana}/balance").get_json()["balance"] == "10.00"


def test_a_user_token_reads_and_spends_only_its_own_money(admin, token_for):
    ana, ben = admin.user()["id"], admin.user()["id"]
    admin.deposit(ana, "10.00")
    admin.deposit(ben, "10.00")
    as_ana = Api(admin.client, token_for(f"user:{ana}"))

    for suffix in ("", "/wallets", "/balance", "/transactions"):
        assert as_ana.get(f"/api/v1/users/{ana}{suffix}").status_code == 200
        assert_problem(as_ana.get(f"/api/v1/users/{ben}{suffix}"), 403, "forbidden")
    assert_problem(as_ana.transfer(ben, ana, "1.00"), 403, "forbidden")
    assert_problem(as_ana.deposit(ana, "1.00"), 403, "forbidden")
    assert_problem(as_ana.post("/api/v1/wallet/withdraw", {"user_id": ana, "amount": "1.00", "currency": "SGD"}),
                   403, "forbidden")
    assert_problem(as_ana.post("/api/v1/users", {"name": "Eve", "email": "eve@example.com"}, key=None), 403, "forbidden")
    sent = as_ana.transfer(ana, ben, "1.00")
    assert sent.status_code == 201
    assert as_ana.get(f"/api/v1/transactions/{sent.get_json()['id']}").status_code == 200
    # Someone else's transaction is not there as far as this token can tell.
    bens = admin.get(f"/api/v1/users/{ben}/transactions").get_json()["data"][-1]["id"]
    assert_problem(as_ana.get(f"/api/v1/transactions/{bens}"), 404, "not_found")

    assert admin.get(f"/api/v1/users/{ana}/balance").get_json()["balance"] == "9.00"
    assert admin.get(f"/api/v1/users/{ben}/balance").get_json()["balance"] == "11.00"


# --- probes -----------------------------------------------------------------------------

def test_healthz_and_readyz_answer_without_a_token(client):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


@pytest.mark.parametrize("override, check", [
    ({"REDIS_URL": "redis://127.0.0.1:9/0"}, "redis"),
    ({"DATABASE_URL": "postgresql+psycopg://wallet@127.0.0.1:9/wallet_test"}, "database"),
])
def test_readyz_is_a_503_when_a_server_is_unreachable(override, check):
    app = create_app(Settings.from_environ(conftest.test_environ(**override)))
    try:
        response = app.test_client().get("/readyz")
    finally:
        app.extensions["wallet"].engine.dispose()
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"][check].startswith("unreachable")
    assert all(value == "ok" for name, value in body["checks"].items() if name != check)


def test_the_ledger_is_consistent_after_a_mixed_workload(admin, engine):
    ana, ben = admin.user()["id"], admin.user()["id"]
    admin.deposit(ana, "50.00")
    admin.transfer(ana, ben, "20.00")
    admin.post("/api/v1/wallet/withdraw", {"user_id": ben, "amount": "5.00", "currency": "SGD"})
    assert_ledger_invariants(engine)
    with engine.connect() as connection:
        totals = connection.execute(text("SELECT currency, sum(balance) FROM wallets GROUP BY currency")).all()
    assert totals == [("SGD", 0)]


# --- no input is a 500 ------------------------------------------------------------------

#: Values that have each broken a parser somewhere: text PostgreSQL cannot store, digits
#: int() refuses or cannot parse in time, numbers beyond bigint, and every JSON type.
HOSTILE_VALUES = ["\ud800", "a\x00b", "1" * 5000, "²", "٣", "-1", "1e3", "NaN", " 1", "", "0", "x" * 300,
                  10**30, -1, 1.5, True, None, [], {}]
VALID_BODIES = {
    "/api/v1/users": {"name": "Ana", "email": "fuzz-{n}@example.com", "external_id": "x-{n}"},
    "/api/v1/wallet/deposit": {"user_id": "{ana}", "amount": "1.00", "currency": "SGD", "reference": "r"},
    "/api/v1/wallet/withdraw": {"user_id": "{ana}", "amount": "1.00", "currency": "SGD", "reference": "r"},
    "/api/v1/wallet/transfer": {"from_user_id": "{ana}", "to_user_id": "{ben}", "amount": "1.00", "currency": "SGD",
                                "reference": "r"},
}


@pytest.fixture
def funded(admin) -> tuple[str, str]:
    ana, ben = admin.user()["id"], admin.user()["id"]
    admin.deposit(ana, "1000.00")
    return ana, ben


def valid_body(path: str, ana: str, ben: str, n: int) -> dict:
    return {name: value.format(ana=ana, ben=ben, n=n) for name, value in VALID_BODIES[path].items()}


@pytest.mark.parametrize("path", sorted(VALID_BODIES))
def test_no_hostile_value_in_any_field_makes_a_money_endpoint_answer_500(admin, funded, path):
    answered = set()
    for field in VALID_BODIES[path]:
        for n, value in enumerate(HOSTILE_VALUES):
            response = admin.post(path, valid_body(path, *funded, n=f"{field}-{n}") | {field: value})
            assert response.status_code < 500, (field, value, response.get_json())
            answered.add(response.status_code)
    assert answered <= {201, 404, 409, 422}


@pytest.mark.parametrize("suffix", ["/transactions", "/balance"])
def test_no_hostile_query_makes_a_read_endpoint_answer_500(admin, funded, suffix):
    # A URL cannot carry a lone surrogate; its bytes (and other invalid UTF-8) can be sent raw.
    encoded = [urllib.parse.quote(value) for value in HOSTILE_VALUES if isinstance(value, str) and value != "\ud800"]
    for name in ("limit", "cursor", "currency"):
        for value in encoded + ["%ED%A0%80", "%FF", "%00", "1%00"]:
            response = admin.get(f"/api/v1/users/{funded[0]}{suffix}?{name}={value}")
            assert response.status_code in (200, 422), (name, value, response.get_json())


#: Any JSON value, some of them hostile.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(HOSTILE_VALUES),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=4,
)


@hypothesis_settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("path", sorted(VALID_BODIES))
def test_no_json_body_whatever_its_shape_makes_a_money_endpoint_answer_500(admin, funded, path, data):
    valid = valid_body(path, *funded, n=uuid.uuid4())
    body = data.draw(json_values | st.fixed_dictionaries({}, optional={
        name: st.just(value) | json_values for name, value in valid.items()}))
    response = admin.post(path, body)
    assert response.status_code < 500, (body, response.get_json())
    assert response.mimetype in ("application/json", "application/problem+json")


def test_a_read_that_meets_a_lost_database_connection_is_a_503_with_retry_after(admin, monkeypatch):
    from pipeline import statements
    from pipeline.errors import TransientFault

    user = admin.user()["id"]

    def lost(*args, **kwargs):
        raise TransientFault("server closed the connection unexpectedly")

    monkeypatch.setattr(statements, "wallets_of", lost)
    response = admin.get(f"/api/v1/users/{user}/wallets")

    assert_problem(response, 503, "temporarily_unavailable")
    assert response.headers["Retry-After"] == "1"
