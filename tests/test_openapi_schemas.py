"""Real answers match the typed schemas /openapi.json documents for them: every bulk-credit
and funding operation, through upload, preview, approval, chunks, retry and cancel."""
from __future__ import annotations

import dataclasses

from jsonschema import Draft202012Validator, FormatChecker

from tests.test_approval import client_for, upload_file
from tests.test_bulk_pipeline import apply_all, seed_users

URL = "/api/v1/wallet/bulk-credit"


class Documented:
    def __init__(self, spec: dict):
        self.spec = spec
        self.checked: set[tuple[str, str, int]] = set()

    def check(self, method: str, template: str, response) -> dict:
        """Validates `response` against the schema of its status for the operation; returns its body."""
        answers = self.spec["paths"][template][method.lower()]["responses"]
        schema = answers[str(response.status_code)]["content"]["application/json"]["schema"]
        assert schema != {"type": "object"}, f"{method} {template} {response.status_code} is not typed"
        validator = Draft202012Validator({**schema, "components": self.spec["components"]},
                                         format_checker=FormatChecker())
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(response.json)]
        assert errors == [], f"{method} {template} {response.status_code}: {errors}"
        self.checked.add((method, template, response.status_code))
        return response.json


def test_examples_in_the_document_match_their_schemas_and_every_operation_has_a_unique_id(client):
    spec = client.get("/openapi.json").json
    schemas = [(name, schema) for name, schema in spec["components"]["schemas"].items()]
    operations = [(method, path, operation) for path, methods in spec["paths"].items()
                  for method, operation in methods.items()]
    for method, path, operation in operations:
        for media in operation.get("requestBody", {}).get("content", {}).values():
            schemas.append((f"{method} {path}", media["schema"]))
    checked = 0
    for name, schema in schemas:
        validator = Draft202012Validator({**schema, "components": spec["components"]}, format_checker=FormatChecker())
        for example in schema.get("examples", []):
            assert list(validator.iter_errors(example)) == [], (name, example)
            checked += 1
    transfer = spec["paths"]["/api/v1/wallet/transfer"]["post"]["requestBody"]["content"]["application/json"]
    assert all(e["from_user_id"] != e["to_user_id"] for e in transfer["schema"]["examples"])
    ids = [operation["operationId"] for *_, operation in operations]
    assert checked >= 4 and len(ids) == len(set(ids)) and all(ids)
    # A generated client names its functions by these: `place` or `list_all` says too little.
    assert not set(ids) & {"place", "void", "capture", "close", "create", "delete", "list_all", "events", "retry",
                           "cancel", "approve", "reject", "reverse", "freeze", "deliveries", "replay"}


def test_bulk_credit_and_funding_answers_match_their_documented_schemas(app, services, queue, clean_database):
    users = seed_users(services, 3)
    operator = client_for(app, services, queue, "operator", approval="SGD:1000.00")
    approver = client_for(app, services, queue, "approver", approval="SGD:1000.00")
    admin = client_for(app, services, queue, "admin", approval="SGD:1000.00")
    doc = Documented(admin.get("/openapi.json").json)
    faulty = dataclasses.replace(app.extensions["wallet"].settings, bulk_credit_fail_user_ids=frozenset({users[2]}))
    app.extensions["wallet"].settings = faulty

    content = f"uuid,amount,reference\n{users[0]},1.00,a\n{users[1]},2.50,b\n{users[2]},3.00,c\nnobody,1,d\n"
    doc.check("POST", URL, upload_file(operator, content, dry_run="true"))
    small = doc.check("POST", URL, upload_file(operator, content))["activity_id"]
    doc.check("POST", URL, upload_file(operator, content))  # the same file: 200, the activity
    apply_all(services, faulty, queue.take())
    doc.check("GET", f"{URL}/{{activity_id}}", operator.get(f"{URL}/{small}"))
    doc.check("GET", f"{URL}/{{activity_id}}/rows", operator.get(f"{URL}/{small}/rows"))
    doc.check("GET", f"{URL}/{{activity_id}}/history", operator.get(f"{URL}/{small}/history"))
    doc.check("POST", f"{URL}/retry", operator.post(f"{URL}/retry", json={"activity_id": small}))
    doc.check("POST", f"{URL}/{{activity_id}}/cancel", operator.post(f"{URL}/{small}/cancel", json={"reason": "x"}))

    large = f"uuid,amount\n{users[0]},600.00\n{users[1]},500.00\n"
    first = doc.check("POST", URL, upload_file(operator, large))["activity_id"]
    doc.check("POST", f"{URL}/{{activity_id}}/approve", approver.post(f"{URL}/{first}/approve"))
    second = doc.check("POST", URL, upload_file(operator, large, allow_duplicate_content="true"))["activity_id"]
    doc.check("POST", f"{URL}/{{activity_id}}/reject", approver.post(f"{URL}/{second}/reject", json={"reason": "no"}))
    listed = doc.check("GET", URL, operator.get(f"{URL}?limit=2"))
    doc.check("GET", URL, operator.get(f"{URL}?cursor={listed['next_cursor']}"))

    top_up = admin.post("/api/v1/funding-accounts/payroll/top-up", json={"amount": "5.00", "currency": "SGD"},
                        headers={"Idempotency-Key": "t"})
    doc.check("POST", "/api/v1/funding-accounts/{name}/top-up", top_up)
    doc.check("GET", "/api/v1/funding-accounts/{name}", operator.get("/api/v1/funding-accounts/payroll"))
    doc.check("GET", "/api/v1/funding-accounts", operator.get("/api/v1/funding-accounts"))

    typed = {(method, path) for method, path, _ in doc.checked}
    assert len(typed) == 12 and {status for *_, status in doc.checked} == {200, 201, 202}


