"""No double payment across files (issue 9, item 6), on the real PostgreSQL: a reference is
used once per funding account whatever the file, enforced by the database also when two
uploads race; a re-saved file (CRLF, BOM, quoting, spacing) is the same file; and a
deliberate second payout of the same rows needs `allow_duplicate_content=true`."""
from __future__ import annotations

import io
import threading

import pytest

from pipeline.bulk.content import RowsDigest
from pipeline.bulk.rows import Row
from pipeline.bulk.upload import upload
from pipeline.errors import IdempotencyKeyReused
from pipeline.users import create_api_key, find_api_key
from tests.test_bulk_pipeline import RecordingQueue, apply_all, balances, fund, query, seed_users

URL = "/api/v1/wallet/bulk-credit"


@pytest.fixture
def http(queued_http):
    return queued_http


def post_file(http, content: bytes, headers: dict | None = None, **fields: str):
    return http.post(URL, data={"file": (io.BytesIO(content), "credits.csv"), **fields}, headers=headers or {},
                     content_type="multipart/form-data")


def rows_of(http, activity_id: str) -> list[dict]:
    return http.get(f"{URL}/{activity_id}/rows").json["data"]


def add_funding_account(services, name: str) -> None:
    """A funding account is made by its first top-up."""
    fund(services, "SGD", 1_000_000, account=name)


# --- A reference is used once per funding account, across files ---------------------------------

def test_a_corrected_file_sent_again_is_invalid_row_by_row_pays_nothing_and_names_the_first_rows(
        services, http, queue, clean_database):
    a, b = seed_users(services, 2)
    first = post_file(http, f"uuid,amount,reference\n{a},10.00,inv-1\n{b},20.00,inv-2\n".encode())
    apply_all(services, services.settings, queue.take())
    paid = balances(clean_database)

    corrected = post_file(http, f"uuid,amount,reference\n{a},10.00,inv-1\n{b},25.00,inv-2\n".encode())
    apply_all(services, services.settings, queue.take())

    assert corrected.status_code == 202 and paid == {a: 1000, b: 2000}
    rows = rows_of(http, corrected.json["activity_id"])
    assert [(row["status"], row["error_code"]) for row in rows] == [("INVALID", "duplicate_reference")] * 2
    first_id = first.json["activity_id"]
    assert [row["error_message"] for row in rows] == [
        f"reference inv-1 was already used in activity {first_id} row 2",
        f"reference inv-2 was already used in activity {first_id} row 3"]
    assert balances(clean_database) == paid
    assert http.get(f"{URL}/{corrected.json['activity_id']}").json["status"] == "FAILED"


def test_only_the_reused_references_of_a_second_file_are_refused_and_the_rest_is_paid(
        services, http, queue, clean_database):
    a, b, c = seed_users(services, 3)
    first = post_file(http, f"uuid,amount,reference\n{a},1.00,r-1\n".encode())
    apply_all(services, services.settings, queue.take())

    second = post_file(http, f"uuid,amount,reference\n{b},2.00,r-2\n\n{c},3.00,r-1\n{c},4.00,r-2\n".encode())
    apply_all(services, services.settings, queue.take())

    rows = rows_of(http, second.json["activity_id"])
    assert [(row["row_number"], row["status"], row["error_message"]) for row in rows] == [
        (2, "SUCCESS", None),
        (4, "INVALID", f"reference r-1 was already used in activity {first.json['activity_id']} row 2"),
        (5, "INVALID", "reference r-2 is already used on row 2")]
    assert balances(clean_database) == {a: 100, b: 200}


def test_cancelled_or_failed_rows_still_hold_their_reference(services, http, queue, clean_database):
    [a] = seed_users(services, 1)
    first = post_file(http, f"uuid,amount,reference\n{a},1.00,r-1\n".encode())
    with clean_database.begin() as connection:  # as a cancel would leave it; nothing was paid
        connection.exec_driver_sql("UPDATE bulk_rows SET status = 'FAILED', error_code = 'x'")

    again = post_file(http, f"uuid,amount,reference\n{a},1.50,r-1\n".encode())

    [row] = rows_of(http, again.json["activity_id"])
    assert (row["status"], row["error_code"]) == ("INVALID", "duplicate_reference")
    assert first.json["activity_id"] in row["error_message"]


