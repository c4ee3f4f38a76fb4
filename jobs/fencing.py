"""The scheduler's jobs write only under the lease they were started under (fencing).

`FencedUnitOfWork` is the unit of work the jobs get: before anything else its transaction
checks, in SQL, that this instance's holder and epoch still own an unexpired lease, and keeps a
KEY SHARE lock on the lease row until it ends, so a standby cannot take the lease over while
the old leader's transaction can still commit (see `jobs/leadership.py`).
"""
from __future__ import annotations

from sqlalchemy import text

from jobs.leadership import FENCE, JOB_IDLE_IN_TRANSACTION_S, Lease, LeaseLost
from storage.unit_of_work import SqlUnitOfWork


class FencedUnitOfWork(SqlUnitOfWork):
    """A unit of work that raises LeaseLost on entry when `lease` is no longer this instance's."""

    def __init__(self, engine, lock_timeout_ms: int, lease: Lease):
        super().__init__(engine, lock_timeout_ms)
        self.lease = lease

    def __enter__(self) -> "FencedUnitOfWork":
        if not self.lease.held():  # no round trip when the local deadline has passed already
            raise LeaseLost(f"lease epoch {self.lease.epoch} is past its local deadline")
        super().__enter__()
        try:
            # A frozen leader's open transaction would keep the lease row locked: the server ends it.
            self.connection.exec_driver_sql(
                f"SET LOCAL idle_in_transaction_session_timeout = {int(JOB_IDLE_IN_TRANSACTION_S * 1000)}")
            held = self.connection.execute(text(FENCE), self.lease.fence_parameters()).first()
        except BaseException as error:
            self.__exit__(type(error), error, error.__traceback__)
            raise
        if held is None:
            self.__exit__(None, None, None)
            self.lease.deadline.revoke()
            raise LeaseLost(f"lease epoch {self.lease.epoch} belongs to another instance")
        return self


class FencedServices:
    """`services` for one term of leadership: the same settings, engine and Redis, and a `uow()`
    that gives fenced units of work."""

    def __init__(self, services, lease: Lease):
        self._services = services
        self.lease = lease

    def __getattr__(self, name: str):
        return getattr(self._services, name)

    def uow(self) -> FencedUnitOfWork:
        return FencedUnitOfWork(self._services.engine, self._services.settings.lock_timeout_ms, self.lease)
