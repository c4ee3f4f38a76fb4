"""Finding users by email or external id and transactions by reference, activity, user, kind
and time, newest first and paged; bad filters are a 422 naming the field; the plans use
the indexes on a large table. Real PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pipeline.users import create_api_key
from tests.test_bulk_pipeline import apply_all, post_file, seed_users
from tests.test_http_contract import Api


@pytest.fixture
def admin(client, admin_token) -> Api:
    return Api(client, admin_token)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [item["id"] for item in response.get_json()["data"]]


def test_users_are_found_by_email_in_any_case_or_by_external_id(admin):
    ana = admin.user("Ana", "ana@example.com", external_id="crm-1")
    bo = admin.user("Bo", "bo@example.com")

    assert ids(admin.get("/api/v1/users")) == [bo["id"], ana["id"]]
    assert ids(admin.get("/api/v1/users?email=ANA@Example.com")) == [ana["id"]]
    assert ids(admin.get("/api/v1/users?external_id=crm-1")) == [ana["id"]]
    assert ids(admin.get("/api/v1/users?external_id=CRM-1")) == []
    first = admin.get("/api/v1/users?limit=1").get_json()
    assert ids(admin.get(f"/api/v1/users?limit=1&cursor={first['next_cursor']}")) == [ana["id"]]


def test_transactions_are_found_by_reference_user_kind_activity_and_time(services, admin, queued_http, queue):
    ana, bo = admin.user()["id"], admin.user()["id"]
    deposit = admin.post("/api/v1/wallet/deposit", {"user_id": ana, "amount": "50.00", "currency": "SGD",
                                                    "reference": "wire-7"}).get_json()
    transfer = admin.transfer(ana, bo, "5.00").get_json()
    users = seed_users(services, 2)
    activity_id = post_file(queued_http, f"uuid,amount\n{users[0]},1.00\n{users[1]},2.00\n".encode()).json["activity_id"]
    apply_all(services, services.settings, queue.take())

    assert ids(admin.get("/api/v1/transactions?reference=wire-7")) == [deposit["id"]]
    assert ids(admin.get(f"/api/v1/transactions?user_id={bo}")) == [transfer["id"]]
    assert ids(admin.get(f"/api/v1/transactions?user_id={ana}")) == [transfer["id"], deposit["id"]]
    assert ids(admin.get(f"/api/v1/transactions?user_id={ana}&kind=deposit")) == [deposit["id"]]
    credited = admin.get(f"/api/v1/transactions?activity_id={activity_id}").get_json()["data"]
    assert [(e["kind"], e["amount"], e["funding_account"]) for e in credited] == [
        ("bulk_credit", "3.00", "default"), ("reservation", "3.00", "default")]  # the credit named none before
    later = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert ids(admin.get(f"/api/v1/transactions?created_after={later}")) == []
    every = ids(admin.get("/api/v1/transactions?limit=100"))
    paged, cursor = [], None
    while True:
        page = admin.get("/api/v1/transactions?limit=2" + (f"&cursor={cursor}" if cursor else "")).get_json()
        paged += [item["id"] for item in page["data"]]
        if not (cursor := page["next_cursor"]):
            break
    assert paged == every and len(every) == len(set(every))


@pytest.mark.parametrize("query, field", [
    ("/api/v1/users?email=", "email"), ("/api/v1/users?external_id=" + "x" * 321, "external_id"),
    ("/api/v1/users?email=a%00b", "email"), ("/api/v1/transactions?activity_id=nope", "activity_id"),
    ("/api/v1/transactions?user_id=1", "user_id"), ("/api/v1/transactions?kind=DROP TABLE", "kind"),
    ("/api/v1/transactions?created_before=today", "created_before"), ("/api/v1/transactions?cursor=x", "cursor"),
    ("/api/v1/transactions?created_after=2026-11-30T10:00:00Z&created_before=2026-11-30T09:00:00Z", "created_before"),
    ("/api/v1/transactions?kind=nope", "kind"), ("/api/v1/transactions?created_after=9999-12-31T23:59:59-14:00",
                                                 "created_after"),
])
def test_a_bad_filter_is_a_422_naming_the_field(admin, query, field):
    response = admin.get(query)
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == field


def test_user_keys_may_not_search(admin, services):
    ana = admin.user()["id"]
    own = Api(admin.client, create_api_key(services.uow(), f"user:{ana}"))
    assert own.get("/api/v1/users").status_code == 403 and own.get("/api/v1/transactions").status_code == 403


ENTRIES = 100_000  #: enough for PostgreSQL to plan as for a large table; days of history: 200


def test_every_transaction_filter_uses_its_index_on_a_large_table(clean_database):
    with clean_database.connect() as connection:  # rolled back: entries without postings never commit
        connection.exec_driver_sql(f"""
            INSERT INTO journal_entries (id, kind, currency, amount, reference, activity_id, created_at)
            SELECT gen_random_uuid(), (ARRAY['deposit', 'transfer', 'withdrawal'])[1 + mod(g, 3)], 'SGD', 100,
                   CASE WHEN mod(g, 10) = 0 THEN 'ref-' || g END,
                   CASE WHEN mod(g, 100) = 0 THEN gen_random_uuid() END,
                   now() - make_interval(secs => ({ENTRIES} - g) * 172.8)
              FROM generate_series(1, {ENTRIES}) g""")
        connection.exec_driver_sql("ANALYZE journal_entries")
        plans = {}
        for name, where in [("reference", "reference = 'ref-500'"),
                            ("activity", "activity_id = gen_random_uuid()"),
                            ("old dates", "created_at < now() - interval '150 days'"
                                          " AND created_at >= now() - interval '151 days'"),
                            ("newest", "true")]:
            plans[name] = "\n".join(row[0] for row in connection.exec_driver_sql(
                f"EXPLAIN SELECT * FROM journal_entries WHERE {where} ORDER BY created_at DESC, id DESC LIMIT 21"))
        connection.rollback()
    assert "journal_entries_by_reference" in plans["reference"], plans["reference"]
    assert "journal_entries_by_activity" in plans["activity"], plans["activity"]
    assert "journal_entries_newest" in plans["old dates"], plans["old dates"]
    assert "journal_entries_newest" in plans["newest"], plans["newest"]
    assert not any("Seq Scan" in plan for plan in plans.values()), plans


def test_a_cursor_at_the_very_start_is_an_empty_page_not_a_500(admin):
    assert admin.get("/api/v1/users?cursor=dTA").json == {"data": [], "next_cursor": None}  # "u0"


def test_a_cursor_of_one_list_is_refused_by_another(admin, services):
    """Every list's cursor was "p<position>": one list's cursor paged another from a meaningless
    position (a users cursor read audit events below that id)."""
    for n in range(3):
        admin.post("/api/v1/users", {"name": f"U{n}", "email": f"u{n}@example.test"})
    users_cursor = admin.get("/api/v1/users?limit=1").json["next_cursor"]
    for path in ("/api/v1/wallet/bulk-credit", "/api/v1/audit-events", "/api/v1/reconciliations", "/api/v1/webhooks"):
        refused = admin.get(f"{path}?cursor={users_cursor}")
        assert refused.status_code == 422 and refused.json["errors"][0]["field"] == "cursor", path
    assert admin.get(f"/api/v1/users?limit=1&cursor={users_cursor}").status_code == 200


def test_an_external_id_or_reference_with_spaces_is_found_as_it_was_stored(admin):
    created = admin.post("/api/v1/users", {"name": "Pad", "email": "pad@example.test", "external_id": " crm-7 "})
    assert created.status_code == 201, created.get_json()
    assert ids(admin.get("/api/v1/users?external_id=%20crm-7%20")) == [created.get_json()["id"]]
    assert ids(admin.get("/api/v1/users?external_id=crm-7")) == []  # exactly, as documented
