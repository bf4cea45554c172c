"""The stored per-device state: one codec, exact round trips, and restarts that change no verdict.

The property tests drive trucks and a container of the real Santos fence set (standing, wandering,
meeting, falling silent, paired and cleared by customs) through an engine, and at arbitrary points
stop it, encode every device's state with ``tracker.core.codec``, decode it into a fresh engine and go
on: the events must be exactly those of the uninterrupted run. Rows the store wrote as JSON before the
codec must decode to the very state the typed core keeps.
"""

from __future__ import annotations

import json
import math
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench.detection import replay
from tests.unit.detector_helpers import OPEN, RESTRICTED, SANTOS, TERMINAL, offset
from tracker.core import codec
from tracker.core.codec_dict import DICTIONARIES
from tracker.core.dark import DarkParams
from tracker.core.engine import Engine
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Inspection, InspectionResult, Ping, Severity
from tracker.core.params import DetectorParams
from tracker.core.pipeline import Pipeline
from tracker.core.state import Declared, DeviceState, Entry
from tracker.sim.scenario import SimConfig, generate

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
CONTAINER_NO = "MSCU1234565"
PLACES = {"open": OPEN, "terminal": TERMINAL, "restricted": RESTRICTED}
DEVICES = {"TRK-1": DeviceKind.TRUCK, "TRK-2": DeviceKind.TRUCK, "BOX-1": DeviceKind.CONTAINER}
LEGACY = Path(__file__).parent / "data" / "legacy_states.json"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


moves = st.tuples(
    st.sampled_from(sorted(DEVICES)),
    st.floats(1.0, 400.0),  # seconds since the previous event
    st.sampled_from(sorted(PLACES)),
    st.floats(-40.0, 40.0),  # metres from the place
    st.floats(-40.0, 40.0),
    st.one_of(st.none(), st.floats(0.0, 15.0)),  # reported speed
    st.sampled_from(["fix", "fix", "fix", "pair", "clear", "door", "late"]),
)


def _fixes(log: tuple[Entry | Declared, ...]) -> list[Entry]:
    """A window known to hold fixes only (no pairing declaration), as its fixes' entries."""
    assert all(isinstance(e, Entry) for e in log)
    return [e for e in log if isinstance(e, Entry)]


def _engine() -> Engine:
    return Engine(Pipeline(SANTOS), kinds=DEVICES, containers={CONTAINER_NO: ["BOX-1"]})


def _feed(engine: Engine, step: tuple[Any, ...], t: float) -> None:
    dev, _gap, place, east, north, speed, what = step
    lon, lat = offset(PLACES[place], east, north)
    if what == "pair":
        engine.pair("BOX-1", dev if dev != "BOX-1" else None, at(t))
    elif what == "clear":
        engine.run([Inspection(CONTAINER_NO, InspectionResult.CLEARED, at(t), inspection_id=f"i{t}")])
    else:
        last = engine.states[dev].last if dev in engine.states else None
        # a straggler: older than the device's newest fix, inside the 30 s reorder window
        ts = last.ts - timedelta(seconds=5) if what == "late" and last is not None else at(t)
        events = ("door_open",) if what == "door" else ()
        engine.run([Ping(dev, ts, lon, lat, speed=speed, events=events, received=at(t))])


def _restarted(engine: Engine) -> Engine:
    """A new engine holding only what the store keeps: every state through the codec (and the driver's clock)."""
    fresh = _engine()
    fresh.restore(codec.decode(codec.encode(s)) for s in engine.states.values())
    fresh.clock, fresh._next_tick = engine.clock, engine._next_tick
    fresh.emitted = list(engine.emitted)
    return fresh


def _events(engine: Engine) -> list[Any]:
    return [(e.at, e.event) for e in engine.emitted]


