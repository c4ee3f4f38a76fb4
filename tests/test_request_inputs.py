"""What every route does with what a client sends, on the real PostgreSQL: bodies that are not the
JSON object expected, bodies past the size limit, query parameters given twice, methods a path
does not take, and the input rules /openapi.json states."""
from __future__ import annotations

import io
import json
import uuid

import pytest
from sqlalchemy import text

from tests.conftest import assert_ledger_invariants
from tests.test_bulk_pipeline import RecordingQueue
from tests.test_http_contract import assert_problem
from web.inputs import JSON_DEPTH_MAX, REQUEST_BODY_MAX_BYTES

#: Every route that reads a JSON body.
JSON_ROUTES = ("/api/v1/users", "/api/v1/wallet/deposit", "/api/v1/wallet/withdraw", "/api/v1/wallet/transfer",
               "/api/v1/wallet/bulk-credit/retry", "/api/v1/reconciliations")
#: Bodies that are not a JSON object, as (Content-Type, bytes).
NOT_A_JSON_OBJECT = {
    "nested 1,000 levels deep": ("application/json", b"[" * 1_000 + b"]" * 1_000),
    "nested 2,000 levels deep, unclosed": ("application/json", b"[" * 2_000),
    "an object nested too deeply": ("application/json", b'{"full": ' + b'{"a": ' * (JSON_DEPTH_MAX + 1) + b"1"
                                    + b"}" * (JSON_DEPTH_MAX + 2)),
    "truncated": ("application/json", b'{"full": tr'),
    "an array": ("application/json", b"[]"),
    "a string": ("application/json", b'"full"'),
    "a number": ("application/json", b"1"),
    "null": ("application/json", b"null"),
    "NaN": ("application/json", b'{"full": NaN}'),
    "Infinity": ("application/json", b'{"full": -Infinity}'),
    "a number past a float": ("application/json", b'{"full": 1e999}'),
    "an integer of 5,000 digits": ("application/json", b'{"full": ' + b"9" * 5_000 + b"}"),
    "a key twice": ("application/json", b'{"full": true, "full": false}'),
    "bytes that are not UTF-8": ("application/json", b'{"full": "\xff\xfe"}'),
    "UTF-16": ("application/json", '{"full": true}'.encode("utf-16")),
    "a UTF-8 byte order mark": ("application/json", b'\xef\xbb\xbf{"full": true}'),
    "JSON sent as text/plain": ("text/plain", b'{"full": true}'),
    "a form": ("application/x-www-form-urlencoded", b"full=true"),
}


def count(engine, table: str) -> int:
    with engine.connect() as connection:
        return connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


@pytest.fixture
def admin_headers(admin_token) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}", "Idempotency-Key": str(uuid.uuid4())}


@pytest.fixture
def user_id(client, admin_token) -> str:
    response = client.post("/api/v1/users", json={"name": "Ana", "email": "ana@example.com"},
                           headers={"Authorization": f"Bearer {admin_token}"})
    return response.get_json()["id"]


# --- bodies that are not the JSON object expected ---------------------------------------------

@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize("case", list(NOT_A_JSON_OBJECT))
def test_a_body_that_is_not_a_json_object_is_refused_with_400_on_every_json_route(
        client, engine, admin_headers, route, case):
    content_type, body = NOT_A_JSON_OBJECT[case]

    response = client.post(route, data=body, content_type=content_type, headers=admin_headers)

    problem = assert_problem(response, 400, "malformed_request")
    assert problem["errors"][0]["field"] in ("body", "Content-Type")
    assert (count(engine, "journal_entries"), count(engine, "reconciliations"), count(engine, "users")) == (0, 0, 0)


def test_a_deeply_nested_value_inside_a_money_movement_is_refused_and_moves_nothing(client, engine, admin_headers,
                                                                                   user_id):
    body = (f'{{"user_id": "{user_id}", "amount": "1.00", "currency": "SGD", "reference": '.encode()
            + b"[" * 990 + b"]" * 990 + b"}")

    response = client.post("/api/v1/wallet/deposit", data=body, content_type="application/json",
                           headers=admin_headers)

    assert_problem(response, 400, "malformed_request")
    assert count(engine, "journal_entries") == 0


