"""Holds over HTTP against the real PostgreSQL: money reserved out of the available balance,
captured (in part, to a user or to bank) or voided, expired by a real scheduler process, and
the database's own checks behind the Python ones."""
from __future__ import annotations

import sys
import time
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from pipeline import reconciliation
from tests.conftest import assert_ledger_invariants, test_environ
from tests.processes import Process
from tests.test_http_contract import Api, assert_problem, assert_timestamp

HOLD_FIELDS = {"id", "status", "user_id", "amount", "currency", "reference", "expires_at", "created_at",
               "decided_at", "captured_amount", "to_user_id", "transaction_id"}
#: How long a real scheduler gets to start, take the lease and expire a hold, in seconds.
EXPIRY_S = 60


@pytest.fixture
def admin(client, admin_token) -> Api:
    return Api(client, admin_token)


@pytest.fixture
def token_for(services, clean_database):
    from pipeline.users import create_api_key

    return lambda scope: create_api_key(services.uow(), scope)


def funded(admin: Api, amount: str = "100.00") -> str:
    user_id = admin.user()["id"]
    assert admin.deposit(user_id, amount).status_code == 201
    return user_id


def hold(admin: Api, user_id: str, amount: str, key: str = "fresh", **extra):
    return admin.post("/api/v1/wallet/holds", {"user_id": user_id, "amount": amount, "currency": "SGD", **extra},
                      key=key)


def balance(admin: Api, user_id: str) -> dict:
    body = admin.get(f"/api/v1/users/{user_id}/balance?currency=SGD").get_json()
    return {name: body[name] for name in ("balance", "held", "available")}


def audit_events(engine, object_id: str) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(text("SELECT actor_type, api_key_id IS NOT NULL, action, detail FROM audit_events"
                                       " WHERE object_id = :id ORDER BY id"), {"id": object_id}).all()


def assert_reconciles_clean(services) -> None:
    run = reconciliation.run(services.uow(), reconciliation.start(services.uow(), True))
    assert (run["status"], run["mismatches"]) == ("clean", []), run


def test_a_hold_reserves_money_out_of_the_available_balance_and_debits_may_take_only_what_is_available(admin):
    ana, bo = funded(admin), admin.user()["id"]

    response = hold(admin, ana, "30.00", reference="payout-1")

    assert response.status_code == 201, response.data
    body = response.get_json()
    assert set(body) == HOLD_FIELDS
    assert (body["status"], body["user_id"], body["amount"], body["currency"], body["reference"]) == \
        ("held", ana, "30.00", "SGD", "payout-1")
    assert_timestamp(body["expires_at"])
    assert balance(admin, ana) == {"balance": "100.00", "held": "30.00", "available": "70.00"}
    [wallet] = admin.get(f"/api/v1/users/{ana}/wallets").get_json()["data"]
    assert (wallet["balance"], wallet["held"], wallet["available"]) == ("100.00", "30.00", "70.00")
    assert_problem(admin.post("/api/v1/wallet/withdraw", {"user_id": ana, "amount": "70.01", "currency": "SGD"}),
                   422, "insufficient_funds")
    assert_problem(admin.transfer(ana, bo, "70.01"), 422, "insufficient_funds")
    assert_problem(hold(admin, ana, "70.01"), 422, "insufficient_funds")
    assert admin.transfer(ana, bo, "70.00").status_code == 201
    assert balance(admin, ana) == {"balance": "30.00", "held": "30.00", "available": "0.00"}


def test_a_partial_capture_to_another_user_is_one_entry_and_the_rest_is_released(services, admin):
    ana, bo = funded(admin), admin.user()["id"]
    hold_id = hold(admin, ana, "30.00").get_json()["id"]

    response = admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", {"amount": "12.50", "to_user_id": bo})

    assert response.status_code == 201, response.data
    captured = response.get_json()
    assert (captured["kind"], captured["hold_id"], captured["from_user_id"], captured["to_user_id"],
            captured["amount"], captured["released"], captured["balance_after"]) == \
        ("transfer", hold_id, ana, bo, "12.50", "17.50", "87.50")
    # The ledger an accountant expects: one entry, Ana -12.50, Bo +12.50, nothing else.
    entry = admin.get(f"/api/v1/transactions/{captured['id']}").get_json()
    assert sorted((p["user_id"], p["amount"], p["balance_after"]) for p in entry["postings"]) == \
        sorted([(ana, "-12.50", "87.50"), (bo, "12.50", "12.50")])
    assert balance(admin, ana) == {"balance": "87.50", "held": "0.00", "available": "87.50"}
    assert balance(admin, bo)["balance"] == "12.50"
    read = admin.get(f"/api/v1/wallet/holds/{hold_id}").get_json()
    assert (read["status"], read["captured_amount"], read["to_user_id"], read["transaction_id"]) == \
        ("captured", "12.50", bo, captured["id"])
    assert_ledger_invariants(services.engine)
    assert_reconciles_clean(services)