_STOOD = ("restricted", 0.0, 0.0)
_LIED = [
    # a box and a truck standing together in a vacant lot, the box's second fix at a speed its position denies,
    # then a far fix integrity rejects; the restart comes before that second fix (the world view's speed of a
    # device once came only from the live fix, so a restarted engine judged the meeting on another speed)
    *[("BOX-1", 1.0, "open", 0.0, 0.0, None, "fix")] * 4,
    ("TRK-1", 1.0, *_STOOD, None, "fix"),
    ("TRK-1", 76.0, *_STOOD, None, "fix"),
    ("BOX-1", 1.0, *_STOOD, None, "fix"),
    ("BOX-1", 20.0, *_STOOD, 3.0, "fix"),
    ("BOX-1", 1.0, "open", 0.0, 0.0, None, "fix"),
]


@settings(max_examples=80, deadline=None)
@given(st.lists(moves, min_size=2, max_size=40), st.sets(st.integers(0, 39), max_size=4))
@example(_LIED, {7})
@example(_LIED, {8})
def test_a_replay_interrupted_by_a_restart_anywhere_raises_the_same_events(
    plan: list[tuple[Any, ...]], cuts: set[int]
) -> None:
    whole, parts = _engine(), _engine()
    t = 0.0
    for i, step in enumerate(plan):
        t += step[1]
        if i in cuts:
            parts = _restarted(parts)
        _feed(whole, step, t)
        _feed(parts, step, t)
        for state in (*parts.states.values(), *whole.states.values()):
            data = codec.encode(state)
            again = codec.decode(data)
            assert again == state
            # equal is not enough: 0 == 0.0 and True == 1 encode apart, and the store compares bytes
            assert codec.encode(again) == data
    whole.run([], until=at(t + 3600))
    parts.run([], until=at(t + 3600))
    assert _events(parts) == _events(whole)
    assert {d: codec.encode(s) for d, s in parts.states.items()} == {
        d: codec.encode(s) for d, s in whole.states.items()
    }


def test_rows_written_as_json_before_the_codec_decode_to_the_typed_state() -> None:
    """``legacy_states.json``: ``DeviceState.to_json()`` of every device after this very replay, as the store
    wrote it before migration 004 (recorded with that version of the core)."""
    scenario = generate(SimConfig(port="santos", trucks=12, hours=1.0, anomaly_share=0.5, seed=3))
    # the rules added after those rows that change what this replay learns (a truck slowing to a halt counts as
    # parked for going dark; a box crawling beside a restricted lot does not) are switched off, so the comparison
    # is about decoding, not about newer behaviour
    same_rules = DetectorParams(signal_lost=DarkParams(stopping_speed_ms=0.0, halt_clear_m=0.0))
    engine = replay(scenario, pipeline=Pipeline(SANTOS, detector_params=same_rules))
    old = json.loads(LEGACY.read_text())
    assert set(old) == set(engine.states)
    kept = {name for data in old.values() for name, value in data["detectors"].items() if value}
    assert kept >= {"integrity", "motion", "signal_lost", "unexpected_stop", "post_inspection_access", "pairing"}
    for device_id, state in engine.states.items():
        # the reorder window and the slots added after those rows (dwell visits, trips, a stop's standing start, a
        # rolling fix kept in case it seeds a stop, the access window's standing start and rolling fixes, the last
        # fix's speed) start empty after the upgrade
        stop = state.unexpected_stop
        stop = None if stop is None or stop.rolling else msgspec.structs.replace(stop, standing_from=None)
        access = state.post_inspection_access
        if access is not None:
            access = msgspec.structs.replace(access, stop_standing_from=None, rolled_at=None, stood_at=None)
        upgraded = msgspec.structs.replace(
            state,
            log=(),
            dwell=None,
            trips=None,
            unexpected_stop=stop,
            post_inspection_access=access,
            last_speed=None,
        )
        assert DeviceState.from_json(device_id, old[device_id]) == upgraded, device_id


