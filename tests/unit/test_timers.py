"""Due times: no detector may be woken late, and the queue hands out exactly the devices that fell due.

The property tests drive several devices of the real Santos fence set (trucks and a container cleared by
customs, standing, wandering and falling silent in the open port, in a terminal, in a restricted lot)
through the default pipeline, and after every fix probe ticks at random instants before each due time:
such a tick must change nothing. Ticks at the due time itself show the dark and access-window times are
not merely early but exact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.detector_helpers import OPEN, RESTRICTED, SANTOS, TERMINAL, offset
from tracker.core.dark import DarkDetector
from tracker.core.detector import first_after
from tracker.core.engine import Engine
from tracker.core.inspection import AccessWindowDetector
from tracker.core.model import Alert, DeviceKind, Inspection, InspectionResult, Ping
from tracker.core.pipeline import TICK_HORIZON_S, TICK_QUIET_S, Pipeline
from tracker.core.rendezvous import RendezvousDetector
from tracker.core.state import DeviceState
from tracker.core.timers import DueQueue

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
CONTAINER_NO = "MSCU1234565"
PLACES = {"open": OPEN, "terminal": TERMINAL, "restricted": RESTRICTED}
DEVICES = {"TRK-1": DeviceKind.TRUCK, "TRK-2": DeviceKind.TRUCK, "BOX-1": DeviceKind.CONTAINER}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# ---- the queue ------------------------------------------------------------------------------------


def test_a_tick_takes_only_the_devices_due_by_then_in_the_order_they_were_first_scheduled() -> None:
    q = DueQueue()
    q.schedule("b", at(50))
    q.schedule("a", at(10))
    q.schedule("c", at(10))
    q.schedule("quiet", None)
    assert q.due(at(9)) == []
    assert q.due(at(10)) == ["a", "c"]
    assert q.due(at(50)) == ["b", "a", "c"]  # tick order is first scheduled, not due time
    assert q.due(at(50)) == ["b", "a", "c"]  # asking does not take them out: adopting a new state does
    assert len(q) == 3 and "quiet" not in q


def test_rescheduling_replaces_the_old_due_time_and_none_clears_it() -> None:
    q = DueQueue()
    q.schedule("a", at(10))
    q.schedule("a", at(100))
    assert q.due(at(50)) == [] and q.when("a") == at(100)
    q.schedule("a", at(10))
    q.schedule("a", at(10))
    assert q.due(at(50)) == ["a"]  # once, however often it was pushed
    q.schedule("a", None)
    assert q.due(at(1000)) == [] and len(q) == 0


def test_rebuild_keeps_the_tick_order_of_known_devices() -> None:
    q = DueQueue()
    for dev in ("x", "y", "z"):
        q.schedule(dev, at(1))
    q.rebuild([("z", at(5)), ("x", at(5)), ("y", None), ("new", at(5))])
    assert q.due(at(5)) == ["x", "z", "new"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.one_of(st.none(), st.integers(0, 300))), max_size=400))
def test_the_queue_agrees_with_a_plain_dict_whatever_the_sequence(ops: list[tuple[str, int | None]]) -> None:
    """Lazy deletion and compaction never lose or invent a due time."""
    q = DueQueue()
    model: dict[str, int] = {}
    order: list[str] = []
    for i, (dev, due) in enumerate(ops):
        if dev not in order:
            order.append(dev)
        q.schedule(dev, None if due is None else at(due))
        if due is None:
            model.pop(dev, None)
        else:
            model[dev] = due
        if i % 7 == 0:
            now = (i * 13) % 300
            assert q.due(at(now)) == [d for d in order if d in model and model[d] <= now]
    assert len(q) == len(model)
    assert all(q.when(d) == at(t) for d, t in model.items())


# ---- the detectors' due times --------------------------------------------------------------------


def test_first_after_is_the_first_microsecond_past_a_float_limit() -> None:
    for limit in (0.1, 90.0, 123.4567891, 1e-7, 600.0000005):
        t = first_after(T0, limit)
        assert (t - T0).total_seconds() > limit
        assert not (t - timedelta(microseconds=1) - T0).total_seconds() > limit


moves = st.tuples(
    st.sampled_from(sorted(DEVICES)),
    st.floats(1.0, 900.0),  # seconds since the previous event: 1 Hz bursts to quarter-hour silences
    st.sampled_from(sorted(PLACES)),
    st.floats(-40.0, 40.0),  # metres from the place: side by side, or a little apart
    st.floats(-40.0, 40.0),
)


def _detector_states_equal(before: DeviceState, after: DeviceState) -> bool:
    """Equal but for the rendezvous' forgetting of expired closed keys, which every evaluation redoes first."""
    for name in DeviceState.__struct_fields__:
        a, b = getattr(before, name), getattr(after, name)
        if name == RendezvousDetector.name:
            a, b = (a.open if a else ()), (b.open if b else ())
        if a != b:
            return False
    return True


