"""The batch processor (tracker.core.batch): the one loop the service and the in-process engine drive.

It orders a micro-batch by event time across devices, looks the batch's fences up once, isolates an item
the core raises on (its device keeps the state it had before that item), ticks only what fell due, and
leaves the states it was handed untouched. The engine runs it per tick interval, so a device's due time
is computed once per batch, however many fixes it sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from tests.unit.detector_helpers import OPEN, RESTRICTED, SANTOS, T0, at, offset
from tracker.core.batch import Work, run_batch
from tracker.core.engine import Engine
from tracker.core.model import DeviceKind, Inspection, InspectionResult, Ping
from tracker.core.pipeline import Pipeline, StepResult
from tracker.core.state import DeviceState, Fix

POISON_LON = -46.3111  # a fix at this longitude makes the pipeline below raise


class Recording(Pipeline):
    """The real pipeline, counting what the batch asks of it, and failing on one longitude."""

    def __init__(self) -> None:
        super().__init__(SANTOS)
        self.prefetched: list[list[Ping]] = []
        self.stepped: list[tuple[str, datetime]] = []
        self.due_asked = 0

    def prefetch(self, pings: Iterable[Ping], previous: Mapping[str, Fix | None] | None = None) -> None:
        batch = list(pings)
        self.prefetched.append(batch)
        super().prefetch(batch, previous)

    def step(self, state: DeviceState, ping: Ping) -> StepResult:
        if ping.lon == POISON_LON:
            raise ValueError("poison")
        self.stepped.append((ping.device_id, ping.ts))
        return super().step(state, ping)

    def next_due(self, state: DeviceState, after: datetime | None = None) -> datetime | None:
        self.due_asked += 1
        return super().next_due(state, after)


def new(dev: str) -> DeviceState:
    return DeviceState(dev, DeviceKind.TRUCK)


def test_items_run_in_event_time_order_across_devices_with_one_fence_lookup() -> None:
    pipeline = Recording()
    work = [
        Work("TRK-2", Ping("TRK-2", at(20), *OPEN), 0),
        Work("TRK-1", Ping("TRK-1", at(10), *OPEN), 1),
        Work("TRK-1", Ping("TRK-1", at(30), *offset(OPEN, 50.0, 0.0)), 2),
        Work("TRK-2", Ping("TRK-2", at(10), *offset(OPEN, 0.0, 50.0)), 3),  # same time as seq 1: seq breaks ties
    ]
    out = run_batch(pipeline, work, {}, new)
    assert pipeline.stepped == [("TRK-1", at(10)), ("TRK-2", at(10)), ("TRK-2", at(20)), ("TRK-1", at(30))]
    assert len(pipeline.prefetched) == 1 and len(pipeline.prefetched[0]) == 4
    assert [d.work.seq for d in out.done] == [1, 3, 0, 2]
    assert [p.ts for p, _flags in out.fixes] == [at(10), at(10), at(20), at(30)]
    assert set(out.states) == set(out.dirty) == {"TRK-1", "TRK-2"}
    assert out.states["TRK-1"].last is not None and out.states["TRK-1"].last.ts == at(30)
    assert not any("late" in flags or "reordered" in flags for _p, flags in out.fixes)  # sorted before the window


def test_an_item_the_core_raises_on_fails_alone_and_its_device_keeps_its_previous_state() -> None:
    pipeline = Recording()
    before = run_batch(pipeline, [Work("TRK-1", Ping("TRK-1", at(0), *OPEN), 0)], {}, new).states
    frozen = dict(before)
    work = [
        Work("TRK-1", Ping("TRK-1", at(10), *offset(OPEN, 20.0, 0.0)), 0),
        Work("TRK-1", Ping("TRK-1", at(20), POISON_LON, OPEN[1]), 1),
        Work("TRK-2", Ping("TRK-2", at(15), *OPEN), 2),
    ]
    out = run_batch(pipeline, work, before, new)
    assert [f.work.seq for f in out.failures] == [1] and str(out.failures[0].error) == "poison"
    last = out.states["TRK-1"].last
    assert last is not None and last.ts == at(10)  # the fix before the poison stands, the poison left no trace
    assert "TRK-2" in out.states and len(out.fixes) == 2
    assert before == frozen and before["TRK-1"] is frozen["TRK-1"]  # the states handed in are not changed


def test_ticks_reach_the_devices_due_and_those_the_batch_changed_and_nothing_else() -> None:
    pipeline = Pipeline(SANTOS)
    # TRK-1 inside the port, then silent: the dark timer is due later; TRK-2 in town: never due
    states = run_batch(
        pipeline,
        [Work("TRK-1", Ping("TRK-1", at(0), *OPEN), 0), Work("TRK-2", Ping("TRK-2", at(0), -46.33, -23.94), 1)],
        {},
        new,
    ).states
    due = pipeline.next_due(states["TRK-1"])
    assert due is not None and pipeline.next_due(states["TRK-2"]) is None
    early = run_batch(pipeline, [], states, new, now=due - timedelta(seconds=1), due=())
    assert not early.ticks and not early.states
    out = run_batch(pipeline, [], states, new, now=due, due=["TRK-1"])
    assert [d for d, _r in out.ticks] == ["TRK-1"] and out.ticked == {"TRK-1"}
    assert [a.kind for a in out.alerts] == ["signal_lost"] and set(out.dirty) == {"TRK-1"}
    # the device changed in the same batch is judged on its new state: a fresh fix puts the timer off
    later = run_batch(pipeline, [Work("TRK-1", Ping("TRK-1", due, *OPEN), 0)], states, new, now=due, due=["TRK-1"])
    assert not later.ticks and later.due["TRK-1"] is not None and later.due["TRK-1"] > due


def test_an_inspection_routed_to_a_device_runs_in_its_place_in_time() -> None:
    pipeline = Recording()
    box = lambda d: DeviceState(d, DeviceKind.CONTAINER)  # noqa: E731
    cleared = Inspection("MSCU1234565", InspectionResult.CLEARED, at(15))
    work = [
        Work("BOX-1", Ping("BOX-1", at(20), *OPEN), 0),
        Work("BOX-1", cleared, 1),
        Work("BOX-1", Ping("BOX-1", at(10), *OPEN), 2),
    ]
    out = run_batch(pipeline, work, {}, box)
    assert [d.work.seq for d in out.done] == [2, 1, 0]
    assert len(pipeline.prefetched[0]) == 2  # fixes only


def test_the_engine_computes_a_due_time_once_per_device_per_batch() -> None:
    pipeline = Recording()
    engine = Engine(pipeline, tick_every_s=600.0)
    for s in range(0, 300, 10):  # 30 fixes of one truck inside one tick interval
        engine.feed(Ping("TRK-1", T0 + timedelta(seconds=s), *offset(OPEN, s * 2.0, 0.0)))
    assert pipeline.due_asked == 0  # buffered until the tick boundary (or a read)
    assert len(engine.states["TRK-1"].log) > 0  # reading runs the batch
    assert pipeline.due_asked == 1 and len(pipeline.prefetched) == 1 and len(pipeline.prefetched[0]) == 30


def _kinds(engine: Engine) -> list[str]:
    return [str(getattr(e.event, "kind", "")) for e in engine.emitted]


def test_replacing_the_emitted_list_first_runs_what_was_fed_before() -> None:
    """A caller that swaps in a fresh list to collect what comes next must not find earlier fixes' events in it."""
    fixes = [Ping("TRK-1", at(s), *offset(RESTRICTED, s * 0.3, 0.0)) for s in (0, 10, 20)]
    control = Engine(Pipeline(SANTOS), tick_every_s=600.0)
    for p in fixes:
        control.feed(p)
    assert "geofence_enter" in _kinds(control)  # the second fix inside confirms the entry
    engine = Engine(Pipeline(SANTOS), tick_every_s=600.0)
    engine.feed(fixes[0])
    engine.feed(fixes[1])
    engine.emitted = []
    engine.feed(fixes[2])
    assert "geofence_enter" not in _kinds(engine)
