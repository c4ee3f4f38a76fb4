"""Fixtures over the real PostgreSQL and Redis that `make test` starts.

A missing server fails the tests rather than skipping them: a green run must mean the
database and the queue were really exercised.
"""
from __future__ import annotations

import os

import pytest
import redis
from sqlalchemy import text

import bootstrap
from api import create_app
from pipeline.config import Settings
from pipeline.users import create_api_key
from storage.migrate import upgrade

TEST_DATABASE_URL = "postgresql+psycopg://wallet@127.0.0.1:54339/wallet_test"  # make test-services
TEST_REDIS_URL = "redis://127.0.0.1:63809/1"
# Code under test that reads the environment itself (the `actors` broker) must see the
# test servers too, when pytest runs without `make test`.
os.environ.setdefault("DATABASE_URL", TEST_DATABASE_URL)
os.environ.setdefault("REDIS_URL", TEST_REDIS_URL)


def pytest_addoption(parser):
    parser.addoption("--run-chaos", action="store_true", default=False,
                     help="run the chaos suite at full size (100,000 rows) instead of its short form")


def pytest_collection_modifyitems(config, items):
    """Without --run-chaos, the `chaos_full` tests are deselected (not skipped): make test
    runs their short forms as other tests."""
    if config.getoption("--run-chaos"):
        return
    deselected = [item for item in items if item.get_closest_marker("chaos_full")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("chaos_full")]


def test_environ(**overrides: str) -> dict[str, str]:
    """The environment for the app and for child processes (workers, concurrent clients)."""
    environ = dict(os.environ)
    environ.setdefault("DATABASE_URL", TEST_DATABASE_URL)
    environ.setdefault("REDIS_URL", TEST_REDIS_URL)
    environ.update(overrides)
    return environ


test_environ.__test__ = False  # a helper, not a test, whatever its name says


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_environ(test_environ())


@pytest.fixture(scope="session")
def services(settings):
    services = bootstrap.services(settings)
    upgrade(services.engine)
    yield services
    services.engine.dispose()


@pytest.fixture(scope="session")
def engine(services):
    return services.engine


def all_tables(engine) -> list[str]:
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )).scalars().all()


@pytest.fixture
def clean_database(engine):
    """Empties every table; the ledger's append-only triggers are bypassed for this only."""
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        connection.exec_driver_sql(f"TRUNCATE {', '.join(all_tables(engine))} RESTART IDENTITY CASCADE")
        connection.exec_driver_sql("INSERT INTO funding_accounts (name) VALUES ('default')")  # as migrated
    return engine


@pytest.fixture
def app(services, clean_database):
    app = create_app(services.settings)
    app.extensions["wallet"] = services
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin_token(services, clean_database) -> str:
    return create_api_key(services.uow(), "admin")


def assert_ledger_invariants(engine) -> None:
    """Postings sum to zero per entry and currency; every balance equals its postings."""
    with engine.connect() as connection:
        unbalanced = connection.execute(text(
            "SELECT journal_entry_id, currency, sum(amount) FROM postings"
            " GROUP BY journal_entry_id, currency HAVING sum(amount) <> 0"
        )).all()
        drifted = connection.execute(text(
            "SELECT w.id, w.balance, coalesce(sum(p.amount), 0) FROM wallets w"
            " LEFT JOIN postings p ON p.wallet_id = w.id GROUP BY w.id HAVING w.balance <> coalesce(sum(p.amount), 0)"
        )).all()
        negative = connection.execute(text(
            "SELECT id, balance FROM wallets WHERE user_id IS NOT NULL AND balance < 0"
        )).all()
    assert unbalanced == [], f"journal entries that do not sum to zero: {unbalanced}"
    assert drifted == [], f"wallets whose balance differs from their postings: {drifted}"
    assert negative == [], f"user wallets below zero: {negative}"


@pytest.fixture
def workers(tmp_path, settings):
    """Starts real `dramatiq` worker commands on demand and stops every one after the test."""
    from tests.processes import Worker

    redis.Redis.from_url(settings.redis_url).flushdb()  # no message left over from an earlier run
    started: list[Worker] = []

    def start(count: int = 2, **environ: str) -> list[Worker]:
        new = [Worker(tmp_path / f"worker-{len(started) + n}.log", **environ) for n in range(count)]
        started.extend(new)
        return [worker.wait_ready() for worker in new]

    yield start
    for worker in started:
        worker.stop()


class RecordingQueue:
    """A chunk queue that records what is sent; tests apply the chunks themselves."""

    def __init__(self):
        self.sent: list[int] = []

    def send(self, chunk_ids):
        self.sent.extend(chunk_ids)

    def take(self) -> list[int]:
        sent, self.sent = self.sent, []
        return sent


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def queued_http(app, admin_token, queue):
    """The app's test client, signed in as admin, sending chunk messages to `queue`."""
    app.extensions["wallet.chunk_queue"] = queue
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"
    return client


@pytest.fixture
def http(app, admin_token):
    """The app's test client, signed in as admin."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"
    return client
