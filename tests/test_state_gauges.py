"""The state gauges of /metrics, read from the real PostgreSQL when scraped: set up a pending
chunk, a due retry, a funding balance, a clean reconciliation, outbox rows and a scheduler
lease, and read them back; money credited per currency, counted by the real actor."""
from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry
from sqlalchemy import text

from pipeline import reconciliation
from pipeline.bulk import chunks
from storage.monitoring import make_state_engine
from telemetry.state import StateCollector
from tests.test_bulk_pipeline import fund, post_file, seed_users
from tests.test_logs import bulk_worker, stub_broker  # noqa: F401  (fixtures)
from tests.test_metrics import samples, value


def set_ages(engine, activity_id: str, pending_chunk_s: int, due_retry_s: int, clean_run_s: int) -> None:
    """Moves the clock of the state back: the activity's pending chunks became pending
    `pending_chunk_s` ago, its FAILED rows became due `due_retry_s` ago, and every clean
    reconciliation finished `clean_run_s` ago."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE bulk_chunks SET pending_since = now() - make_interval(secs => :s)"
                                " WHERE activity_id = :a AND state = 'PENDING'"), {"s": pending_chunk_s, "a": activity_id})
        connection.execute(text("UPDATE bulk_rows SET next_attempt_at = now() - make_interval(secs => :s)"
                                " WHERE status = 'FAILED' AND next_attempt_at IS NOT NULL"), {"s": due_retry_s})
        connection.execute(text("UPDATE reconciliations SET finished_at = now() - make_interval(secs => :s)"
                                " WHERE status = 'clean'"), {"s": clean_run_s})


def lease(engine, expires_in_s: int) -> None:
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO scheduler_lease (name, holder, epoch, expires_at) VALUES"
            " ('scheduler', 'test:1:abc', 1, now() + make_interval(secs => :s))"), {"s": expires_in_s})


def test_the_scrape_reads_pending_chunk_and_due_retry_ages_funding_balances_outbox_leader_and_reconciliation(
        services, settings, queued_http, queue):
    # Given an activity whose chunk credited one row and failed one (retry not yet due)
    users = seed_users(services, 2)
    faulty = dataclasses.replace(settings, bulk_credit_fail_user_ids=frozenset({users[1]}))
    post_file(queued_http, f"uuid,amount\n{users[0]},1.00\n{users[1]},2.00\n".encode())
    [applied] = [chunks.apply_chunk(services.uow, faulty, chunk_id) for chunk_id in queue.take()]
    assert (applied.credited, applied.failed) == (1, 1)
    # And a second activity whose chunk nobody applied, released 10 minutes ago
    waiting = post_file(queued_http, f"uuid,amount\n{users[0]},5.00\n".encode()).get_json()["activity_id"]
    assert len(queue.take()) == 1
    # And a funding account of its own, a clean reconciliation 5 minutes ago, a live scheduler lease
    fund(services, "JPY", 123_456, account="payroll")
    reconciliation.run(services.uow(), reconciliation.start(services.uow(), full=True))
    set_ages(services.engine, waiting, pending_chunk_s=600, due_retry_s=120, clean_run_s=300)
    lease(services.engine, expires_in_s=10)

    # When /metrics is scraped
    scraped = samples(queued_http)

    # Then it shows the state as the database holds it
    assert 600 <= value(scraped, "wallet_bulk_chunk_oldest_pending_age_seconds") < 660
    assert 120 <= value(scraped, "wallet_bulk_retry_oldest_due_age_seconds") < 180
    assert 300 <= value(scraped, "wallet_reconciliation_last_clean_age_seconds") < 360
    assert value(scraped, "wallet_funding_account_balance_minor_units", account="payroll", currency="JPY") == 123_456
    funding = queued_http.get("/api/v1/funding-accounts/default").get_json()["balances"]
    sgd = next(balance for balance in funding if balance["currency"] == "SGD")["balance"]
    assert value(scraped, "wallet_funding_account_balance_minor_units", account="default",
                 currency="SGD") == int(sgd.replace(".", ""))
    assert value(scraped, "wallet_event_outbox_rows") == 1  # the one credited row; nothing published it
    assert value(scraped, "wallet_scheduler_leader_present") == 1
    # (the first activity is PARTIALLY_COMPLETED, settled, with its retry ahead: not counted)
    assert value(scraped, "wallet_bulk_activities_open", status="UPLOADED") == 1
    assert value(scraped, "wallet_bulk_activities_open", status="PROCESSING") == 0
    assert value(scraped, "wallet_state_up") == 1


def test_with_nothing_pending_due_or_leading_the_gauges_read_zero_and_no_clean_run_means_no_age(
        services, client):
    lease(services.engine, expires_in_s=-1)  # a lease that expired: no leader

    scraped = samples(client)

    assert value(scraped, "wallet_bulk_chunk_oldest_pending_age_seconds") == 0
    assert value(scraped, "wallet_bulk_retry_oldest_due_age_seconds") == 0
    assert value(scraped, "wallet_event_outbox_rows") == 0
    assert value(scraped, "wallet_scheduler_leader_present") == 0
    assert value(scraped, "wallet_state_up") == 1
    assert not any(name == "wallet_reconciliation_last_clean_age_seconds" for name, _ in scraped)


def test_a_retry_restarts_the_age_of_its_chunk_from_the_moment_it_is_reopened(services, settings, queued_http, queue):
    # Given a chunk planned an hour ago whose one row failed
    users = seed_users(services, 1)
    faulty = dataclasses.replace(settings, bulk_credit_fail_user_ids=frozenset(users))
    activity_id = post_file(queued_http, f"uuid,amount\n{users[0]},1.00\n".encode()).get_json()["activity_id"]
    with services.engine.begin() as connection:
        connection.execute(text("UPDATE bulk_chunks SET created_at = now() - interval '1 hour',"
                                " pending_since = now() - interval '1 hour'"))
    chunks.apply_chunk(services.uow, faulty, queue.take()[0])
    assert value(samples(queued_http), "wallet_bulk_chunk_oldest_pending_age_seconds") == 0

    # When an operator retries it
    assert queued_http.post("/api/v1/wallet/bulk-credit/retry", json={"activity_id": activity_id}).status_code == 202

    # Then its chunk is pending again, for seconds, not for an hour
    assert 0 < value(samples(queued_http), "wallet_bulk_chunk_oldest_pending_age_seconds") < 60


def test_an_unreachable_database_leaves_the_state_gauges_out_and_says_so_without_failing_the_scrape(settings):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(make_state_engine(
        "postgresql+psycopg://wallet@127.0.0.1:9/wallet")))  # port 9 (discard): nothing listens

    names = {metric.name: [sample.value for sample in metric.samples] for metric in registry.collect()}

    assert names == {"wallet_state_up": [0.0]}


def test_money_credited_by_chunks_is_counted_per_currency_in_minor_units(services, http, bulk_worker):
    # Given a file with SGD and JPY rows and one row for a user whose credit fails
    rows = [("SGD", "1.25"), ("SGD", "2.00"), ("JPY", "500")]
    chunk_queue, run = bulk_worker
    http.application.extensions["wallet.chunk_queue"] = chunk_queue
    users = seed_users(services, len(rows) + 1)
    lines = [f"{user},{amount},{code}" for user, (code, amount) in zip(users, rows)] + [f"{users[-1]},9.00,SGD"]
    before = samples(http)

    # When its chunk is applied by the actor
    post_file(http, ("uuid,amount,currency\n" + "\n".join(lines) + "\n").encode())
    run(fail_user_ids={users[-1]})
    after = samples(http)

    # Then only the money that reached user wallets is counted, per currency, in minor units
    def credited(code):
        return value(after, "wallet_bulk_credited_minor_units_total", currency=code) - value(
            before, "wallet_bulk_credited_minor_units_total", currency=code)

    assert (credited("SGD"), credited("JPY"), credited("USD")) == (325, 500, 0)