def test_a_reference_used_in_another_funding_account_is_fine_and_the_account_is_stored(
        services, http, queue, clean_database):
    a, b = seed_users(services, 2)
    add_funding_account(services, "marketing")
    post_file(http, f"uuid,amount,reference\n{a},1.00,r-1\n".encode())

    other = post_file(http, f"uuid,amount,reference\n{b},2.00,r-1\n".encode(), funding_account="marketing")
    again = post_file(http, f"uuid,amount,reference\n{a},3.00,r-1\n".encode(), funding_account="marketing")

    assert [row["status"] for row in rows_of(http, other.json["activity_id"])] == ["PENDING"]
    assert [row["error_code"] for row in rows_of(http, again.json["activity_id"])] == ["duplicate_reference"]
    assert query(clean_database, "SELECT funding_account FROM bulk_activities WHERE id = :id",
                 id=other.json["activity_id"]) == [("marketing",)]


@pytest.mark.parametrize("fields, field", [
    ({"funding_account": "nope"}, "funding_account"),
    ({"funding_account": "Not A Name!"}, "funding_account"),
    ({"funding_account": "x\x00"}, "funding_account"),
    ({"allow_duplicate_content": "maybe"}, "allow_duplicate_content"),
])
def test_an_unknown_funding_account_or_a_bad_flag_is_a_422_naming_the_field_and_stores_nothing(
        services, http, clean_database, fields, field):
    [a] = seed_users(services, 1)

    response = post_file(http, f"uuid,amount\n{a},1.00\n".encode(), **fields)

    assert (response.status_code, response.json["code"]) == (422, "validation_failed")
    assert response.mimetype == "application/problem+json"
    assert [error["field"] for error in response.json["errors"]] == [field]
    assert query(clean_database, "SELECT count(*) FROM bulk_activities") == [(0,)]


def test_two_uploads_at_once_with_the_same_references_leave_exactly_one_row_holding_each(
        services, clean_database, queue):
    users = seed_users(services, 2_000)
    references = [f"shared-{number}" for number in range(1_000)]
    # The same references for other users, in the opposite order: a claim in file order would deadlock.
    files = [
        "uuid,amount,reference\n" + "".join(f"{user},1.00,{ref}\n" for user, ref in zip(users[:1000], references)),
        "uuid,amount,reference\n" + "".join(f"{user},2.00,{ref}\n"
                                            for user, ref in zip(users[1000:], reversed(references))),
    ]
    start, results, errors = threading.Barrier(2), [], []

    def send(content: str):
        start.wait()
        try:
            results.append(upload(services.uow, queue, services.settings, io.BytesIO(content.encode())))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=send, args=(content,)) for content in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == [] and sorted(result.created for result in results) == [True, True]
    holding = query(clean_database, "SELECT reference, count(*) FILTER (WHERE status = 'PENDING'),"
                                     " count(*) FILTER (WHERE error_code = 'duplicate_reference')"
                                     " FROM bulk_rows GROUP BY reference")
    assert len(holding) == 1_000 and {(pending, duplicate) for _, pending, duplicate in holding} == {(1, 1)}
    assert query(clean_database, "SELECT count(*) FROM bulk_references") == [(1_000,)]


# --- The same rows are the same file, whatever their bytes ---------------------------------------

