"""One use case, one PostgreSQL transaction.

Faults worth retrying (deadlock, serialization failure, lost connection) leave here as
`pipeline.errors.TransientFault`, so the use cases never see a driver's exception types.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from sqlalchemy import Engine

from pipeline.errors import TransientFault
from storage import driver
from storage.accounts import SqlApiKeys, SqlIdempotencyKeys, SqlUsers
from storage.audit import SqlAuditTrail
from storage.bulk import SqlBulkCredits
from storage.engine import LOCK_TIMEOUT_INFO_KEY
from storage.events import SqlEventOutbox
from storage.faults import is_transient
from storage.funding import SqlFunding
from storage.holds import SqlHolds
from storage.ledger import SqlLedger
from storage.lifecycle import SqlLifecycle
from storage.reconciliation import SqlReconciliations
from storage.search import SqlSearch
from storage.webhooks import SqlWebhooks

class SqlUnitOfWork:
    def __init__(self, engine: Engine, lock_timeout_ms: int = 5_000):
        self.engine = engine
        self.lock_timeout_ms = lock_timeout_ms

    def __enter__(self) -> "SqlUnitOfWork":
        self.connection = self.engine.connect()
        self.transaction = self.connection.begin()
        # A bound on every wait for a row lock or for a concurrent request with our key. Engines
        # from make_engine start every session with it; any other bound costs a statement.
        if self.connection.connection.info.get(LOCK_TIMEOUT_INFO_KEY) != int(self.lock_timeout_ms):
            self.connection.exec_driver_sql(f"SET LOCAL lock_timeout = {int(self.lock_timeout_ms)}")
        self.users = SqlUsers(self.connection)
        self.ledger = SqlLedger(self.connection)
        self.funding = SqlFunding(self.connection)
        self.at_commit: list[tuple[str, dict]] = []
        self.idempotency = SqlIdempotencyKeys(self.connection, self.at_commit)
        self.api_keys = SqlApiKeys(self.connection)
        self.bulk = SqlBulkCredits(self.connection)
        self.reconciliations = SqlReconciliations(self.connection)
        self.events = SqlEventOutbox(self.connection)
        self.audit = SqlAuditTrail(self.connection)
        self.search = SqlSearch(self.connection)
        self.webhooks = SqlWebhooks(self.connection)
        self.holds = SqlHolds(self.connection)
        self.lifecycle = SqlLifecycle(self.connection)
        return self

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: leaving it with an exception undoes only what it wrote.

        Leaving it normally keeps the savepoint until the commit, which releases it: a
        RELEASE would cost a round trip on every request for nothing.
        """
        driver.execute(self.connection, "SAVEPOINT use_case", {})
        try:
            yield
        except BaseException:
            if not self.connection.invalidated:  # a lost connection took the savepoint with it
                driver.execute(self.connection, "ROLLBACK TO SAVEPOINT use_case", {})
            raise

    def commit(self) -> None:
        """Commits; a statement left for the commit (the stored answer) goes in the same round trip."""
        assert len(self.at_commit) <= 1, "one statement at most travels with the COMMIT"
        if self.at_commit:
            driver.execute_then_commit(self.connection, *self.at_commit.pop())
        self.transaction.commit()
        self.audit.log_committed()

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if self.transaction.is_active:
                self.transaction.rollback()
        finally:
            self.connection.close()
        if error is not None and is_transient(error):
            raise TransientFault(str(error).splitlines()[0]) from error
