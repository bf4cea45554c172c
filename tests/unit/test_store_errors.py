"""Which failed writes are blamed on a message (isolated, dead-lettered) and which on the database (waited for)."""

from __future__ import annotations

import asyncpg

from tracker.adapters.errors import message_specific


def test_a_connection_in_a_broken_client_state_is_not_the_messages_fault() -> None:
    # asyncpg raises this for a connection whose backend was cut mid-transaction ("cannot switch to state 15;
    # another operation is in progress"): dead-lettering the message that happened to be written then would
    # turn a valid fix into a dead letter during a database outage
    assert not message_specific(
        asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
    )
    assert not message_specific(asyncpg.InterfaceError("the underlying connection is closed"))


def test_a_bug_in_our_code_on_one_message_is_still_isolated() -> None:
    assert message_specific(ZeroDivisionError("a decoder bug"))
