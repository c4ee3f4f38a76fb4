"""Which database errors are worth running a unit of work again for."""
from __future__ import annotations

import psycopg.errors
from sqlalchemy.exc import DBAPIError, OperationalError

_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def is_transient(error: BaseException) -> bool:
    """A deadlock, a serialization failure or a lost connection; not a statement timeout."""
    if isinstance(error, DBAPIError):
        return error.connection_invalidated or isinstance(error.orig, _TRANSIENT) or (
            isinstance(error, OperationalError) and not isinstance(error.orig, psycopg.errors.QueryCanceled)
        )
    return isinstance(error, _TRANSIENT)
