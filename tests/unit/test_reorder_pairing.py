"""A pairing declaration survives a late fix: the reorder window replays it at its place.

Declarations used to be applied to the container's state alone, between batches. A late fix older than a
fix already in the window rewound the container to the state before that fix, from before the declaration,
and the replay went on without it (detection benchmark, Santos seed 1: EVRU8569656 unpaired from TRK-0104,
a fix 16 s late two seconds after, and an hour later a false "container is 4110 m from its declared truck").
Under the insider threat model a late, or deliberately delayed, fix must neither undo a declaration nor bring
back the one it replaced.
"""

from __future__ import annotations

from datetime import timedelta

from tests.unit.detector_helpers import OPEN, SANTOS, at, offset
from tracker.core import codec
from tracker.core.engine import Engine
from tracker.core.model import Alert, DeviceKind, Ping
from tracker.core.pairing import SEPARATED, PairingDetector
from tracker.core.pipeline import Pipeline
from tracker.core.reorder import REORDERED, Reorderer
from tracker.core.state import Declared, DeviceState, Entry

BOX, TRK = "BOX-1", "TRK-1"
KINDS = {BOX: DeviceKind.CONTAINER, TRK: DeviceKind.TRUCK}


def _engine() -> Engine:
    return Engine(Pipeline(SANTOS), kinds=KINDS)


def _fix(dev: str, t: float, east: float, received: float | None = None) -> Ping:
    lon, lat = offset(OPEN, east, 0.0)
    return Ping(dev, at(t), lon, lat, received=at(t + 0.5 if received is None else received))


def _run(*, declare: str | None, paired_from_start: bool, late: bool, restart: bool = False) -> Engine:
    """Truck and box standing together; at 145 s a declaration (``declare``: the truck, or ``None`` to end the
    pair); with ``late``, a box fix taken at 135 s arrives at 146 s, older than the box's fix of 140 s already in
    the window; then the truck drives off east at 10 m/s and the box stays. ``restart``: every state goes through
    the codec between the declaration and the late fix (another process taking over)."""
    engine = _engine()
    if paired_from_start:
        engine.pair(BOX, TRK, at(0))
    for t in range(0, 141, 10):
        engine.feed(_fix(TRK, t, 0.0))
        engine.feed(_fix(BOX, t + 1, 5.0) if t < 140 else _fix(BOX, t, 5.0))
    engine.run([], until=at(145))
    engine.pair(BOX, declare, at(145))
    if restart:
        fresh = _engine()
        fresh.restore(codec.decode(codec.encode(s)) for s in engine.states.values())
        fresh.clock, fresh._next_tick = engine.clock, engine._next_tick
        fresh.emitted = list(engine.emitted)
        engine = fresh
    if late:
        engine.feed(_fix(BOX, 135, 5.0, received=146))
    for t in range(150, 451, 10):
        engine.feed(_fix(TRK, t, 10.0 * (t - 145)))
        engine.feed(_fix(BOX, t + 1, 5.0))
    engine.run([], until=at(500))
    return engine


def _separations(engine: Engine) -> list[Alert]:
    return [e.event for e in engine.emitted if isinstance(e.event, Alert) and e.event.kind == SEPARATED]


def test_an_unpairing_survives_a_late_fix_older_than_the_window_and_no_stale_separation_is_raised() -> None:
    in_order = _run(declare=None, paired_from_start=True, late=False)
    assert _separations(in_order) == []
    engine = _run(declare=None, paired_from_start=True, late=True)
    assert engine.flags.get(REORDERED) == 1  # the late fix was replayed, declaration and all
    assert PairingDetector.paired_truck(engine.states[BOX].pairing) is None
    assert _separations(engine) == []