def variants(a: str, b: str) -> dict[str, bytes]:
    plain = f"uuid,amount\n{a},10.00\n{b},2.50\n"
    return {
        "crlf": plain.replace("\n", "\r\n").encode(),
        "bom": b"\xef\xbb\xbf" + plain.encode(),
        "quoting": f'"uuid","amount"\n"{a}","10.00"\n"{b}","2.50"\n'.encode(),
        "spacing": f"\n uuid , amount \n\n {a} ,  10.00\n{b},2.50 \n\n".encode(),
        "no final newline": plain.rstrip("\n").encode(),
        "amounts as a spreadsheet saves them": f"uuid,amount\n{a},10\n{b},2.5\n".encode(),
        "columns moved": f"amount,uuid\n10.00,{a}\n2.50,{b}\n".encode(),
        "upper-case ids and the default currency named": f"uuid,amount,currency\n{a.upper()},10.00,SGD\n"
                                                         f"{b.upper()},2.50,sgd\n".encode(),
    }


@pytest.mark.parametrize("variant", list(variants("a", "b")))
def test_a_resaved_variant_of_a_paid_file_returns_the_first_activity_and_pays_nothing(
        services, http, queue, clean_database, variant):
    a, b = seed_users(services, 2)
    first = post_file(http, f"uuid,amount\n{a},10.00\n{b},2.50\n".encode())
    apply_all(services, services.settings, queue.take())

    again = post_file(http, variants(a, b)[variant])
    apply_all(services, services.settings, queue.take())

    assert (again.status_code, again.json["activity_id"]) == (200, first.json["activity_id"])
    assert balances(clean_database) == {a: 1000, b: 250}
    assert query(clean_database, "SELECT count(*) FROM bulk_activities") == [(1,)]


def test_the_same_rows_in_another_order_or_with_another_amount_are_another_file(services, http, queue):
    a, b = seed_users(services, 2)
    first = post_file(http, f"uuid,amount\n{a},10.00\n{b},2.50\n".encode())

    reordered = post_file(http, f"uuid,amount\n{b},2.50\n{a},10.00\n".encode())
    changed = post_file(http, f"uuid,amount\n{a},10.00\n{b},2.51\n".encode())

    assert (first.status_code, reordered.status_code, changed.status_code) == (202, 202, 202)


def test_allow_duplicate_content_makes_a_new_activity_but_its_references_are_still_refused(
        services, http, queue, clean_database):
    a, b = seed_users(services, 2)
    plain = f"uuid,amount\n{a},1.00\n".encode()
    referenced = f"uuid,amount,reference\n{b},2.00,r-1\n".encode()
    first_plain, first_referenced = post_file(http, plain), post_file(http, referenced)
    apply_all(services, services.settings, queue.take())

    second_plain = post_file(http, plain, allow_duplicate_content="true")
    second_referenced = post_file(http, referenced.replace(b"\n", b"\r\n"), allow_duplicate_content="true")
    apply_all(services, services.settings, queue.take())
    third_plain = post_file(http, plain)

    assert (second_plain.status_code, second_referenced.status_code) == (202, 202)
    assert second_plain.json["activity_id"] != first_plain.json["activity_id"]
    assert [row["error_code"] for row in rows_of(http, second_referenced.json["activity_id"])] == [
        "duplicate_reference"]
    assert balances(clean_database) == {a: 200, b: 200}  # the deliberate second payout, and nothing else
    assert (third_plain.status_code, third_plain.json["activity_id"]) == (200, first_plain.json["activity_id"])
    assert first_referenced.status_code == 202


def test_an_idempotency_key_replays_a_resaved_file_and_refuses_other_rows_or_another_account(
        services, http, queue, clean_database):
    a, b = seed_users(services, 2)
    add_funding_account(services, "marketing")
    content = f"uuid,amount\n{a},1.00\n".encode()
    first = post_file(http, content, {"Idempotency-Key": "k-1"})

    replay = post_file(http, b"\xef\xbb\xbf" + content.replace(b"\n", b"\r\n"), {"Idempotency-Key": "k-1"})
    other_rows = post_file(http, f"uuid,amount\n{b},1.00\n".encode(), {"Idempotency-Key": "k-1"})
    other_account = post_file(http, content, {"Idempotency-Key": "k-1"}, funding_account="marketing")

    assert (replay.status_code, replay.json["activity_id"]) == (200, first.json["activity_id"])
    assert (other_rows.status_code, other_rows.json["code"]) == (422, "idempotency_key_reused")
    assert (other_account.status_code, other_account.json["code"]) == (422, "idempotency_key_reused")