@pytest.mark.parametrize("body, content_type", [
    (b"", None), (b"", "application/json"), (b"{}", "application/json"), (b'{"full": true}', "application/json"),
])
def test_a_reconciliation_starts_with_no_body_an_empty_one_or_an_object(client, engine, admin_headers, body,
                                                                        content_type):
    response = client.post("/api/v1/reconciliations", data=body, content_type=content_type, headers=admin_headers)

    assert response.status_code == 202, response.data
    assert count(engine, "reconciliations") == 1


@pytest.mark.parametrize("full", ['"yes"', "1", "null", "[]"])
def test_a_reconciliation_whose_full_is_not_a_boolean_is_refused_with_422(client, engine, admin_headers, full):
    response = client.post("/api/v1/reconciliations", data=f'{{"full": {full}}}', content_type="application/json",
                           headers=admin_headers)

    assert_problem(response, 422, "validation_failed", {"full"})
    assert count(engine, "reconciliations") == 0


# --- body size ------------------------------------------------------------------------------

def test_a_deposit_with_a_body_past_the_limit_is_refused_with_413_and_moves_nothing(client, engine, admin_headers,
                                                                                   user_id):
    body = json.dumps({"user_id": user_id, "amount": "1.00", "currency": "SGD"})  # padded with JSON's spaces
    padded = lambda spaces: client.post("/api/v1/wallet/deposit", data=body + " " * spaces,  # noqa: E731
                                        content_type="application/json", headers=admin_headers)

    response = padded(REQUEST_BODY_MAX_BYTES)

    problem = assert_problem(response, 413, "payload_too_large")
    assert str(REQUEST_BODY_MAX_BYTES) in problem["detail"]
    assert count(engine, "journal_entries") == 0
    assert padded(1).status_code == 201  # the refusal did not use up the key


def test_a_body_just_under_the_limit_is_read(client, admin_headers, user_id):
    body = json.dumps({"user_id": user_id, "amount": "1.00", "currency": "SGD"})
    padded = body + " " * (REQUEST_BODY_MAX_BYTES - len(body) - 1)

    assert client.post("/api/v1/wallet/deposit", data=padded, content_type="application/json",
                       headers=admin_headers).status_code == 201


def test_a_csv_upload_still_takes_files_past_the_json_limit(app, client, engine, admin_headers, user_id):
    app.extensions["wallet.chunk_queue"] = RecordingQueue()
    rows = REQUEST_BODY_MAX_BYTES // 40 + 1_000
    csv = "uuid,amount\n" + "".join(f"{user_id},{n % 100 + 1}.00\n" for n in range(rows))
    assert len(csv) > REQUEST_BODY_MAX_BYTES

    response = client.post("/api/v1/wallet/bulk-credit", data={"file": (io.BytesIO(csv.encode()), "big.csv")},
                           content_type="multipart/form-data", headers=admin_headers)

    assert response.status_code == 202, response.data
    assert response.get_json()["total_records"] == rows
    assert_ledger_invariants(engine)


# --- query parameters given twice -----------------------------------------------------------

@pytest.mark.parametrize("path, name", [
    ("/api/v1/users/{user}/transactions?limit=5&limit=abc", "limit"),
    ("/api/v1/users/{user}/transactions?cursor=cDE&cursor=x", "cursor"),  # cDE: position 1
    ("/api/v1/users/{user}/balance?currency=SGD&currency=JPY", "currency"),
    ("/api/v1/reconciliations?limit=1&limit=1", "limit"),
    ("/api/v1/wallet/bulk-credit/{user}/rows?status=FAILED&status=INVALID", "status"),
    ("/api/v1/events?user_id={user}&user_id={user}", "user_id"),
    ("/api/v1/events?activity_id={user}&activity_id={user}", "activity_id"),
])
def test_a_query_parameter_given_twice_is_refused_with_422_naming_it(client, admin_headers, user_id, path, name):
    response = client.get(path.format(user=user_id), headers=admin_headers)

    problem = assert_problem(response, 422, "validation_failed", {name})
    assert name in problem["detail"]


def test_a_query_parameter_given_twice_on_a_dashboard_page_is_refused(client):
    response = client.get("/dashboard/sign-in?next=/dashboard/&next=https://example.com/")

    assert response.status_code == 422
    assert response.mimetype == "text/html"