def test_the_reorder_window_is_stored_with_the_state_and_a_restart_replays_a_late_fix() -> None:
    fixes = [Ping("TRK-1", at(s), *offset(OPEN, s * 3.0, 0.0), received=at(s)) for s in (0, 10, 20, 30)]
    late = Ping("TRK-1", at(25), *offset(OPEN, 75.0, 0.0), received=at(31))
    first = _engine()
    first.run(fixes)
    state = first.states["TRK-1"]
    assert [e.ping.ts for e in _fixes(state.log)] == [at(0), at(10), at(20), at(30)]
    again = codec.decode(codec.encode(state))
    assert again == state and [e.before for e in again.log] == [e.before for e in state.log]
    after = _restarted(first)
    after.run([late])
    assert after.flags == {"reordered": 1}  # replayed in its place, not flagged late
    assert after.states["TRK-1"].last == state.last


def test_the_codec_refuses_bytes_that_are_no_state() -> None:
    with pytest.raises(msgspec.DecodeError):
        codec.decode(b"\x93\x01\x02")
    with pytest.raises(msgspec.DecodeError):
        codec.decode(b"not msgpack at all")
    with pytest.raises(msgspec.DecodeError):
        codec.decode(b"\x78\x9c broken deflate")
    with pytest.raises(msgspec.DecodeError):
        codec.decode(zlib.compress(b"\x93\x01\x02"))
    with pytest.raises(msgspec.DecodeError):
        codec.decode(b"\x28\xb5\x2f\xfd broken zstd")
    good = codec.encode(_windowed())
    with pytest.raises(msgspec.DecodeError):
        codec.decode(good[: len(good) // 2])
    # a frame on a dictionary this version does not hold (one trained later, say) is refused, not misread
    newest = DICTIONARIES[-1]
    other = zstandard.ZstdCompressionDict(newest[:4] + (12345).to_bytes(4, "little") + newest[8:])
    with pytest.raises(msgspec.DecodeError):
        codec.decode(zstandard.ZstdCompressor(dict_data=other).compress(b"\x91\xa1x"))
    # a bomb planted in the table: a few hundred bytes declaring 64 MiB, or no size at all, is refused unread
    bomb = zstandard.ZstdCompressor().compress(bytes(64 << 20))
    assert len(bomb) < 10_000
    with pytest.raises(msgspec.DecodeError, match="declaring"):
        codec.decode(bomb)
    with pytest.raises(msgspec.DecodeError):
        codec.decode(zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64 << 20)))
    with pytest.raises(msgspec.DecodeError, match="inflating"):
        codec.decode(zlib.compress(bytes(64 << 20)))


def _windowed() -> DeviceState:
    """A truck that drove four fixes through the open yard, a terminal and a restricted area (alerts in its log)."""
    engine = _engine()
    route = [(OPEN, 0.0), (OPEN, 30.0), (TERMINAL, 0.0), (RESTRICTED, 0.0), (RESTRICTED, 5.0)]
    engine.run(
        [
            Ping("TRK-1", at(7 * i), *offset(place, east, 0.0), speed=3.0, received=at(7 * i))
            for i, (place, east) in enumerate(route)
        ]
    )
    return engine.states["TRK-1"]


def test_a_state_with_its_reorder_window_fits_in_a_kibibyte_and_round_trips_exactly() -> None:
    state = _windowed()
    assert len(state.log) >= 4 and any(e.alerts for e in _fixes(state.log))
    data = codec.encode(state)
    again = codec.decode(data)
    assert again == state and [e.before for e in again.log] == [e.before for e in state.log]
    assert [e.ping for e in _fixes(again.log)] == [e.ping for e in _fixes(state.log)]
    assert [e.events for e in _fixes(again.log)] == [e.events for e in _fixes(state.log)]
    assert len(data) <= 1024, len(data)


def test_rows_of_the_layout_before_the_compact_window_decode_without_their_window() -> None:
    """Rows written before the window was stored compactly (plain msgpack: the state, then its log) still
    decode: the state as it was, the window empty (a straggler right after the upgrade is flagged late)."""
    state = _windowed()
    bare = msgspec.structs.replace(state, log=())
    old = msgspec.msgpack.Encoder(order="deterministic").encode((bare, [["a logged fix", 1, 2]]))
    assert old[:1] != b"\x78"
    assert codec.decode(old) == bare
    assert codec.decode(msgspec.msgpack.encode((bare,))) == bare


