"""A database session cut while idle (``pg_terminate_backend``, as the read-only fault scenario does) is the
database's failure, never a message's, whatever asyncpg makes of it.

PostgreSQL sends the idle session a FATAL ErrorResponse and closes it. asyncpg, idle, has no operation to give
that error to: it marks the protocol "consuming an error" (state 2) and only learns a moment later, when the end
of the stream is read, that the connection is gone. A transaction begun on the connection in between fails in
asyncpg itself: ``InternalClientError: cannot switch to state 15; another operation (2) is in progress`` (15: the
simple query ``BEGIN``; MagicStack/asyncpg issue 784). Begun earlier or later, it fails as a lost connection.
The service must retry each of these on a fresh connection, not dead-letter the fix it was writing
(tracker/adapters/errors.py).
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from tests.conftest import StackInfo
from tracker.adapters.errors import TRANSIENT_DB_ERRORS, message_specific

ATTEMPTS = 30
"""Sessions cut until one meets the in-between state (about half do: it depends on when each read happens)."""


async def _begin_on_a_cut_session(killer: asyncpg.Connection, dsn: str) -> Exception | None:
    conn = await asyncpg.connect(dsn)
    try:
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        # the loop held a moment, so that the FATAL and the end of the stream both wait in the socket
        time.sleep(0.2)  # noqa: ASYNC251 (blocking on purpose)
        for _ in range(2):
            await asyncio.sleep(0)
        try:
            async with conn.transaction():
                await conn.fetchval("SELECT 1")
        except Exception as exc:
            assert conn.is_closed(), repr(exc)  # asyncpg gives the connection up: a pool hands out a fresh one
            return exc
        return None
    finally:
        conn.terminate()


async def test_a_transaction_begun_on_a_session_cut_while_idle_fails_as_the_databases_fault(stack: StackInfo) -> None:
    killer = await asyncpg.connect(stack.dsn)
    seen: list[str] = []
    try:
        for _ in range(ATTEMPTS):
            failure = await _begin_on_a_cut_session(killer, stack.dsn)
            assert failure is not None, "a transaction went through on a terminated session"
            seen.append(f"{type(failure).__name__}: {failure}"[:100])
            assert isinstance(failure, TRANSIENT_DB_ERRORS), repr(failure)
            assert not message_specific(failure), repr(failure)
            if isinstance(failure, asyncpg.InternalClientError):
                assert "another operation (2)" in str(failure)
                break
        else:
            raise AssertionError(f"no attempt met asyncpg's in-between state: {sorted(set(seen))}")
    finally:
        await killer.close()