def test_an_idempotency_key_replay_from_a_stream_that_cannot_seek_compares_the_rows(
        services, clean_database, queue):
    [a] = seed_users(services, 1)
    key = find_api_key(services.uow(), create_api_key(services.uow(), "operator")).id  # the audit event names it
    content = f"uuid,amount\n{a},1.00\n".encode()
    first = upload(services.uow, queue, services.settings, io.BytesIO(content), idempotency_key="k", api_key_id=key)

    replay = upload(services.uow, queue, services.settings, Unseekable(content.replace(b"\n", b"\r\n")),
                    idempotency_key="k", api_key_id=key)

    assert (replay.created, replay.activity.id) == (False, first.activity.id)
    with pytest.raises(IdempotencyKeyReused):
        upload(services.uow, queue, services.settings, Unseekable(content.replace(b"1.00", b"2.00")),
               idempotency_key="k", api_key_id=key)


class Unseekable(io.RawIOBase):
    def __init__(self, content: bytes):
        self.inner = io.BytesIO(content)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


# --- The rows hash, as a unit --------------------------------------------------------------------

def test_the_rows_hash_ignores_column_order_and_annotations_but_not_row_order_or_values():
    user = "3f1c2a9e-4b7d-4c1e-9a2b-5d6e7f809a1b"

    def digest(columns, *rows):
        hashed = RowsDigest(columns)
        for row in rows:
            hashed.add(row)
        return hashed.hexdigest()

    valid = Row(2, user, 100, "SGD", "r-1", None)
    other = Row(3, user, 200, "SGD", None, None)
    invalid = Row(4, None, None, None, None, ("x", " 1.00 ", "ref", "oops"), "invalid_user_id", "...")
    moved = Row(4, None, None, None, None, ("1.00", "ref", "x"), "invalid_user_id", "...")
    assert digest(("uuid", "amount", "reference", "error_code"), valid, invalid) == digest(
        ("amount", "reference", "uuid"), valid, moved)
    assert digest(("uuid", "amount"), valid, other) != digest(("uuid", "amount"), other, valid)
    assert digest(("uuid", "amount"), valid) != digest(("uuid", "amount"), Row(2, user, 100, "SGD", "r-2", None))
    assert digest(("uuid", "amount")) != digest(("uuid", "amount"), valid)


# --- Migration 0012 on a database with history -----------------------------------------------------

def migrate(engine, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from storage.migrate import MIGRATIONS_DIR
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)


def test_the_migration_backfills_references_earliest_use_first_and_keeps_old_files_findable(
        services, clean_database, queue):
    user = seed_users(services, 1)[0]
    old, later = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    migrate(clean_database, "downgrade", "0011")
    try:
        with clean_database.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO bulk_activities (id, status, content_sha256, created_at) VALUES"
                f" ('{old}', 'PROCESSING', 'old-bytes', now() - interval '2 days'),"
                f" ('{later}', 'PROCESSING', 'later-bytes', now() - interval '1 day')")
            connection.exec_driver_sql(
                "INSERT INTO bulk_rows (activity_id, row_number, user_id, amount_minor, currency, reference, status,"
                f" error_code) VALUES ('{later}', 2, '{user}', 100, 'SGD', 'r-1', 'PENDING', NULL),"
                f" ('{old}', 5, '{user}', 100, 'SGD', 'r-1', 'FAILED', 'x'),"
                f" ('{old}', 6, NULL, NULL, 'SGD', 'r-2', 'INVALID', 'invalid_amount')")
    finally:
        migrate(clean_database, "upgrade", "head")

    assert query(clean_database, "SELECT funding_account, reference, activity_id::text, row_number"
                                 " FROM bulk_references") == [("default", "r-1", old, 5)]
    assert query(clean_database, "SELECT file_sha256 FROM bulk_activities ORDER BY created_at") == [
        ("old-bytes",), ("later-bytes",)]
