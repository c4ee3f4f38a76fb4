"""What a bulk-credit chunk costs the database, in buffers rather than time
(bench/README.md, "Where a bulk-credit chunk's time goes"): counts that do not move with the
machine's load. Real PostgreSQL; chunks applied in this process."""
from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy import text

from pipeline.bulk.status import FAILURE_MESSAGES, USER_CLOSED, WALLET_FROZEN
from pipeline.bulk.upload import upload
from storage.bulk import apply
from tests.test_bulk_pipeline import apply_all, csv_of, seed_users

ROWS = 400


@pytest.fixture
def one_chunk(settings):
    return dataclasses.replace(settings, bulk_credit_chunk_rows=ROWS, retry_base_delay_s=0.0)


def uploaded_chunk(services, settings, queue) -> tuple[str, int]:
    users = seed_users(services, ROWS)
    activity_id = upload(services.uow, queue, settings, csv_of([f"{user},1.00" for user in users])).activity.id
    [chunk_id] = queue.take()
    return activity_id, chunk_id


def test_a_chunk_finds_frozen_wallets_and_closed_users_without_reading_each_rows_user_and_wallet(
        services, clean_database, one_chunk, queue):
    activity_id, chunk_id = uploaded_chunk(services, one_chunk, queue)
    with clean_database.connect() as connection:
        # Statistics as autovacuum keeps them: stale ones (left by earlier tests' truncated
        # tables) made PostgreSQL probe each row's user by primary key (819 reads).
        connection.exec_driver_sql("ANALYZE users, wallets, bulk_rows")
        first, last, number = connection.execute(text(
            "SELECT first_row_id, last_row_id, number FROM bulk_chunks WHERE id = :id"), {"id": chunk_id}).one()
        [plan] = connection.execute(text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + apply._FAIL_INACTIVE.text), {
            "first_row_id": first, "last_row_id": last, "activity_id": activity_id, "number": number,
            "closed_code": USER_CLOSED, "closed_message": FAILURE_MESSAGES[USER_CLOSED],
            "frozen_code": WALLET_FROZEN, "frozen_message": FAILURE_MESSAGES[WALLET_FROZEN]}).one()
        connection.rollback()
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    reads = top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    # The chunk's own rows are read (a few dozen pages); a lookup of each row's user and
    # wallet, as before, was about 12 reads a row: 4,800 here.
    assert reads < ROWS / 4, f"{reads} buffer reads for {ROWS} rows"


def test_a_chunk_updates_its_wallets_balances_in_place_on_their_own_pages(services, clean_database, one_chunk, queue):
    """A wallet's new version on its own page is a HOT update (no balance column is indexed):
    no new entry in the wallets' indexes. At 85% fill about 1 wallet in 5 found room there."""
    users = seed_users(services, ROWS)
    with clean_database.begin() as connection:
        connection.execute(text("INSERT INTO wallets (user_id, currency)"
                                " SELECT id, 'SGD' FROM unnest(CAST(:users AS uuid[])) id ORDER BY id"), {"users": users})
    activity_id = upload(services.uow, queue, one_chunk, csv_of([f"{user},1.00" for user in sorted(users)])).activity.id
    pages = "SELECT user_id::text, (ctid::text::point)[0] FROM wallets WHERE user_id IS NOT NULL"
    with clean_database.connect() as connection:
        before = dict(connection.execute(text(pages)).all())

    apply_all(services, one_chunk, queue.take())

    with clean_database.connect() as connection:
        after = dict(connection.execute(text(pages)).all())
        credited = connection.execute(text("SELECT count(*) FROM bulk_rows WHERE activity_id = :a AND status = 'SUCCESS'"),
                                      {"a": activity_id}).scalar_one()
    assert credited == ROWS
    stayed = sum(after[user] == page for user, page in before.items())
    assert stayed == ROWS, f"{stayed} of {ROWS} wallets' new versions on their own page"
