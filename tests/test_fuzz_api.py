"""Fuzzing the API from its own OpenAPI document with schemathesis, in-process (WSGI) against the
real PostgreSQL and Redis, once with an admin key and once with a `user:` key.

For every operation, schemathesis generates requests that fit the document (positive) and
requests that break it (negative), sends each, and checks the answer: never a 5xx, a status
code the document lists, the documented content type, headers and schema, a request the
document calls invalid refused with a 4xx, a missing required header refused, and a
protected operation that answers 401 without its token. Half of the valid requests name
existing users, entries, activities and runs instead of random uuids, so success answers are
checked too.

Not checked: that every valid request is accepted (schemathesis' `positive_data_acceptance`).
The contract answers 422 to requests no schema can tell apart from good ones (not enough
money, a currency this deployment does not hold, three digits after the point for SGD).

`FUZZ_EXAMPLES` (default 25) is the number of requests per operation, mode and key; `make test`
runs the short form, about a minute. A longer run: `FUZZ_EXAMPLES=500 pytest tests/test_fuzz_api.py`.
"""
from __future__ import annotations

import dataclasses
import io
import os
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import allow_header_conformance, positive_data_acceptance, unsupported_method

from api import create_app
from pipeline.users import create_api_key
from tests.conftest import all_tables
from tests.test_bulk_pipeline import RecordingQueue
from web import contract

#: Requests per operation, generation mode and key.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
#: The event feed's settings for the fuzzing app: a feed ends after 0.3 s, not five minutes.
FEED_DURATION_S = 0.3
FEED_BLOCK_MS = 100
OPERATIONS = list(contract.OPERATIONS)
#: Probes that answer 503 by design when what they check is down: no worker runs in this test.
PROBES = frozenset({"/readyz", "/healthz/workers"})
#: Paths that another rule also matches, so a method they lack is not a 405 there and their
#: Allow lists it: GET /api/v1/wallet/bulk-credit/retry is GET /api/v1/wallet/bulk-credit/{activity_id}
#: with the activity id "retry", which is not a uuid (422).
SHADOWED_PATHS = frozenset({"/api/v1/wallet/bulk-credit/retry"})
#: Operations with a parameter or a body, the only ones a request can break.
TAKE_INPUT = [(method, path) for (method, path), described in contract.OPERATIONS.items()
              if "{" in path or described.parameters or described.body is not None]


@pytest.fixture(scope="module")
def fuzz_app(settings, services):
    """One app and one database for the whole module: what earlier requests created stays, as it
    would in a real deployment, and the module does not pay for a fresh app per operation."""
    with services.engine.begin() as connection:  # as conftest's clean_database, once for the module
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        connection.exec_driver_sql(f"TRUNCATE {', '.join(all_tables(services.engine))} RESTART IDENTITY CASCADE")
        connection.exec_driver_sql("INSERT INTO funding_accounts (name) VALUES ('default')")  # as migrated
    app = create_app(dataclasses.replace(settings, events_feed_duration_max_s=FEED_DURATION_S,
                                         events_feed_block_ms=FEED_BLOCK_MS))
    app.extensions["wallet.chunk_queue"] = RecordingQueue()  # chunk messages stay in the test
    yield app
    app.extensions["wallet"].engine.dispose()


@pytest.fixture(scope="module")
def known(fuzz_app) -> dict[str, str]:
    """Ids that exist, by the names of the parameters and fields that take them, and two keys."""
    services = fuzz_app.extensions["wallet"]
    admin_token = create_api_key(services.uow(), "admin")
    client = fuzz_app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"

    def post(path: str, **kwargs) -> dict:
        response = client.post(path, headers={"Idempotency-Key": str(uuid.uuid4())}, **kwargs)
        assert response.status_code in (201, 202), response.data
        return response.get_json()

    ana = post("/api/v1/users", json={"name": "Ana", "email": "ana@example.com"})["id"]
    ben = post("/api/v1/users", json={"name": "Ben", "email": "ben@example.com"})["id"]
    entry = post("/api/v1/wallet/deposit", json={"user_id": ana, "amount": "1000.00", "currency": "SGD"})["id"]
    csv = f"uuid,amount\n{ana},1.00\n{ben},2.00\n".encode()
    activity = post("/api/v1/wallet/bulk-credit", data={"file": (io.BytesIO(csv), "payouts.csv")},
                    content_type="multipart/form-data")["activity_id"]
    run = post("/api/v1/reconciliations", json={})["id"]
    held = post("/api/v1/wallet/holds", json={"user_id": ana, "amount": "10.00", "currency": "SGD"})["id"]
    return {"user_id": ana, "from_user_id": ana, "to_user_id": ben, "entry_id": entry, "activity_id": activity,
            "reconciliation_id": run, "hold_id": held, "code": "SGD", "admin": admin_token,
            "user": create_api_key(services.uow(), f"user:{ana}")}