def test_user_wallet_movement_and_reconciliation_answers_match_their_documented_schemas(
        client, admin_token, services, clean_database):
    from pipeline import reconciliation

    admin = {"Authorization": f"Bearer {admin_token}"}
    doc = Documented(client.get("/openapi.json").json)
    post = lambda path, body, key=None: client.post(  # noqa: E731
        path, json=body, headers={**admin, **({"Idempotency-Key": key} if key else {})})
    ana = doc.check("POST", "/api/v1/users", post("/api/v1/users", {"name": "Ana", "email": "a@example.com"}))["id"]
    bo = doc.check("POST", "/api/v1/users", post("/api/v1/users", {"name": "Bo", "email": "b@example.com",
                                                                   "external_id": "crm-2"}))["id"]
    doc.check("POST", "/api/v1/wallet/deposit", post("/api/v1/wallet/deposit", {
        "user_id": ana, "amount": "100.00", "currency": "SGD", "reference": "wire-1"}, "d1"))
    doc.check("POST", "/api/v1/wallet/withdraw", post("/api/v1/wallet/withdraw", {
        "user_id": ana, "amount": "1.00", "currency": "SGD"}, "w1"))
    moved = doc.check("POST", "/api/v1/wallet/transfer", post("/api/v1/wallet/transfer", {
        "from_user_id": ana, "to_user_id": bo, "amount": "10.00", "currency": "SGD"}, "t1"))
    get = lambda path: client.get(path, headers=admin)  # noqa: E731
    doc.check("GET", "/api/v1/users", get("/api/v1/users?email=a@example.com"))
    doc.check("GET", "/api/v1/users/{user_id}", get(f"/api/v1/users/{ana}"))
    doc.check("GET", "/api/v1/users/{user_id}/wallets", get(f"/api/v1/users/{ana}/wallets"))
    doc.check("GET", "/api/v1/users/{user_id}/balance", get(f"/api/v1/users/{ana}/balance?currency=SGD"))
    doc.check("GET", "/api/v1/users/{user_id}/transactions", get(f"/api/v1/users/{ana}/transactions"))
    doc.check("GET", "/api/v1/transactions", get(f"/api/v1/transactions?user_id={ana}"))
    doc.check("GET", "/api/v1/transactions/{entry_id}", get(f"/api/v1/transactions/{moved['id']}"))
    started = doc.check("POST", "/api/v1/reconciliations", post("/api/v1/reconciliations", {"full": True}))
    reconciliation.run(services.uow(), started["id"])
    doc.check("GET", "/api/v1/reconciliations/{reconciliation_id}", get(f"/api/v1/reconciliations/{started['id']}"))
    doc.check("GET", "/api/v1/reconciliations", get("/api/v1/reconciliations"))
    assert len({(method, path) for method, path, _ in doc.checked}) == 14