def test_rows_of_the_deflated_layout_decode_exactly_window_included() -> None:
    """Rows written before zstd: the very msgpack ``codec.pack`` gives, deflated at level 1 (byte for byte what
    that version's ``encode`` wrote). They decode to the whole state, reorder window included."""
    state = _windowed()
    old = zlib.compress(codec.pack(state), 1)
    assert old[:1] == b"\x78"
    again = codec.decode(old)
    assert again == state and [e.before for e in again.log] == [e.before for e in state.log]
    assert [e.events for e in _fixes(again.log)] == [e.events for e in _fixes(state.log)]


def test_rows_are_zstd_frames_on_the_newest_dictionary() -> None:
    """The row names its dictionary, so a retrained one can be appended while older rows stay readable."""
    data = codec.encode(_windowed())
    assert data[:4] == b"\x28\xb5\x2f\xfd"
    newest = zstandard.ZstdCompressionDict(DICTIONARIES[-1], dict_type=zstandard.DICT_TYPE_FULLDICT)
    assert zstandard.get_frame_parameters(data).dict_id == newest.dict_id() != 0
    # the dictionary earns its keep: the same msgpack without it is larger
    assert len(data) < len(zstandard.ZstdCompressor(level=3, write_checksum=False).compress(codec.pack(_windowed())))


def test_a_logged_alert_of_another_device_keeps_its_device() -> None:
    """A fix can raise an alert for its meeting's partner as well as its own; the log keeps whose it is."""
    state = _windowed()
    entry = _fixes(state.log)[-1]
    theirs = Alert("rendezvous", Severity.HIGH, "TRK-2", entry.ping.ts, "", "santos", None, {}, "TRK-1+TRK-2@x")
    mine = Alert("rendezvous", Severity.HIGH, "TRK-1", entry.ping.ts, "", "santos", None, {}, "TRK-1+TRK-2@x")
    logged = Entry.of(entry.ping, entry.before, (mine, theirs, AlertUpdate(theirs, at(99), {}, closes=True)))
    state = msgspec.structs.replace(state, log=(*state.log[:-1], logged))
    again = codec.decode(codec.encode(state))
    assert again == state
    assert [a.device_id for a in _fixes(again.log)[-1].alerts] == ["TRK-1", "TRK-2"]
    assert _fixes(again.log)[-1].updates[0].alert.device_id == "TRK-2"


def test_the_write_memo_never_changes_the_bytes() -> None:
    """Writing a device's state once per batch reuses the written form of the window entries that did not
    change; after every fix (a moving truck, then one straggler that rewinds its window) the bytes must equal a
    cold encoding's and decode to the state."""
    base = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    engine = Engine(Pipeline(SANTOS), tick_every_s=5.0)
    times = [*range(0, 90, 2), 59]  # the last one is 29 s older than the newest: inside the window, a replay
    hits = 0
    for s in times:
        engine.feed(Ping("TRK-1", base + timedelta(seconds=s), *offset(RESTRICTED, s * 4.0, 0.0), speed=4.0))
        state = engine.states["TRK-1"]
        before = dict(codec._MEMO.get("TRK-1", {}))
        warm = codec.encode(state)
        hits += sum(1 for e in state.log if id(e) in before)
        codec._MEMO.clear()
        assert codec.encode(state) == warm
        assert codec.decode(warm) == state
        codec.encode(state)  # leave the memo as a write of this state leaves it
    assert hits > len(times)  # the memo was in use, not only rebuilt


