"""The write memo against the sign of a zero: the codec's output must never depend on the memo."""

from __future__ import annotations

import math

import msgspec

from tests.unit.test_state_codec import _windowed
from tracker.core import codec
from tracker.core.state import Entry


def test_the_write_memo_keeps_the_sign_of_a_zero_in_the_state_after_the_newest_entry() -> None:
    # the memo may reuse an entry's difference only when the state after it is the one it was diffed against; -0.0 ==
    # 0.0, so a current state that differs only by a zero's sign must not reuse a difference that would restore the
    # logged state with the new state's -0.0 instead of its own 0.0
    state = _windowed()
    assert state.integrity is not None
    entry = state.log[-1]
    assert isinstance(entry, Entry)  # (a fix: the window holds no pairing declaration)
    assert entry.before.integrity is not None
    intervals = (0.0, 1.0)
    before = msgspec.structs.replace(
        entry.before, integrity=msgspec.structs.replace(entry.before.integrity, intervals=intervals)
    )
    log = (*state.log[:-1], Entry(entry.ping, before, entry.alerts, entry.updates))
    first = msgspec.structs.replace(
        state, integrity=msgspec.structs.replace(state.integrity, intervals=intervals), log=log
    )
    second = msgspec.structs.replace(first, integrity=msgspec.structs.replace(state.integrity, intervals=(-0.0, 1.0)))
    assert second.log is first.log and second == first  # equal as numbers, not as stored bytes

    codec._MEMO.clear()
    cold = codec.encode(second)
    codec._MEMO.clear()
    codec.encode(first)  # the service's previous write of this device
    warm = codec.encode(second)

    restored = codec.decode(warm).log[-1].before.integrity
    assert restored is not None
    assert math.copysign(1.0, restored.intervals[0]) == 1.0, "the logged state came back with the later -0.0"
    assert warm == cold