def _probe(pipeline: Pipeline, state: DeviceState, draw: Any, checks: dict[str, int]) -> None:
    """Ticks before the device's due time change nothing; its detectors' own times are exact where claimed."""
    assert state.last is not None
    due = pipeline.next_due(state)
    horizon = state.last.ts + timedelta(seconds=TICK_HORIZON_S)
    if due is not None:
        assert state.last.ts + timedelta(seconds=TICK_QUIET_S) <= due <= horizon
    end = horizon if due is None else due
    span = (end - state.last.ts).total_seconds()
    for _ in range(2):
        # no tick runs within TICK_QUIET_S of a fix (Pipeline.in_tick_range): that is where the probes start
        t = state.last.ts + timedelta(seconds=draw(st.floats(TICK_QUIET_S, max(TICK_QUIET_S, span))))
        if t >= end:
            continue
        result = pipeline.tick(state, t)
        assert result.alerts == (), (t, due, result.alerts)
        assert _detector_states_equal(state, result.state)
        checks["quiet"] += 1
    ctx = pipeline.tick_context(state)
    for det in pipeline.detectors:
        if not isinstance(det, DarkDetector | AccessWindowDetector):
            continue
        own = getattr(state, det.name)
        own_due = det.next_due(own, ctx, None)
        if own_due is None:
            continue
        new, events = det.on_tick(own, own_due, ctx)
        assert events or new != own, (det.name, own_due)  # due means it fires then, not merely "soon"
        quiet, events = det.on_tick(own, own_due - timedelta(microseconds=1), ctx)
        assert not events and quiet == own
        checks[det.name] += 1


@settings(max_examples=60, deadline=None)
@given(st.lists(moves, min_size=2, max_size=20), st.integers(0, 19), st.data())
def test_no_tick_before_the_due_time_changes_anything(plan: list[Any], cleared_at: int, data: Any) -> None:
    pipeline = Pipeline(SANTOS)
    states = {d: DeviceState(d, k) for d, k in DEVICES.items()}
    checks = {"quiet": 0, DarkDetector.name: 0, AccessWindowDetector.name: 0}
    t = 0.0
    for i, (dev, gap, place, east, north) in enumerate(plan):
        t += gap
        if i == cleared_at:
            box = states["BOX-1"]
            states["BOX-1"] = pipeline.inspect(box, Inspection(CONTAINER_NO, InspectionResult.CLEARED, at(t))).state
        lon, lat = offset(PLACES[place], east, north)
        states[dev] = pipeline.step(states[dev], Ping(dev, at(t), lon, lat)).state
        for state in states.values():
            if state.last is not None:
                _probe(pipeline, state, data.draw, checks)
    assert checks["quiet"] > 0


def test_a_silent_truck_in_the_port_is_due_when_its_silence_becomes_a_loss() -> None:
    pipeline = Pipeline(SANTOS)
    state = DeviceState("TRK-1")
    for s in range(0, 300, 30):
        state = pipeline.step(state, Ping("TRK-1", at(s), *offset(OPEN, (s // 30) % 4 * 100.0, 0.0))).state
    due = pipeline.next_due(state)
    assert due is not None
    assert pipeline.tick(state, due - timedelta(microseconds=1)).alerts == ()
    (lost,) = pipeline.tick(state, due).alerts
    assert isinstance(lost, Alert) and lost.kind == "signal_lost"
    assert pipeline.next_due(pipeline.tick(state, due).state, due) is None  # nothing left to time


def test_outside_the_port_nothing_is_due() -> None:
    pipeline = Pipeline(SANTOS)
    state = pipeline.step(DeviceState("TRK-1"), Ping("TRK-1", at(0), -46.33, -23.94)).state
    assert not state.fences and pipeline.next_due(state) is None


# ---- the engine ticks only what is due --------------------------------------------------------------


def test_the_engine_ticks_the_due_devices_only_and_raises_what_ticking_all_would() -> None:
    """The same replay with the queue and with a loop over every device gives the same events."""

    class EveryDevice(Engine):
        def tick(self, now: datetime) -> None:
            for dev, st_ in list(self.states.items()):
                if self.pipeline.in_tick_range(st_, now):
                    result = self.pipeline.tick(st_, now)
                    self.states[dev] = result.state
                    self._emit(result.alerts, now)

    pings = []
    for n, dev in enumerate(("TRK-1", "TRK-2", "TRK-3")):
        pings += [Ping(dev, at(s + n), *offset(OPEN, n * 15.0, 0.0)) for s in range(0, 900, 60 * (n + 1))]
    pings += [Ping("TRK-1", at(2000), *offset(OPEN, 0.0, 0.0))]
    pings.sort(key=lambda p: p.ts)
    queued = Engine(Pipeline(SANTOS))
    queued.run(pings, until=at(4000))
    every = EveryDevice(Pipeline(SANTOS))
    every.run(pings, until=at(4000))
    assert [(e.at, e.event) for e in queued.emitted] == [(e.at, e.event) for e in every.emitted]
    assert {type(e.event).__name__ for e in queued.emitted} >= {"Alert"}
    kinds = {getattr(e.event, "kind", None) for e in queued.emitted}
    assert {"signal_lost", "rendezvous"} <= kinds


def test_restored_states_are_ticked_when_due() -> None:
    first = Engine(Pipeline(SANTOS))
    first.run([Ping("TRK-1", at(s), *offset(OPEN, (s // 30) % 4 * 100.0, 0.0)) for s in range(0, 300, 30)])
    restarted = Engine(Pipeline(SANTOS))
    restarted.restore(first.states.values())
    assert "TRK-1" in restarted.timers
    restarted.run([], until=at(300))  # the replay clock starts here
    restarted.run([], until=at(1000))
    assert [e.event.kind for e in restarted.emitted if hasattr(e.event, "kind")] == ["signal_lost"]