# --- methods --------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, allowed", [
    ("delete", "/api/v1/users", {"GET", "HEAD", "POST"}),
    ("put", "/api/v1/wallet/deposit", {"POST"}),
    ("post", "/api/v1/users/8c1f0f9e-8b1a-4c55-9a57-5e0bd1d6e0a1", {"GET", "HEAD", "DELETE"}),
    ("patch", "/api/v1/reconciliations", {"GET", "HEAD", "POST"}),
])
def test_a_405_names_the_methods_the_path_takes_in_allow(client, admin_headers, method, path, allowed):
    response = getattr(client, method)(path, headers=admin_headers)

    assert_problem(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == allowed | {"OPTIONS"}


# --- the input rules in /openapi.json -------------------------------------------------------

def test_the_document_states_uuid_formats_lengths_patterns_and_bounds(client):
    spec = client.get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]

    for path, operations in spec["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "name":  # a funding account's
                    assert parameter["schema"]["pattern"] == "^[a-z0-9][a-z0-9_.-]{0,62}$", (path, parameter)
                elif parameter["in"] == "path" and parameter["name"].endswith("delivery_id"):  # a row id
                    assert parameter["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
                elif parameter["in"] == "path" and parameter["name"] == "code":  # a wallet's currency
                    assert parameter["schema"] == {"type": "string", "pattern": "^[A-Z]{3}$"}, (path, parameter)
                elif parameter["in"] == "path":
                    assert parameter["schema"] == {"type": "string", "format": "uuid"}, (path, parameter)
    deposit = spec["paths"]["/api/v1/wallet/deposit"]["post"]
    body = deposit["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["user_id", "amount", "currency"]
    assert body["properties"]["user_id"] == {"type": "string", "format": "uuid"}
    assert body["properties"]["reference"]["maxLength"] == 200
    assert schemas["Amount"]["pattern"] == r"^[0-9]+(\.[0-9]+)?$"
    assert schemas["Currency"]["pattern"] == "^[A-Z]{3}$"
    key = next(p for p in deposit["parameters"] if p["name"] == "Idempotency-Key")
    assert key["required"] is True and key["schema"] == {"type": "string", "minLength": 1, "maxLength": 255}
    history = spec["paths"]["/api/v1/users/{user_id}/transactions"]["get"]
    limit = next(p for p in history["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)
    user = spec["paths"]["/api/v1/users"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert user["properties"]["name"] == {"type": "string", "minLength": 1, "maxLength": 200}
    reconciliation = spec["paths"]["/api/v1/reconciliations"]["post"]
    assert reconciliation["requestBody"]["required"] is False
    assert {"400", "413", "422"} <= set(reconciliation["responses"])


# --- event stream positions -----------------------------------------------------------------

@pytest.mark.parametrize("position", ["19-93406254071152992586", "18446744073709551616", "١٢٣-٠"])
def test_an_event_stream_position_redis_cannot_read_is_refused_with_422_before_the_stream_starts(
        client, admin_headers, user_id, position):
    by_query = client.get(f"/api/v1/events?user_id={user_id}&last_event_id={position}", headers=admin_headers)
    by_header = client.get(f"/api/v1/events?user_id={user_id}", headers={**admin_headers, "Last-Event-ID": position})

    for response in (by_query, by_header):
        assert_problem(response, 422, "validation_failed", {"Last-Event-ID"})


@pytest.mark.parametrize("header", ["", "1700000000000-0"])
def test_a_bad_query_position_is_refused_whatever_the_last_event_id_header_says(client, admin_headers, user_id,
                                                                                header):
    response = client.get(f"/api/v1/events?user_id={user_id}&last_event_id=%1E",
                          headers={**admin_headers, "Last-Event-ID": header})

    assert_problem(response, 422, "validation_failed", {"Last-Event-ID"})


def test_the_upload_routes_the_body_limit_leaves_alone_are_routes_of_the_app(app):
    from web.inputs import UPLOAD_ENDPOINTS

    assert UPLOAD_ENDPOINTS <= set(app.view_functions)


def test_every_operation_of_the_document_is_described_by_the_contract_so_the_fuzzer_reaches_it(client):
    from web import contract

    spec = client.get("/openapi.json").get_json()
    operations = {(method.upper(), path) for path, methods in spec["paths"].items() for method in methods}

    assert operations - set(contract.OPERATIONS) == set()
