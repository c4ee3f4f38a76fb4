"""Typed answers of the bulk-credit and funding operations, as OpenAPI 3.1 schemas.

They describe exactly what web/bulk_credit.py and web/funding.py render; a test validates
real answers against them (tests/test_openapi_schemas.py), so a field added to an answer
without its schema fails there. Amounts are decimal strings in major units (`Amount`).
"""
from __future__ import annotations

from pipeline.bulk.status import ACTIVITY_STATUSES, ROW_STATUSES

AMOUNT = {"$ref": "#/components/schemas/Amount"}
CURRENCY = {"$ref": "#/components/schemas/Currency"}
UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}
MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}
COUNT = {"type": "integer", "minimum": 0}
KEY_ID = {"type": ["integer", "null"], "description": "An API key's id; null for the command line."}
MONEY_OR_ZERO = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "examples": ["0.00"]}


def _object(**properties) -> dict:
    """Every property is always present (null where the answer has none)."""
    return {"type": "object", "required": list(properties), "properties": properties}


def page_of(item: str) -> dict:
    return _object(data={"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
                   next_cursor={"type": ["string", "null"]})


SCHEMAS = {
    "ActivityTotal": _object(currency=CURRENCY, valid_amount=MONEY_OR_ZERO, credited_amount=MONEY_OR_ZERO,
                             failed_amount=MONEY_OR_ZERO, cancelled_amount=MONEY_OR_ZERO),
    "Activity": {**_object(
        activity_id=UUID, kind={"type": "string", "enum": ["credit", "reversal"]},
        reverses={"type": ["string", "null"], "format": "uuid",
                  "description": "A reversal's credit activity; null for a credit"},
        status={"type": "string", "enum": list(ACTIVITY_STATUSES)},
        final={"type": "boolean", "description": "No automatic retry is due: only an operator changes it now."},
        file_name={"type": ["string", "null"]}, total_records=COUNT, valid_records=COUNT, invalid_records=COUNT,
        successful_records=COUNT, failed_records=COUNT, pending_records=COUNT, cancelled_records=COUNT,
        funding_account={"type": "string"}, uploaded_by=KEY_ID, approved_by=KEY_ID, execute_at=MAYBE_TIME,
        next_retry_at=MAYBE_TIME, failed_chunks=COUNT, last_chunk_error={"type": ["string", "null"]},
        created_at=TIME, started_at=MAYBE_TIME, completed_at=MAYBE_TIME,
        totals={"type": "array", "items": {"$ref": "#/components/schemas/ActivityTotal"},
                "description": "Per currency, by currency code; pending = valid - credited - failed - cancelled"}),
        "examples": [{"activity_id": "0b9f4ad2-52c4-4c5e-9d43-1f0a3d3c8a11", "kind": "credit", "reverses": None,
                      "status": "PROCESSING", "final": False, "file_name": "payroll-2026-11.csv",
                      "total_records": 3, "valid_records": 2, "invalid_records": 1, "successful_records": 1,
                      "failed_records": 0, "pending_records": 1, "cancelled_records": 0,
                      "funding_account": "default", "uploaded_by": 4, "approved_by": None, "execute_at": None,
                      "next_retry_at": None, "failed_chunks": 0, "last_chunk_error": None,
                      "created_at": "2026-11-30T09:00:00Z", "started_at": "2026-11-30T09:00:01Z",
                      "completed_at": None,
                      "totals": [{"currency": "SGD", "valid_amount": "150.00", "credited_amount": "100.00",
                                  "failed_amount": "0.00", "cancelled_amount": "0.00"}]}]},
    "ActivityPage": page_of("Activity"),
    "Accepted": _object(activity_id=UUID, status={"type": "string", "const": "accepted"}, total_records=COUNT),
    "Preview": _object(
        dry_run={"type": "boolean", "const": True}, total_records=COUNT, valid_records=COUNT, invalid_records=COUNT,
        funding_account={"type": "string"},
        totals={"type": "array", "items": _object(currency=CURRENCY, rows=COUNT, amount=MONEY_OR_ZERO)},
        funding={"type": "array", "items": _object(currency=CURRENCY, required=MONEY_OR_ZERO,
                                                   available=MONEY_OR_ZERO, sufficient={"type": "boolean"})},
        needs_approval={"type": "boolean"}, duplicate_of={"type": ["string", "null"], "format": "uuid"},
        errors={"type": "array", "maxItems": 100, "items": _object(
            row_number={"type": "integer", "minimum": 2}, error_code={"type": "string"},
            error_message={"type": "string"})},
        errors_shown_max={"type": "integer", "const": 100}),
    "Change": _object(at=TIME, from_status={"type": ["string", "null"]}, to_status={"type": "string"},
                      final={"type": "boolean"},
                      actor=_object(type={"type": "string", "enum": ["api_key", "worker", "scheduler",
                                                                     "command_line"]}, api_key_id=KEY_ID),
                      reason={"type": ["string", "null"]}),
    "ChangePage": page_of("Change"),
    "RowOutcome": {**_object(
        row_number={"type": "integer", "minimum": 2}, user_id={"type": ["string", "null"]},
        amount={"type": ["string", "null"]}, currency={"type": ["string", "null"]},
        reference={"type": ["string", "null"]}, status={"type": "string", "enum": list(ROW_STATUSES)},
        error_code={"type": ["string", "null"]}, error_message={"type": ["string", "null"]}, attempts=COUNT,
        transaction_id={"type": ["string", "null"], "format": "uuid"}, posting_id={"type": ["integer", "null"]},
        reversed_by={"type": ["object", "null"], "description": "The reversal row holding a credit row",
                     "required": ["activity_id", "row_number", "status"], "properties": {
                         "activity_id": UUID, "row_number": {"type": "integer", "minimum": 2},
                         "status": {"type": "string", "enum": list(ROW_STATUSES)}}},
        raw={"type": "object", "additionalProperties": {"type": "string"},
             "description": "The row's original cells by column name"})},
    "RowPage": page_of("RowOutcome"),
    "Retried": _object(activity_id=UUID, status={"type": "string", "enum": list(ACTIVITY_STATUSES)},
                       retried_records=COUNT),
    "FundingAccount": _object(name={"type": "string"}, balances={"type": "array", "items": _object(
        currency=CURRENCY, balance=MONEY_OR_ZERO, reserved=MONEY_OR_ZERO)}),
    "FundingAccountPage": page_of("FundingAccount"),
    "TopUp": _object(id=UUID, kind={"type": "string", "const": "funding_top_up"}, funding_account={"type": "string"},
                     amount=AMOUNT, currency=CURRENCY, balance_after=MONEY_OR_ZERO,
                     reference={"type": ["string", "null"]}, created_at=TIME),
    # Holds and frozen wallets (web/holds.py, web/lifecycle.py).
    "Hold": _object(
        id=UUID, status={"type": "string", "enum": ["held", "captured", "voided", "expired"]}, user_id=UUID,
        amount=AMOUNT, currency=CURRENCY, reference={"type": ["string", "null"]}, expires_at=TIME, created_at=TIME,
        decided_at=MAYBE_TIME, captured_amount={"type": ["string", "null"]},
        to_user_id={"type": ["string", "null"], "format": "uuid"},
        transaction_id={"type": ["string", "null"], "format": "uuid",
                        "description": "The capture's journal entry, once captured"}),
    "HoldCapture": _object(
        id=UUID, kind={"type": "string", "enum": ["transfer", "withdrawal"]}, hold_id=UUID, user_id=UUID,
        from_user_id=UUID, to_user_id={"type": ["string", "null"], "format": "uuid"}, amount=AMOUNT,
        fee=MONEY_OR_ZERO, released=MONEY_OR_ZERO, currency=CURRENCY, reference={"type": ["string", "null"]},
        balance_after=MONEY_OR_ZERO, created_at=TIME),
    "WalletLifecycle": _object(  # not WalletStatus: a generated client names Wallet.status's enum so
        user_id=UUID, currency=CURRENCY, balance=MONEY_OR_ZERO, held=MONEY_OR_ZERO, available=MONEY_OR_ZERO,
        status={"type": "string", "enum": ["active", "frozen", "closed"]}, status_reason={"type": "string"},
        updated_at=TIME),
}


def ref(name: str) -> dict:
    assert name in SCHEMAS, name
    return {"$ref": f"#/components/schemas/{name}"}
