"""The OpenAPI document covers the public contract, and /docs works with no internet."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from web import contract

API_MD = Path(__file__).resolve().parent.parent.parent / "shared" / "API.md"
#: `| POST `/api/v1/users` | ...` in the tables, and `GET /healthz` in backticks in the text.
TABLE_CELL = re.compile(r"^\|\s*(GET|POST|PUT|PATCH|DELETE)\s+`(/[^`\s]*)`", re.MULTILINE)
INLINE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`")


def normalized(path: str) -> str:
    """Path parameters by position, not by name: API.md says {id} where the code says {entry_id}."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def contract_routes() -> set[tuple[str, str]]:
    text = API_MD.read_text()
    return {(method, normalized(path)) for method, path in TABLE_CELL.findall(text) + INLINE.findall(text)}


def documented(spec: dict) -> set[tuple[str, str]]:
    return {(method.upper(), normalized(path)) for path, operations in spec["paths"].items() for method in operations}


def test_api_md_lists_the_routes_this_test_relies_on():
    routes = contract_routes()
    assert len({route for route in routes if route[1].startswith("/api/v1/")}) >= 16
    assert {("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/healthz")} <= routes


#: Routes API.md has grown for open issues and that are not built yet, by issue. An entry
#: must go once its route exists (the test below fails on a listed route that is served),
#: so this list can only shrink towards the whole contract.
NOT_BUILT_YET: set[tuple[str, str]] = set()  # issue 10's routes are all built


def test_every_route_of_the_public_contract_is_in_the_openapi_document_or_listed_as_not_built(client):
    response = client.get("/openapi.json")

    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.1")
    missing = contract_routes() - documented(spec)
    assert missing - NOT_BUILT_YET == set(), f"routes in API.md but not in /openapi.json: {sorted(missing)}"
    built = NOT_BUILT_YET & documented(spec)
    assert built == set(), f"built now, so take them off NOT_BUILT_YET: {sorted(built)}"
    assert NOT_BUILT_YET <= contract_routes(), "NOT_BUILT_YET names a route API.md does not have"


def test_the_document_is_valid_openapi_3_1(client):
    validate(client.get("/openapi.json").get_json())  # raises on the first error


def test_the_document_describes_bearer_tokens_problems_and_money_bodies(client):
    spec = client.get("/openapi.json").get_json()

    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "An API key of scope admin, operator, approver or user:<id>."}
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    transfer = spec["paths"]["/api/v1/wallet/transfer"]["post"]
    assert {"from_user_id", "to_user_id", "amount", "currency"} <= set(
        transfer["requestBody"]["content"]["application/json"]["schema"]["properties"])
    assert [p["name"] for p in transfer["parameters"] if p["in"] == "header"] == ["Idempotency-Key"]
    assert transfer["responses"]["422"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"}


def test_every_operation_the_contract_module_describes_is_a_route_of_the_app(app):
    routes = {(method, re.sub(r"<(?:[^:>]*:)?([^>]*)>", r"{\1}", rule.rule))
              for rule in app.url_map.iter_rules() for method in rule.methods}
    stale = set(contract.OPERATIONS) - routes
    assert stale == set()


class _References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attributes):
        self.urls += [value for name, value in attributes if name in ("src", "href") and value]


def test_the_docs_page_loads_only_files_this_app_serves(client):
    response = client.get("/docs")

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert re.findall(r"(?i)(?:https?:)?//[a-z0-9.-]+", html) == [], "the page names another host"
    parser = _References()
    parser.feed(html)
    assert len(parser.urls) == 4
    for url in parser.urls:
        assert url.startswith("/docs/assets/")
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.data) > 500


def test_the_docs_assets_route_serves_only_the_listed_files(client):
    for name in ("..%2Fapi.py", "index.html", "LICENSE"):
        response = client.get(f"/docs/assets/{name}")
        assert (response.status_code, response.mimetype) == (404, "application/problem+json")


@pytest.mark.parametrize("method, path, status, code", [
    ("get", "/api/v1/nowhere", 404, "not_found"),
    ("delete", "/api/v1/users", 405, "method_not_allowed"),
    ("post", "/api/v1/wallet/deposit", 401, "unauthenticated"),
])
def test_errors_stay_problem_json_under_apiflask(client, method, path, status, code):
    response = getattr(client, method)(path, json={})

    assert (response.status_code, response.mimetype, response.get_json()["code"]) == (
        status, "application/problem+json", code)