def with_known_ids(case, known: dict[str, str]):
    """The case with the uuids it carries replaced by existing ones."""
    for name in list(case.path_parameters or {}):
        if name in known:
            case.path_parameters[name] = known[name]
    if isinstance(case.body, dict):
        for name in ("user_id", "from_user_id", "to_user_id", "activity_id"):
            if isinstance(case.body.get(name), str):
                case.body[name] = known[name]
    return case


def excluded_checks(path: str) -> list:
    """The checks left out for `path`: see the module's docstring, PROBES and SHADOWED_PATHS."""
    return [positive_data_acceptance, *([not_a_server_error] if path in PROBES else []),
            *([unsupported_method, allow_header_conformance] if path in SHADOWED_PATHS else [])]


def load(app, method: str, path: str):
    """The document as schemathesis reads it, and one of its operations."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    # The API ignores query parameters it does not know, as HTTP APIs do, so an unknown one is no
    # invalid request; the token is the test's (a missing or bad one: the `ignored_auth` check).
    schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)
    # `?limit=5&limit=abc` is an invalid request: web/inputs.py refuses it.
    schema.config.phases.coverage.generate_duplicate_query_parameters = True
    return schema, schema[path][method]


def fuzz(app, known: dict[str, str], scope: str, method: str, path: str, mode: GenerationMode) -> None:
    schema, operation = load(app, method, path)
    cases = operation.as_strategy(generation_mode=mode)
    if mode == GenerationMode.POSITIVE:  # a negative case stays negative only as generated
        cases = st.one_of(cases, cases.map(lambda case: with_known_ids(case, known)))
    headers = {"Authorization": f"Bearer {known[scope]}"}

    @given(case=cases)
    @hypothesis_settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(headers=headers, excluded_checks=excluded_checks(path))

    check()


@pytest.mark.parametrize("scope", ["admin", "user"])
@pytest.mark.parametrize("method, path", OPERATIONS)
def test_requests_that_fit_the_document_get_documented_answers_and_never_a_server_error(
        fuzz_app, known, scope, method, path):
    fuzz(fuzz_app, known, scope, method, path, GenerationMode.POSITIVE)


@pytest.mark.parametrize("scope", ["admin", "user"])
@pytest.mark.parametrize("method, path", TAKE_INPUT)
def test_requests_that_break_the_document_are_refused_with_a_documented_4xx(fuzz_app, known, scope, method, path):
    fuzz(fuzz_app, known, scope, method, path, GenerationMode.NEGATIVE)


@pytest.mark.parametrize("scope", ["admin", "user"])
@pytest.mark.parametrize("method, path", OPERATIONS)
def test_the_boundaries_of_every_input_and_methods_a_path_does_not_take_get_documented_answers(
        fuzz_app, known, scope, method, path):
    """schemathesis' coverage phase: each input at and past its bounds (lengths, patterns, formats,
    a missing required header, a parameter given twice) and every method the path lacks (405 with
    Allow), each sent once."""
    schema, operation = load(fuzz_app, method, path)
    headers = {"Authorization": f"Bearer {known[scope]}"}
    config = schema.config.generation_for(operation=operation)
    failures, sent = [], 0
    for case in schema.iter_coverage_cases(operation, generation_modes=list(GenerationMode), generation_config=config):
        sent += 1
        try:
            case.call_and_validate(headers=headers, excluded_checks=excluded_checks(path))
        except FailureGroup as failure:
            failures.append(str(failure))
    assert sent > 0
    assert failures == [], "\n".join(failures[:5])
