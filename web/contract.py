"""What the views do not declare to APIFlask: each operation's summary, request body, query and
header parameters, and answers, as ../shared/API.md writes them.

Paths use OpenAPI's `{name}` form with the names of the Flask URL rules. A test checks that
every operation described here exists in the app, so this table cannot outlive a route.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.bulk.status import ROW_STATUSES
from pipeline.money import AMOUNT_TEXT_LENGTH_MAX
from pipeline.search import ENTRY_KINDS
from pipeline.webhooks import EVENT_TYPES
from pipeline.wallets import REFERENCE_LENGTH_MAX
from web.inputs import REQUEST_BODY_MAX_BYTES
from web.schemas import ref
from web.wallet_schemas import ref as wref
from web.webhook_schemas import ref as webhook_ref

PROBLEM = {"$ref": "#/components/schemas/Problem"}
SCHEMAS = {
    "Problem": {
        "type": "object", "description": "RFC 9457 problem details, with a stable snake_case `code`.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "code": {"type": "string", "examples": ["insufficient_funds"]},
            "errors": {"type": "array", "items": {"type": "object", "properties": {
                "field": {"type": "string"}, "message": {"type": "string"}}}},
        },
    },
    "Amount": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "maxLength": AMOUNT_TEXT_LENGTH_MAX,
               "examples": ["12.50"], "description": "A decimal string in major units, greater than zero, with at"
                                                     " most the currency's digits after the point."},
    "Currency": {"type": "string", "pattern": "^[A-Z]{3}$", "examples": ["SGD"]},
}
AMOUNT = {"$ref": "#/components/schemas/Amount"}
CURRENCY = {"$ref": "#/components/schemas/Currency"}
UUID = {"type": "string", "format": "uuid"}
#: Path parameters that hold a uuid, by the names of the Flask URL rules; anything else is a 422.
UUID_PATH_PARAMETERS = frozenset({"user_id", "entry_id", "activity_id", "reconciliation_id", "subscription_id",
                                  "hold_id"})
#: Path parameters that hold a bigint row id, by the names of the Flask URL rules.
ID_PATH_PARAMETERS = frozenset({"delivery_id"})
BIGINT_ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
#: A funding account's name in a path (pipeline/funding.py).
ACCOUNT_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,62}$", "examples": ["default"]}
REASON_BODY = {"type": "object", "required": ["reason"], "properties": {
    "reason": {"type": "string", "minLength": 1, "maxLength": 500, "description": "Why; kept in the history."}}}
#: A user's name and external id (pipeline/users.py), and a movement's reference (pipeline/wallets.py).
NAME = {"type": "string", "minLength": 1, "maxLength": 200}
EXTERNAL_ID = {"type": ["string", "null"], "minLength": 1, "maxLength": 200}
REFERENCE = {"type": ["string", "null"], "minLength": 1, "maxLength": REFERENCE_LENGTH_MAX,
             "description": "Your own reference; text without NUL characters."}
#: What pipeline/users.py accepts as an email address.
EMAIL = {"type": "string", "maxLength": 320, "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
         "examples": ["ana@example.com"]}

#: What each error status means, whatever the operation.
ERRORS = {
    400: "Malformed request: a missing header, or a body that is not the JSON object expected",
    401: "Missing or bad token",
    403: "The token's scope forbids it",
    404: "Not found",
    409: "Conflict",
    413: f"The body is larger than the operation takes: {REQUEST_BODY_MAX_BYTES // 1024} KiB, or"
         " BULK_CREDIT_MAX_BYTES for a CSV upload",
    422: "Validation failed or refused, or a query parameter given twice",
    503: "A dependency is unavailable",
}


def _object(required: tuple[str, ...], **properties) -> dict:
    return {"type": "object", "required": list(required), "properties": properties}


def _query(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


#: Every operation may answer these: a body past its limit, a query parameter given twice (web/inputs.py).
COMMON_ERRORS = (413, 422)
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": True,
                   "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                   "description": "Replays with the same body return the first answer; missing: 400."}
LIST_QUERY = (_query("limit", "1..100, default 20", {"type": "integer", "minimum": 1, "maximum": 100}),
              _query("cursor", "Opaque, from next_cursor"))
CURRENCY_QUERY = {"type": "string", "pattern": "^[A-Z]{3}$"}
#: A Redis stream id (pipeline/event_feed.py); empty means none.
EVENT_ID = {"type": "string", "pattern": "^([0-9]{1,20}(-[0-9]{1,20})?)?$"}
#: Two different users: Swagger UI's generated example would use one uuid for both (422 same_wallet).
TRANSFER_EXAMPLE = {"from_user_id": "5b6f0f9e-3c1a-4a57-9a0e-2f5a3c1d7e21",
                    "to_user_id": "a3e1c7d2-4b5f-4e6a-8c9d-0f1e2d3c4b5a", "amount": "10.00", "currency": "SGD",
                    "reference": "invoice-42"}
MONEY_BODY = _object(("user_id", "amount", "currency"), user_id=UUID, amount=AMOUNT, currency=CURRENCY,
                     reference=REFERENCE)

WEBHOOK_EVENTS = {"type": "array", "minItems": 1, "maxItems": 32, "items": {"type": "string", "enum": list(EVENT_TYPES)}}


@dataclass(frozen=True)
class Operation:
    summary: str
    status: int
    answer: str
    errors: tuple[int, ...] = ()
    body: dict | None = None
    body_type: str = "application/json"
    body_required: bool = True
    parameters: tuple[dict, ...] = ()
    public: bool = False  #: needs no token
    answer_type: str = "application/json"
    #: A probe's 503 is its status report (JSON), not a problem.
    probe: bool = False
    extra: dict = field(default_factory=dict)
    #: The success answer's schema (web/schemas.py); None: an object not described yet.
    schema: dict | None = None
    #: Other success answers: status -> (description, schema).
    also: dict = field(default_factory=dict)
    #: Other media types of the success answer, chosen by `Accept` (a CSV export): text.
    exports: tuple[str, ...] = ()


#: Issue 10, items 5 and 6 (web/webhooks.py, web/audit.py): admin only.
WEBHOOK_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/api/v1/webhooks"): Operation(
        "Subscribe a URL to event types (admin); deliveries are signed to the Standard Webhooks specification",
        201, "`{id, url, events, description, created_at, secret}`: the secret is shown this once; a URL that is"
        " not http(s) or reaches a loopback or private address: 422 url_not_allowed", (400, 401, 403, 409, 422),
        _object(("url", "events"), url={"type": "string", "maxLength": 2000, "examples": ["https://example.com/hook"]},
                events=WEBHOOK_EVENTS, description={"type": ["string", "null"], "maxLength": 500}),
        schema=webhook_ref("WebhookCreated")),
    ("GET", "/api/v1/webhooks"): Operation(
        "Webhook subscriptions, oldest first (admin; at most 100 exist)", 200, "`{data: [...], next_cursor}`",
        (401, 403, 422), parameters=LIST_QUERY, schema=webhook_ref("WebhookPage")),
    ("DELETE", "/api/v1/webhooks/{subscription_id}"): Operation(
        "Delete a subscription (admin): its pending deliveries end CANCELLED", 204, "Deleted",
        (401, 403, 404, 422)),
    ("GET", "/api/v1/webhooks/{subscription_id}/deliveries"): Operation(
        "A subscription's deliveries, newest first (admin)", 200,
        "`{data: [{id, event_id, type, attempts, status, last_status_code, last_error, next_attempt_at}],"
        " next_cursor}`", (401, 403, 404, 422), parameters=LIST_QUERY, schema=webhook_ref("WebhookDeliveryPage")),
    ("POST", "/api/v1/webhooks/{subscription_id}/deliveries/{delivery_id}/replay"): Operation(
        "Replay a delivery (admin): it is sent again within about a second, with a fresh series of attempts",
        202, "`{id, event_id, status: PENDING}`", (401, 403, 404, 409, 422), body_required=False,
        schema=webhook_ref("WebhookReplayed")),
    ("GET", "/api/v1/audit-events"): Operation(
        "The audit trail, newest first (admin): one event per operator or admin action", 200,
        "`{data: [{id, at, actor: {type, api_key_id, scope, label}, action, object_type, object_id, detail}],"
        " next_cursor}`", (401, 403, 422),
        parameters=(_query("actor", "An API key's id, or worker, scheduler or command_line"),
                    _query("action", "Such as bulk_credit.approve"), _query("object_id", "The object's id"),
                    *LIST_QUERY), schema=webhook_ref("AuditEventPage")),
}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/healthz"): Operation("Liveness", 200, "The process is alive", public=True),
    ("GET", "/readyz"): Operation("Readiness: database and Redis reachable", 200, "Ready", (503,), public=True,
                                  probe=True),
    ("GET", "/healthz/workers"): Operation(
        "Workers' health: at least one Dramatiq worker process consumed within the heartbeat TTL", 200,
        "Workers consuming, and how many", (503,), public=True, probe=True),
    ("GET", "/metrics"): Operation(
        "Prometheus metrics of the web, worker and scheduler processes", 200, "Prometheus text format 0.0.4",
        public=True, answer_type="text/plain"),
    ("GET", "/docs"): Operation("Interactive documentation (Swagger UI), served with its assets", 200, "HTML",
                                public=True, answer_type="text/html"),
    ("GET", "/openapi.json"): Operation("This OpenAPI 3.1 document", 200, "The document", public=True),
    ("POST", "/api/v1/users"): Operation(
        "Create a user", 201, "The user", (400, 401, 403, 409, 422),
        _object(("name", "email"), name=NAME, email=EMAIL, external_id=EXTERNAL_ID), schema=wref("User")),
    ("GET", "/api/v1/users"): Operation(
        "Find users, newest first (admin, operator, approver)", 200, "`{data: [user], next_cursor}`",
        (401, 403, 422), parameters=(_query("email", "This email, whatever its case", {"type": "string", "minLength": 1,
                                                                                     "maxLength": 320}),
                                     _query("external_id", "This external id, exactly",
                                            {"type": "string", "minLength": 1, "maxLength": 320}), *LIST_QUERY),
        schema=wref("UserPage")),
    ("GET", "/api/v1/transactions"): Operation(
        "Find transactions (journal entries), newest first (admin, operator, approver)", 200,
        "`{data: [{id, kind, amount, fee, currency, from_user_id, to_user_id, reference, activity_id,"
        " funding_account, created_at}], next_cursor}`", (401, 403, 422), parameters=(
            _query("reference", "The movement's own reference, exactly",
                   {"type": "string", "minLength": 1, "maxLength": 320}),
            _query("activity_id", "Written by this bulk-credit activity", UUID),
            _query("user_id", "With a posting on this user's wallets", UUID),
            _query("kind", "the journal entry's kind", {"type": "string", "enum": list(ENTRY_KINDS)}),
            _query("created_after", "Created at or after this RFC 3339 time", {"type": "string", "format": "date-time"}),
            _query("created_before", "Created before this RFC 3339 time", {"type": "string", "format": "date-time"}),
            *LIST_QUERY), schema=wref("TransactionPage")),
    ("GET", "/api/v1/users/{user_id}"): Operation("Read a user", 200, "The user", (401, 403, 404, 422),
                                                  schema=wref("User")),
    ("GET", "/api/v1/users/{user_id}/wallets"): Operation(
        "List a user's wallets", 200, "`{data: [{currency, balance, held, available, status, updated_at}]}`",
        (401, 403, 404, 422), schema=wref("Wallets")),
    ("GET", "/api/v1/users/{user_id}/balance"): Operation(
        "A user's balance in one currency", 200,
        "`{user_id, currency, balance, held, available}`: available = balance - held", (401, 403, 404, 422),
        parameters=(_query("currency", "Default DEFAULT_CURRENCY", CURRENCY_QUERY),), schema=wref("Balance")),
    ("GET", "/api/v1/users/{user_id}/transactions"): Operation(
        "A user's history, newest first", 200, "`{data: [...], next_cursor}`", (401, 403, 404, 422),
        parameters=(_query("currency", "Only this currency", CURRENCY_QUERY), *LIST_QUERY),
        schema=wref("HistoryPage")),
    ("POST", "/api/v1/wallet/deposit"): Operation(
        "Deposit from the bank account", 201, "The transaction", (400, 401, 403, 404, 409, 422), MONEY_BODY,
        parameters=(IDEMPOTENCY_KEY,), schema=wref("Movement")),
    ("POST", "/api/v1/wallet/withdraw"): Operation(
        "Withdraw to the bank account", 201, "The transaction; not enough money: 422 insufficient_funds",
        (400, 401, 403, 404, 409, 422), MONEY_BODY, parameters=(IDEMPOTENCY_KEY,), schema=wref("Movement")),
    ("POST", "/api/v1/wallet/transfer"): Operation(
        "Transfer between two users; the sender pays amount + fee", 201, "The transfer",
        (400, 401, 403, 404, 409, 422),
        {**_object(("from_user_id", "to_user_id", "amount", "currency"), from_user_id=UUID, to_user_id=UUID,
                   amount=AMOUNT, currency=CURRENCY, reference=REFERENCE), "examples": [TRANSFER_EXAMPLE]},
        parameters=(IDEMPOTENCY_KEY,),
        schema=wref("Transfer")),
    ("GET", "/api/v1/transactions/{entry_id}"): Operation(
        "A transaction with its ledger postings; a `user:` key sees only its own postings, and 404 for an"
        " entry it has none in", 200,
        "The transaction with at most 1,000 `postings` in id order, `postings_total` (all of them, on every"
        " page) and `postings_next_cursor` (null on the last page)", (401, 404, 422),
        parameters=(_query("postings_cursor", "Opaque, from postings_next_cursor"),),
        schema=wref("TransactionDetail")),
    ("POST", "/api/v1/wallet/holds"): Operation(
        "Hold money out of a user's available balance (admin); the scheduler expires it after expires_in_s", 201,
        "The hold `{id, status: held, user_id, amount, currency, reference, expires_at, created_at, ...}`; not"
        " enough available: 422 insufficient_funds; a frozen wallet or a closed user: 422 wallet_frozen or"
        " user_closed", (400, 401, 403, 404, 409, 422),
        _object(("user_id", "amount", "currency"), user_id=UUID, amount=AMOUNT, currency=CURRENCY,
                reference=REFERENCE, expires_in_s={"type": "integer", "minimum": 1,
                                                   "description": "Default HOLD_EXPIRY_DEFAULT_S, at most"
                                                                  " HOLD_EXPIRY_MAX_S"}),
        parameters=(IDEMPOTENCY_KEY,), schema=ref("Hold")),
    ("GET", "/api/v1/wallet/holds/{hold_id}"): Operation(
        "A hold: status held, captured, voided or expired (a `user:` key: its own holds only)", 200, "The hold",
        (401, 404, 422), schema=ref("Hold")),
    ("POST", "/api/v1/wallet/holds/{hold_id}/capture"): Operation(
        "Capture a hold (admin): the amount (default: all) goes to to_user_id, or to bank as a withdrawal, in one"
        " journal entry; the rest is released", 201,
        "The transaction `{id, kind (transfer or withdrawal), hold_id, amount, released, ...}`; decided or expired"
        " already: 409 invalid_state", (400, 401, 403, 404, 409, 422),
        _object((), amount=AMOUNT, to_user_id=UUID), body_required=False, parameters=(IDEMPOTENCY_KEY,),
        schema=ref("HoldCapture")),
    ("POST", "/api/v1/wallet/holds/{hold_id}/void"): Operation(
        "Void a hold (admin): all of it is released", 200, "The hold, voided; decided already: 409 invalid_state",
        (401, 403, 404, 409, 422), schema=ref("Hold")),
    ("POST", "/api/v1/users/{user_id}/wallets/{code}/freeze"): Operation(
        "Freeze a user's wallet (admin): no money in or out (422 wallet_frozen) until it is unfrozen", 200,
        "The wallet, frozen; frozen already: 409 invalid_state", (400, 401, 403, 404, 409, 422), REASON_BODY,
        schema=ref("WalletLifecycle")),
    ("POST", "/api/v1/users/{user_id}/wallets/{code}/unfreeze"): Operation(
        "Unfreeze a user's wallet (admin)", 200, "The wallet, active; not frozen: 409 invalid_state",
        (400, 401, 403, 404, 409, 422), REASON_BODY, schema=ref("WalletLifecycle")),
    ("DELETE", "/api/v1/users/{user_id}"): Operation(
        "Close a user (admin): a soft delete, history kept; no money moves for them again (422 user_closed)", 204,
        "Closed; money (or held money) left in a wallet: 409 balance_not_zero; closed already: 409 invalid_state",
        (401, 403, 404, 409, 422)),
    ("POST", "/api/v1/wallet/bulk-credit"): Operation(
        "Upload a bulk-credit CSV (uuid,amount[,currency][,reference])", 202,
        "`{activity_id, status: accepted, total_records}`; the same file or key again: 200 with the activity",
        (401, 403, 413, 422), _object(
            ("file",), file={"type": "string", "contentMediaType": "text/csv"},
            funding_account={"type": "string", "default": "default",
                             "description": "the funding account paying the file; unknown: 422"},
            allow_duplicate_content={"type": "string", "enum": ["true", "false"], "default": "false",
                                     "description": "true: the same rows as an earlier file make a new activity"},
            execute_at={"type": "string", "format": "date-time",
                        "description": "RFC 3339 with its offset, at most 366 days ahead: held in SCHEDULED until"
                                       " then"},
            dry_run={"type": "string", "enum": ["true", "false"], "default": "false",
                     "description": "true: check the file as the upload would and store nothing; answers 200"
                                    " {dry_run, total_records, valid_records, invalid_records, totals, funding,"
                                    " needs_approval, duplicate_of, errors (the first 100)}"}),
        body_type="multipart/form-data",
        parameters=({**IDEMPOTENCY_KEY, "required": False},), schema=ref("Accepted"),
        also={200: ("The same file or Idempotency-Key again: the existing activity; or, with dry_run=true, the"
                    " preview", {"oneOf": [ref("Activity"), ref("Preview")]})}),
    ("GET", "/api/v1/wallet/bulk-credit"): Operation(
        "Activities, newest first", 200, "`{data: [activity], next_cursor}`", (401, 403, 422), parameters=(
            _query("status", "Only these statuses, separated by commas"),
            _query("file_name", "Only files whose name contains this, whatever the case", {
                "type": "string", "maxLength": 255}),
            _query("created_after", "Created at or after this RFC 3339 time", {"type": "string", "format": "date-time"}),
            _query("created_before", "Created before this RFC 3339 time", {"type": "string", "format": "date-time"}),
            *LIST_QUERY), schema=ref("ActivityPage")),
    ("GET", "/api/v1/wallet/bulk-credit/{activity_id}"): Operation(
        "A bulk-credit activity, its counters and its totals per currency", 200, "The activity",
        (401, 403, 404, 422), schema=ref("Activity")),
    ("GET", "/api/v1/wallet/bulk-credit/{activity_id}/history"): Operation(
        "Every status change of the activity, and the moment it became final, oldest first", 200,
        "`{data: [{at, from_status, to_status, final, actor: {type, api_key_id}, reason}], next_cursor}`",
        (401, 403, 404, 422), parameters=LIST_QUERY, schema=ref("ChangePage")),
    ("GET", "/api/v1/wallet/bulk-credit/{activity_id}/rows"): Operation(
        "Row outcomes; `Accept: text/csv` exports them", 200, "`{data: [...], next_cursor}` or a CSV file",
        (401, 403, 404, 422), parameters=(_query("status", "Only rows of this status",
                                                 {"type": "string", "enum": list(ROW_STATUSES)}), *LIST_QUERY),
        schema=ref("RowPage"), exports=("text/csv",)),
    ("POST", "/api/v1/wallet/bulk-credit/retry"): Operation(
        "Retry an activity's FAILED rows", 202, "`{activity_id, status, retried_records}`",
        (400, 401, 403, 404, 422), _object(("activity_id",), activity_id=UUID), schema=ref("Retried")),
    ("POST", "/api/v1/wallet/bulk-credit/{activity_id}/approve"): Operation(
        "Approve a file awaiting approval (approver or admin, not the uploader's key): its funds are reserved"
        " and it is released, or scheduled for its execute_at", 202, "The activity",
        (401, 403, 404, 409, 422), body_required=False, schema=ref("Activity")),
    ("POST", "/api/v1/wallet/bulk-credit/{activity_id}/reject"): Operation(
        "Reject a file awaiting approval (approver or admin): its rows end CANCELLED, nothing moves", 200,
        "The activity, REJECTED", (400, 401, 403, 404, 409, 422), REASON_BODY, schema=ref("Activity")),
    ("POST", "/api/v1/wallet/bulk-credit/{activity_id}/cancel"): Operation(
        "Cancel the rows not yet credited (operator or admin); their reserved money goes back to the funding"
        " account", 202, "The activity, CANCELLED", (400, 401, 403, 404, 409, 422, 503), REASON_BODY,
        schema=ref("Activity")),
    ("POST", "/api/v1/wallet/bulk-credit/{activity_id}/reverse"): Operation(
        "Reverse a bulk credit (operator or admin): a new activity of kind `reversal` whose rows take the money of"
        " the named (default: every) SUCCESS row back to the funding account; a row never credited or already"
        " reversed is INVALID `not_reversible`, a payee no longer holding the money FAILED `insufficient_funds`",
        202, "The reversal activity `{activity_id, kind: reversal, reverses, status, total_records, ...}`",
        (400, 401, 403, 404, 409, 422), _object(
            ("reason",), reason=REASON_BODY["properties"]["reason"],
            row_numbers={"type": "array", "minItems": 1, "maxItems": 100_000,
                         "items": {"type": "integer", "minimum": 2, "maximum": 2**31 - 1},
                         "description": "Rows as a spreadsheet shows them; unknown: 422"},
            references={"type": "array", "minItems": 1, "maxItems": 100_000,
                        "items": {"type": "string", "minLength": 1, "maxLength": 4_096},
                        "description": "The rows' own references; unknown: 422"}),
        parameters=(IDEMPOTENCY_KEY,), schema=ref("Activity")),
    ("POST", "/api/v1/transactions/{entry_id}/reverse"): Operation(
        "Undo a deposit, withdrawal or transfer in full, fee included, in one journal entry (admin)", 201,
        "The transaction `{id, kind: reversal, reverses, reversed_kind, from_user_id, to_user_id, amount, fee,"
        " currency, reference, created_at}`; again: 409 already_reversed; a wallet no longer holding the money:"
        " 422 insufficient_funds", (400, 401, 403, 404, 409, 422), REASON_BODY, parameters=(IDEMPOTENCY_KEY,)),
    ("POST", "/api/v1/funding-accounts/{name}/top-up"): Operation(
        "Top a funding account up from bank (admin); created on its first top-up", 201, "The transaction",
        (400, 401, 403, 409, 422), _object(("amount", "currency"), amount=AMOUNT, currency=CURRENCY,
                                             reference=REFERENCE), parameters=(IDEMPOTENCY_KEY,),
        schema=ref("TopUp")),
    ("GET", "/api/v1/funding-accounts/{name}"): Operation(
        "A funding account: per currency, `balance` free to reserve and `reserved` for rows not yet paid", 200,
        "`{name, balances: [{currency, balance, reserved}]}`", (401, 403, 404, 422), schema=ref("FundingAccount")),
    ("GET", "/api/v1/funding-accounts"): Operation(
        "Funding accounts by name", 200, "`{data: [...], next_cursor}`", (401, 403, 422), parameters=LIST_QUERY,
        schema=ref("FundingAccountPage")),
    ("POST", "/api/v1/reconciliations"): Operation(
        "Start a reconciliation (a worker runs it); the body may be left out", 202, "`{id, status}`",
        (400, 401, 403, 422), _object((), full={"type": "boolean", "default": False}), body_required=False,
        schema=wref("ReconciliationStarted")),
    ("GET", "/api/v1/reconciliations/{reconciliation_id}"): Operation(
        "A reconciliation run and its mismatches", 200, "The run", (401, 403, 404, 422),
        schema=wref("Reconciliation")),
    ("GET", "/api/v1/events"): Operation(
        "Follow events as Server-Sent Events: a user's (admin, operator or that user) or an activity's"
        " (admin or operator); give exactly one filter", 200,
        "`text/event-stream`: `id:` a stream id, `data:` the event JSON, `: heartbeat` comments; ends after"
        " EVENTS_FEED_DURATION_MAX_S, resume with Last-Event-ID; `event: gap` first when events after it were"
        " trimmed before they were read; 503 with Retry-After when the process serves all the streams it may",
        (401, 403, 422, 503),
        parameters=(_query("user_id", "This user's events", UUID),
                    _query("activity_id", "This bulk credit's events", UUID),
                    _query("last_event_id", "Resume after this stream id (0: the oldest kept)", EVENT_ID),
                    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": EVENT_ID,
                     "description": "Resume after this stream id; EventSource sends it when it reconnects."}),
        answer_type="text/event-stream"),
    ("GET", "/api/v1/reconciliations"): Operation(
        "Reconciliation runs, newest first", 200, "`{data: [...], next_cursor}`", (401, 403, 422),
        parameters=LIST_QUERY, schema=wref("ReconciliationPage")),
    **WEBHOOK_OPERATIONS,
}


def documented_fields(method: str, rule: str) -> frozenset[str] | None:
    """The fields of the JSON body the operation at this Flask URL rule documents; None when it
    documents no JSON object body (then nothing is checked here)."""
    described = OPERATIONS.get((method, re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)))
    body = described.body if described is not None and described.body_type == "application/json" else None
    if not body or body.get("type") != "object" or "properties" not in body:
        return None
    return frozenset(body["properties"])


def state_path_parameters(operation: dict) -> None:
    """Gives the uuid path parameters of any operation, described here or not, their format."""
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path" and parameter["name"] in UUID_PATH_PARAMETERS:
            parameter["schema"] = dict(UUID)
        elif parameter["in"] == "path" and parameter["name"] == "name":
            parameter["schema"] = dict(ACCOUNT_NAME)
        elif parameter["in"] == "path" and parameter["name"] in ID_PATH_PARAMETERS:
            parameter["schema"] = dict(BIGINT_ID)
        elif parameter["in"] == "path" and parameter["name"] == "code":  # a wallet's currency
            parameter["schema"] = dict(CURRENCY_QUERY)


def apply(operation: dict, described: Operation) -> None:
    """Merges `described` into APIFlask's generated operation."""
    operation["summary"] = described.summary
    if described.public:
        operation["security"] = []
    if described.parameters:
        operation["parameters"] = [*operation.get("parameters", []), *described.parameters]
    errors = set(described.errors) | set(COMMON_ERRORS)
    if described.body is not None:
        body = described.body
        if described.body_type == "application/json" and "properties" in body:  # web/inputs.py refuses others
            body = {**body, "additionalProperties": False}
        operation["requestBody"] = {"required": described.body_required,
                                    "content": {described.body_type: {"schema": body}}}
        if described.body_type == "application/json":
            errors.add(400)
    schema = {"schema": described.schema or {"type": "object"}} if described.answer_type == "application/json" else {}
    responses = {str(described.status): {"description": described.answer, "content": {
        described.answer_type: schema, **{export: {"schema": {"type": "string"}} for export in described.exports}}}}
    if described.status == 204:  # no content
        responses = {"204": {"description": described.answer}}
    for status, (description, other) in described.also.items():
        responses[str(status)] = {"description": description, "content": {"application/json": {"schema": other}}}
    for status in sorted(errors):
        responses[str(status)] = {"description": ERRORS[status],
                                  "content": {"application/problem+json": {"schema": PROBLEM}}}
    if described.probe:
        responses["503"] = {"description": "Not ready: the same report, with the reason in `checks`",
                            "content": {"application/json": {"schema": {"type": "object"}}}}
    operation["responses"] = responses
