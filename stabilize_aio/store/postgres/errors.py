"""asyncpg's errors sorted at the boundary: what is retried in place, what is one op's data, what is lost."""

from __future__ import annotations

import logging

import anyio
import asyncpg
import tenacity

log = logging.getLogger("stabilize_aio.store")

# Errors after which the same work may succeed: the transaction lost a
# serialization race or a deadlock, or the connection went away.
_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    ConnectionError,
    TimeoutError,
)

#: What the driver raises (mapped to StoreError and its subclasses at the store's boundary).
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)

#: A duplicate row: a replayed or concurrent write (a ConcurrencyError).
UniqueViolation = asyncpg.UniqueViolationError

#: An error the server answered with (the connection is fine unless :func:`connection_gone` says otherwise).
ServerError = asyncpg.PostgresError

# SQLSTATE classes of errors about one op's data, not the database: 22 data exception
# (a NUL byte, a bad encoding, a value out of range), 54 program limit exceeded (an
# index row too big), 23 integrity violation (but a unique violation is a fence).
_DATA_CLASSES = ("22", "54", "23")

_UNIQUE_VIOLATION = "23505"


def connection_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection is unusable, whatever state the driver reports it in.

    A connection the server cut while the event loop was blocked may still look
    open: it read the server's FATAL before the EOF, and the next statement fails
    with ``InternalClientError`` ("cannot switch to state ...") or an
    ``InterfaceError`` ("another operation is in progress", "connection is
    closed"). Such a connection is dropped and the work runs on a new one. Client
    configuration errors (``ValueError``s, unsupported features) are not.
    """
    if isinstance(exc, ValueError | asyncpg.UnsupportedClientFeatureError | asyncpg.UnsupportedServerFeatureError):
        return False
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.AdminShutdownError
        | asyncpg.CrashShutdownError
        | asyncpg.CannotConnectNowError
        | asyncpg.InternalClientError
        | asyncpg.InterfaceError
        | OSError,
    )


def retryable(exc: BaseException) -> bool:
    """Errors after which the same work may succeed (on a new connection if this one is gone)."""
    return isinstance(exc, _TRANSIENT) or connection_gone(exc)


def refused_data(exc: BaseException) -> bool:
    """Whether the database refused the data of a statement (a DataError), not failed as a database."""
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state[:2] in _DATA_CLASSES and state != _UNIQUE_VIOLATION


def retrying(attempts: int) -> tenacity.AsyncRetrying:
    """Retry what :func:`retryable` accepts, ``attempts`` times in all, backing off from 50 ms to 1 s."""
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(retryable),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=0.05, max=1.0),
        sleep=anyio.sleep,
        before_sleep=_log_retry,
        reraise=True,
    )


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    log.warning("PostgreSQL call failed (%r); attempt %d, retrying", exc, state.attempt_number)
