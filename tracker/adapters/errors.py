"""How the service sorts failures: a message's fault, the database's state, or the API caller's wait.

The distinction decides whether a message is dead-lettered (its content cannot be stored) or kept
unacknowledged and retried (the database is down, read-only or refusing writes): confusing the two
either stalls ingest on one poison message or turns valid fixes into dead letters.
"""

from __future__ import annotations

import asyncpg


class StoreUnavailableError(RuntimeError):
    """The database did not take an API-originated fact in time; nothing was announced as stored."""


class CommandRejectedError(ValueError):
    """The database refused an API-originated fact for what it carries (e.g. text it cannot hold)."""


TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    # asyncpg's own protocol state: a session cut while idle (pg_terminate_backend) gets a FATAL that asyncpg has
    # no operation for, and the next BEGIN on it, before the end of the stream is read, fails "cannot switch to
    # state 15; another operation (2) is in progress" (tests/integration/test_cut_sessions.py). asyncpg then
    # closes the connection: never what a message carries, so a retry on a fresh connection, not a dead letter
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)


MESSAGE_SPECIFIC_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
"""Data exceptions, integrity violations, program limits: caused by what one message carries.

Every other database error (read-only transaction, missing privilege, disk full, a trigger refusing a
write, shutdown) says something about the database, not about the message: its messages are kept
unacknowledged and retried with back-off, never dead-lettered. A valid ping must not become a
``store_error`` because the database had a bad minute.
"""


class ChainContendedError(RuntimeError):
    """Another writer took the alert chain's next position: the database's state, never a message's fault."""


def message_specific(exc: BaseException) -> bool:
    """True when a failed write can be blamed on its content, so isolating the message is right."""
    if isinstance(exc, ChainContendedError):
        return False
    if isinstance(exc, asyncpg.exceptions._base.DataError):  # client-side: a value asyncpg cannot encode
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in MESSAGE_SPECIFIC_SQLSTATE_CLASSES
    if isinstance(exc, TRANSIENT_DB_ERRORS):
        return False
    # any other exception is a bug in our code that this content triggered: isolate it, keep ingest going
    return isinstance(exc, Exception)


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """Exception class and message, safe to store as PostgreSQL text (no NUL, no lone surrogates)."""
    text = f"{type(exc).__name__}: {exc}"[:limit]
    return text.replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")
