"""Typed answers of the users, wallets, movements, transactions and reconciliation operations,
as OpenAPI 3.1 schemas; tests/test_openapi_schemas.py validates real answers against them.
Amounts are decimal strings in major units."""
from __future__ import annotations

from web.schemas import COUNT, CURRENCY, MONEY_OR_ZERO, TIME, UUID, _object, page_of

MAYBE_UUID = {"type": ["string", "null"], "format": "uuid"}
MAYBE_TEXT = {"type": ["string", "null"]}
MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}
KIND = {"type": "string", "examples": ["transfer"]}

SCHEMAS = {
    "User": {**_object(id=UUID, name={"type": "string"}, email={"type": "string"}, external_id=MAYBE_TEXT,
                       created_at=TIME, closed_at={**MAYBE_TIME, "description": "Set once the user is closed"}),
             "examples": [{"id": "5b6f0f9e-3c1a-4a57-9a0e-2f5a3c1d7e21", "name": "Ana Tan", "email": "ana@example.com",
                           "external_id": "crm-1", "created_at": "2026-11-30T09:00:00Z", "closed_at": None}]},
    "UserPage": page_of("User"),
    "Wallet": _object(currency=CURRENCY, balance=MONEY_OR_ZERO, held=MONEY_OR_ZERO, available=MONEY_OR_ZERO,
                      status={"type": "string", "enum": ["active", "frozen", "closed"]}, updated_at=TIME),
    "Wallets": _object(data={"type": "array", "items": {"$ref": "#/components/schemas/Wallet"}}),
    "Balance": _object(user_id=UUID, currency=CURRENCY, balance=MONEY_OR_ZERO, held=MONEY_OR_ZERO,
                       available={**MONEY_OR_ZERO, "description": "balance - held: what a debit may take"}),
    "HistoryItem": _object(id=UUID, kind=KIND, amount=MONEY_OR_ZERO, fee=MONEY_OR_ZERO, currency=CURRENCY,
                           direction={"type": "string", "enum": ["credit", "debit"]}, balance_after=MONEY_OR_ZERO,
                           counterparty_user_id=MAYBE_UUID, reference=MAYBE_TEXT, activity_id=MAYBE_UUID,
                           created_at=TIME),
    "HistoryPage": page_of("HistoryItem"),
    "Movement": _object(id=UUID, kind={"type": "string", "enum": ["deposit", "withdrawal"]}, user_id=UUID,
                        amount=MONEY_OR_ZERO, currency=CURRENCY, reference=MAYBE_TEXT, balance_after=MONEY_OR_ZERO,
                        created_at=TIME),
    "Transfer": {**_object(id=UUID, kind={"type": "string", "const": "transfer"}, from_user_id=UUID, to_user_id=UUID,
                           amount=MONEY_OR_ZERO, fee=MONEY_OR_ZERO, currency=CURRENCY, reference=MAYBE_TEXT,
                           created_at=TIME),
                 "examples": [{"id": "0d3c1c5e-8f6b-4d7a-9b1e-6a2f4c8d1e90", "kind": "transfer",
                               "from_user_id": "5b6f0f9e-3c1a-4a57-9a0e-2f5a3c1d7e21",
                               "to_user_id": "a3e1c7d2-4b5f-4e6a-8c9d-0f1e2d3c4b5a", "amount": "10.00",
                               "fee": "0.15", "currency": "SGD", "reference": None,
                               "created_at": "2026-11-30T09:00:00Z"}]},
    "Posting": _object(id={"type": "integer"}, wallet_id={"type": "integer"}, user_id=MAYBE_UUID,
                       system_wallet=MAYBE_TEXT, amount={"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"},
                       balance_after={"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}),
    "TransactionDetail": _object(
        id=UUID, kind=KIND, amount=MONEY_OR_ZERO, fee=MONEY_OR_ZERO, currency=CURRENCY, from_user_id=MAYBE_UUID,
        to_user_id=MAYBE_UUID, reference=MAYBE_TEXT, activity_id=MAYBE_UUID, created_at=TIME,
        postings={"type": "array", "maxItems": 1000, "items": {"$ref": "#/components/schemas/Posting"}},
        postings_total=COUNT, postings_next_cursor=MAYBE_TEXT),
    "Transaction": _object(id=UUID, kind=KIND, amount=MONEY_OR_ZERO, fee=MONEY_OR_ZERO, currency=CURRENCY,
                           from_user_id=MAYBE_UUID, to_user_id=MAYBE_UUID, reference=MAYBE_TEXT,
                           activity_id=MAYBE_UUID, funding_account=MAYBE_TEXT, created_at=TIME),
    "TransactionPage": page_of("Transaction"),
    "ReconciliationStarted": _object(id=UUID, status={"type": "string"}),
    "Reconciliation": _object(
        id=UUID, status={"type": "string", "enum": ["queued", "running", "clean", "mismatched"]},
        full={"type": "boolean"}, created_at=TIME, started_at=MAYBE_TIME, finished_at=MAYBE_TIME,
        wallets_checked={"type": ["integer", "null"]}, mismatch_count={"type": ["integer", "null"]},
        mismatches={"type": "array", "items": {"type": "object", "properties": {
            "wallet": {}, "kind": {"type": "string"}, "expected": {}, "actual": {}}}}),
    "ReconciliationPage": page_of("Reconciliation"),
}


def ref(name: str) -> dict:
    assert name in SCHEMAS, name
    return {"$ref": f"#/components/schemas/{name}"}