def test_the_reorder_window_keeps_the_sign_of_a_zero() -> None:
    """-0.0 == 0.0, but the restored state must be the very state: a logged state whose only differences from the
    next one are the signs of zeros (a float field, a float in a list) keeps them."""
    state = _windowed()
    entry = _fixes(state.log)[-1]
    assert state.last is not None and state.integrity is not None
    last = state.last
    after = msgspec.structs.replace(
        state,
        last=msgspec.structs.replace(last, lon=0.0),
        integrity=msgspec.structs.replace(state.integrity, intervals=(0.0, 1.0)),
    )
    before = msgspec.structs.replace(
        entry.before,
        last=msgspec.structs.replace(last, lon=-0.0),
        integrity=msgspec.structs.replace(state.integrity, intervals=(-0.0, 1.0)),
    )
    logged = Entry(entry.ping, before, entry.alerts, entry.updates)
    after = msgspec.structs.replace(after, log=(*state.log[:-1], logged))
    codec._MEMO.clear()
    again = codec.decode(codec.encode(after))
    assert again.last is not None and math.copysign(1.0, again.last.lon) == 1.0
    restored = again.log[-1].before
    assert restored.last is not None and math.copysign(1.0, restored.last.lon) == -1.0
    assert restored.integrity is not None and math.copysign(1.0, restored.integrity.intervals[0]) == -1.0


def test_a_sliding_window_in_the_log_is_stored_as_its_slide_and_restored_exactly() -> None:
    """A detector's list of recent values that dropped its oldest item and gained a newest is stored as that
    item and a length (``_diff``'s ``[i]`` form), and comes back as it was, type and zero signs included."""
    state = _windowed()
    entry = _fixes(state.log)[-1]
    assert state.integrity is not None
    for before_items, after_items, slid in (
        ((5.0, 1.0, 2.0, 3.0), (1.0, 2.0, 3.0, 4.0), True),
        ((5.0, 6.0, 1.0, 2.0), (1.0, 2.0, 3.0, 4.0), True),
        ((1.0, 2.0, 3.0), (1.0, 2.0, 3.0, 4.0), True),  # grew by one
        ((9.0, -0.0, 2.0), (0.0, 2.0, 7.0), False),  # equal items but a zero's sign: stored whole
    ):
        after = msgspec.structs.replace(
            state, integrity=msgspec.structs.replace(state.integrity, intervals=after_items)
        )
        assert after.integrity is not None
        before = msgspec.structs.replace(
            entry.before, integrity=msgspec.structs.replace(after.integrity, intervals=before_items)
        )
        diff = codec._diff(msgspec.structs.replace(before, log=()), msgspec.structs.replace(after, log=()))
        assert any(type(k) is list for k in _keys(diff)) is slid, diff
        logged = Entry(entry.ping, before, entry.alerts, entry.updates)
        whole = msgspec.structs.replace(after, log=(*state.log[:-1], logged))
        codec._MEMO.clear()
        again = codec.decode(codec.encode(whole))
        restored = again.log[-1].before.integrity
        assert again == whole and restored is not None
        assert type(restored.intervals) is tuple
        assert [math.copysign(1.0, x) for x in restored.intervals] == [math.copysign(1.0, x) for x in before_items]


def _keys(diff: list[Any]) -> list[Any]:
    out: list[Any] = []
    for k, v in zip(diff[::2], diff[1::2], strict=True):
        out.append(k)
        if type(k) is int and k < 0:
            out += _keys(v)
    return out


def test_threads_encoding_at_once_write_the_bytes_one_thread_writes() -> None:
    """The service encodes in a worker thread while the event loop may encode a retried batch: each caller takes
    a compression context of its own, so concurrent rows come out as a lone caller's."""
    from concurrent.futures import ThreadPoolExecutor

    states = [*replay(generate(SimConfig(port="santos", trucks=8, hours=0.5, seed=5))).states.values()]
    assert len(states) >= 8 and any(s.log for s in states)
    alone = [codec.encode(s) for s in states]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            assert list(pool.map(codec.encode, states)) == alone
            assert [codec.decode(b) for b in pool.map(codec.encode, states)] == states