def test_a_pairing_survives_a_late_fix_and_the_truck_leaving_without_the_box_is_a_separation() -> None:
    in_order = _run(declare=TRK, paired_from_start=False, late=False)
    assert len(_separations(in_order)) == 1
    engine = _run(declare=TRK, paired_from_start=False, late=True)
    assert engine.flags.get(REORDERED) == 1
    assert PairingDetector.paired_truck(engine.states[BOX].pairing) == TRK
    seps = _separations(engine)
    assert len(seps) == 1 and seps[0].evidence["truck"]["id"] == TRK


def test_another_process_taking_over_after_the_declaration_replays_it_alike() -> None:
    for declare, paired in ((None, True), (TRK, False)):
        whole = _run(declare=declare, paired_from_start=paired, late=True)
        parts = _run(declare=declare, paired_from_start=paired, late=True, restart=True)
        assert [(e.at, e.event) for e in parts.emitted] == [(e.at, e.event) for e in whole.emitted]
        assert parts.states[BOX] == whole.states[BOX]


def _box(reorderer: Reorderer, state: DeviceState, t: float) -> DeviceState:
    return reorderer.step(state, _fix(BOX, t, 5.0)).state


def test_a_fix_older_than_the_declaration_but_newer_than_every_fix_is_judged_before_it() -> None:
    reorderer = Reorderer(Pipeline(SANTOS))
    state = reorderer.declare(DeviceState(BOX, DeviceKind.CONTAINER), TRK, at(0)).state
    for t in (10, 20):
        state = _box(reorderer, state, t)
    state = reorderer.declare(state, None, at(30)).state
    result = reorderer.step(state, _fix(BOX, 25, 5.0))
    assert result.flags == (REORDERED,)
    log = result.state.log
    assert [type(e).__name__ for e in log] == ["Declared", "Entry", "Entry", "Entry", "Declared"]
    fix_25 = log[3]
    assert isinstance(fix_25, Entry) and fix_25.ping.ts == at(25)
    assert PairingDetector.paired_truck(fix_25.before.pairing) == TRK  # judged on the pairing of its time
    assert PairingDetector.paired_truck(result.state.pairing) is None  # and the unpairing still stands


def test_a_backdated_declaration_rejudges_no_fix_and_a_fix_of_its_instant_comes_after_it() -> None:
    reorderer = Reorderer(Pipeline(SANTOS))
    state = DeviceState(BOX, DeviceKind.CONTAINER)
    for t in (10, 20):
        state = _box(reorderer, state, t)
    state = reorderer.declare(state, TRK, at(15)).state
    decl = state.log[-1]
    assert isinstance(decl, Declared)
    assert decl.at == at(15) and decl.ts == at(20) + timedelta(microseconds=1)  # placed after the fix of 20 s
    assert state.pairing is not None and state.pairing.paired_at == at(15)
    state = reorderer.step(state, _fix(BOX, 18, 5.0)).state  # late: judged before the declaration's place
    assert PairingDetector.paired_truck(state.pairing) == TRK
    declared = reorderer.declare(state, None, at(40)).state
    same_instant = reorderer.step(declared, _fix(BOX, 40, 5.0))
    assert same_instant.flags == ()  # a declaration holds from its time on: a fix of that instant is in order
    assert PairingDetector.paired_truck(same_instant.state.pairing) is None


def test_a_window_holding_declarations_round_trips_through_the_codec_exactly() -> None:
    reorderer = Reorderer(Pipeline(SANTOS))
    state = reorderer.declare(DeviceState(BOX, DeviceKind.CONTAINER), TRK, at(0)).state
    for t in (10, 20):
        state = _box(reorderer, state, t)
    state = reorderer.declare(state, None, at(15)).state  # backdated: kept apart from its place
    state = _box(reorderer, state, 30)
    again = codec.decode(codec.encode(state))
    assert again == state
    assert [type(e) for e in again.log] == [Declared, Entry, Entry, Declared, Entry]
    assert [e.before for e in again.log] == [e.before for e in state.log]
    assert codec.encode(again) == codec.encode(state)