def test_a_full_capture_without_a_receiver_is_a_withdrawal_to_bank(services, admin):
    ana = funded(admin)
    hold_id = hold(admin, ana, "30.00").get_json()["id"]

    response = admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", None)

    assert response.status_code == 201, response.data
    assert (response.get_json()["kind"], response.get_json()["amount"], response.get_json()["released"]) == \
        ("withdrawal", "30.00", "0.00")
    entry = admin.get(f"/api/v1/transactions/{response.get_json()['id']}").get_json()
    assert sorted((p["system_wallet"] or "user", p["amount"]) for p in entry["postings"]) == \
        [("bank", "30.00"), ("user", "-30.00")]
    assert balance(admin, ana) == {"balance": "70.00", "held": "0.00", "available": "70.00"}
    assert_reconciles_clean(services)


def test_a_voided_hold_releases_everything_and_is_never_decided_again(services, admin):
    ana = funded(admin)
    hold_id = hold(admin, ana, "30.00").get_json()["id"]

    response = admin.post(f"/api/v1/wallet/holds/{hold_id}/void", None, key=None)

    assert response.status_code == 200, response.data
    assert response.get_json()["status"] == "voided"
    assert balance(admin, ana) == {"balance": "100.00", "held": "0.00", "available": "100.00"}
    assert_problem(admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", {}), 409, "invalid_state")
    assert_problem(admin.post(f"/api/v1/wallet/holds/{hold_id}/void", None, key=None), 409, "invalid_state")
    assert admin.get(f"/api/v1/wallet/holds/{hold_id}").get_json()["status"] == "voided"
    assert_ledger_invariants(services.engine)


def test_a_hold_and_a_capture_replay_with_their_key_and_move_nothing_twice(admin):
    ana, bo = funded(admin), admin.user()["id"]
    first = hold(admin, ana, "30.00", key="hold-1")
    again = hold(admin, ana, "30.00", key="hold-1")
    assert (again.status_code, again.get_json(), again.headers["Idempotency-Replayed"]) == \
        (201, first.get_json(), "true")
    assert_problem(hold(admin, ana, "31.00", key="hold-1"), 422, "idempotency_key_reused")
    assert balance(admin, ana)["held"] == "30.00"
    hold_id = first.get_json()["id"]

    capture = admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", {"to_user_id": bo}, key="capture-1")
    replay = admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", {"to_user_id": bo}, key="capture-1")

    assert capture.status_code == replay.status_code == 201
    assert replay.get_json() == capture.get_json() and replay.headers["Idempotency-Replayed"] == "true"
    assert_problem(admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", {}, key="capture-1"), 422,
                   "idempotency_key_reused")
    assert_problem(admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", {"to_user_id": bo}), 409, "invalid_state")
    assert balance(admin, bo)["balance"] == "30.00"


@pytest.mark.parametrize("change, field", [
    ({"amount": "0"}, "amount"), ({"amount": 5}, "amount"), ({"amount": "1.001"}, "amount"),
    ({"currency": "EUR"}, "currency"), ({"user_id": "nope"}, "user_id"), ({"reference": ""}, "reference"),
    ({"expires_in_s": 0}, "expires_in_s"), ({"expires_in_s": "60"}, "expires_in_s"),
    ({"expires_in_s": True}, "expires_in_s"), ({"expires_in_s": 1.5}, "expires_in_s"),
    ({"expires_in_s": 30 * 86_400 + 1}, "expires_in_s"),
])
def test_a_hold_request_that_is_not_valid_is_a_422_naming_the_field(admin, change, field):
    ana = funded(admin)
    body = {"user_id": ana, "amount": "1.00", "currency": "SGD", **change}
    assert_problem(admin.post("/api/v1/wallet/holds", body), 422, "validation_failed", {field})
    assert balance(admin, ana)["held"] == "0.00"


def test_holds_and_captures_refuse_what_cannot_be_done_with_a_stable_code(admin):
    ana, bo = funded(admin), admin.user()["id"]
    hold_id = hold(admin, ana, "30.00").get_json()["id"]
    capture = f"/api/v1/wallet/holds/{hold_id}/capture"

    assert admin.post("/api/v1/wallet/holds", {"user_id": ana, "amount": "1.00", "currency": "SGD"},
                      key=None).status_code == 400
    assert admin.post(capture, {}, key=None).status_code == 400
    assert_problem(hold(admin, str(uuid.uuid4()), "1.00"), 404, "not_found")
    assert_problem(hold(admin, bo, "1.00"), 422, "insufficient_funds")  # no wallet yet
    assert_problem(admin.post(capture, {"amount": "30.01"}), 422, "validation_failed", {"amount"})
    assert_problem(admin.post(capture, {"amount": "1.001"}), 422, "validation_failed", {"amount"})
    assert_problem(admin.post(capture, {"to_user_id": ana}), 422, "same_wallet")
    assert_problem(admin.post(capture, {"to_user_id": "x"}), 422, "validation_failed", {"to_user_id"})
    assert_problem(admin.post(capture, {"to_user_id": str(uuid.uuid4())}), 404, "not_found")
    assert_problem(admin.post(f"/api/v1/wallet/holds/{uuid.uuid4()}/capture", {}), 404, "not_found")
    assert_problem(admin.post(f"/api/v1/wallet/holds/{uuid.uuid4()}/void", None, key=None), 404, "not_found")
    assert_problem(admin.get("/api/v1/wallet/holds/not-a-uuid"), 422, "validation_failed", {"hold_id"})
    assert admin.get(f"/api/v1/wallet/holds/{hold_id}").get_json()["status"] == "held"
    assert balance(admin, ana) == {"balance": "100.00", "held": "30.00", "available": "70.00"}


def test_only_an_admin_holds_captures_and_voids_and_a_user_key_reads_only_its_own_holds(client, admin, token_for):
    ana, bo = funded(admin), funded(admin)
    hold_id = hold(admin, ana, "10.00").get_json()["id"]
    operator, own, other = (Api(client, token_for(scope)) for scope in ("operator", f"user:{ana}", f"user:{bo}"))

    for api in (operator, own):
        assert_problem(hold(api, ana, "1.00"), 403, "forbidden")
        assert_problem(api.post(f"/api/v1/wallet/holds/{hold_id}/capture", {}), 403, "forbidden")
        assert_problem(api.post(f"/api/v1/wallet/holds/{hold_id}/void", None, key=None), 403, "forbidden")
    assert_problem(Api(client, None).get(f"/api/v1/wallet/holds/{hold_id}"), 401, "unauthenticated")
    assert_problem(Api(client, "wp_bad").post("/api/v1/wallet/holds", {}), 401, "unauthenticated")
    assert own.get(f"/api/v1/wallet/holds/{hold_id}").status_code == 200
    assert operator.get(f"/api/v1/wallet/holds/{hold_id}").status_code == 200
    assert_problem(other.get(f"/api/v1/wallet/holds/{hold_id}"), 404, "not_found")
    assert admin.get(f"/api/v1/wallet/holds/{hold_id}").get_json()["status"] == "held"


def test_every_hold_action_records_one_audit_event_with_the_acting_key(engine, admin):
    ana, bo = funded(admin), admin.user()["id"]
    captured_id = hold(admin, ana, "10.00").get_json()["id"]
    voided_id = hold(admin, ana, "5.00").get_json()["id"]
    admin.post(f"/api/v1/wallet/holds/{captured_id}/capture", {"amount": "4.00", "to_user_id": bo})
    admin.post(f"/api/v1/wallet/holds/{voided_id}/void", None, key=None)

    created, capture = audit_events(engine, captured_id)
    assert created[:3] == ("api_key", True, "hold.create") and created[3]["amount"] == 1000
    assert capture[:3] == ("api_key", True, "hold.capture")
    assert (capture[3]["amount"], capture[3]["released"], capture[3]["to_user_id"]) == (400, 600, bo)
    assert [event[2] for event in audit_events(engine, voided_id)] == ["hold.create", "hold.void"]


def test_the_scheduler_expires_a_hold_past_its_time_and_a_late_capture_is_refused(
        services, engine, admin, tmp_path):
    ana = funded(admin)
    hold_id = hold(admin, ana, "30.00", expires_in_s=1).get_json()["id"]
    scheduler = Process(tmp_path / "scheduler.log", [sys.executable, "-m", "jobs"],
                        test_environ(SCHEDULER_SWEEP_INTERVAL_S="0.5", RECONCILE_INTERVAL_S="3600"))
    try:
        deadline = time.monotonic() + EXPIRY_S
        while (status := admin.get(f"/api/v1/wallet/holds/{hold_id}").get_json()["status"]) == "held":
            assert time.monotonic() < deadline, scheduler.tail()
            time.sleep(0.2)
    finally:
        scheduler.stop()

    assert status == "expired"
    assert balance(admin, ana) == {"balance": "100.00", "held": "0.00", "available": "100.00"}
    assert_problem(admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", {}), 409, "invalid_state")
    assert [(event[0], event[2]) for event in audit_events(engine, hold_id)] == \
        [("api_key", "hold.create"), ("scheduler", "hold.expire")]
    with engine.connect() as connection:  # the webhooks' outbox, written in the expiry's transaction
        [(kind, payload)] = connection.execute(text("SELECT type, payload::text FROM webhook_events"
                                                    " WHERE object_id = :id"), {"id": hold_id}).all()
    assert kind == "hold.expired" and '"amount": "30.00"' in payload


def test_a_capture_once_the_hold_has_expired_is_refused_even_before_the_sweep(admin):
    ana = funded(admin)
    hold_id = hold(admin, ana, "30.00", expires_in_s=1).get_json()["id"]
    time.sleep(1.2)

    assert_problem(admin.post(f"/api/v1/wallet/holds/{hold_id}/capture", {}), 409, "invalid_state")
    assert admin.post(f"/api/v1/wallet/holds/{hold_id}/void", None, key=None).status_code == 200
    assert balance(admin, ana)["available"] == "100.00"


# --- the database's own checks, reached with raw SQL past the Python ones ------------------

def _raw(engine, statement: str, **params) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def test_the_database_refuses_a_debit_of_held_money_and_held_money_beyond_the_balance(engine, admin):
    ana = funded(admin)
    hold(admin, ana, "30.00")

    with pytest.raises(DBAPIError, match="wallets_held_within_balance"):
        _raw(engine, "UPDATE wallets SET balance = 2999 WHERE user_id = :u", u=ana)
    with pytest.raises(DBAPIError, match="wallets_held_within_balance"):
        _raw(engine, "UPDATE wallets SET held = -1 WHERE user_id = :u", u=ana)
    assert balance(admin, ana) == {"balance": "100.00", "held": "30.00", "available": "70.00"}


def test_the_database_refuses_held_money_that_is_not_the_sum_of_the_open_holds(engine, admin):
    ana = funded(admin)
    hold_id = hold(admin, ana, "30.00").get_json()["id"]

    with pytest.raises(DBAPIError, match="open holds add up"):
        _raw(engine, "UPDATE wallets SET held = 0 WHERE user_id = :u", u=ana)
    with pytest.raises(DBAPIError, match="open holds add up"):
        _raw(engine, "UPDATE holds SET status = 'voided', decided_at = now() WHERE id = :id", id=hold_id)
    assert balance(admin, ana)["held"] == "30.00"


def test_the_database_refuses_to_change_a_decided_hold(engine, admin):
    ana = funded(admin)
    hold_id = hold(admin, ana, "30.00").get_json()["id"]
    admin.post(f"/api/v1/wallet/holds/{hold_id}/void", None, key=None)

    with pytest.raises(DBAPIError, match="cannot change"):
        _raw(engine, "UPDATE holds SET status = 'held', decided_at = NULL WHERE id = :id", id=hold_id)
    with pytest.raises(DBAPIError, match="cannot change"):
        _raw(engine, "DELETE FROM holds WHERE id = :id", id=hold_id)


def test_hold_capture_void_and_freeze_answers_match_their_documented_schemas(admin):
    from tests.test_openapi_schemas import Documented

    doc = Documented(admin.get("/openapi.json").get_json())
    ana, bo = funded(admin), admin.user()["id"]
    held = doc.check("POST", "/api/v1/wallet/holds", hold(admin, ana, "10.00", reference="r-1"))
    second = doc.check("POST", "/api/v1/wallet/holds", hold(admin, ana, "5.00"))
    doc.check("POST", "/api/v1/wallet/holds/{hold_id}/capture",
              admin.post(f"/api/v1/wallet/holds/{held['id']}/capture", {"amount": "4.00", "to_user_id": bo}))
    doc.check("POST", "/api/v1/wallet/holds/{hold_id}/capture",
              admin.post(f"/api/v1/wallet/holds/{second['id']}/capture", {}))
    third = hold(admin, ana, "1.00").get_json()
    doc.check("POST", "/api/v1/wallet/holds/{hold_id}/void",
              admin.post(f"/api/v1/wallet/holds/{third['id']}/void", None, key=None))
    doc.check("GET", "/api/v1/wallet/holds/{hold_id}", admin.get(f"/api/v1/wallet/holds/{held['id']}"))
    for action in ("freeze", "unfreeze"):
        doc.check("POST", f"/api/v1/users/{{user_id}}/wallets/{{code}}/{action}",
                  admin.post(f"/api/v1/users/{ana}/wallets/SGD/{action}", {"reason": "check"}, key=None))
    assert len(doc.checked) == 6
