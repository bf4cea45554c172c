"""Trip segmentation through the real pipeline (motion, fences, ticks, customs), one device at a time."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from geofences import haversine_m
from tests.unit.detector_helpers import OPEN, OUTSIDE, SANTOS, TERMINAL, at, offset
from tracker.core import codec
from tracker.core.model import Alert, DeviceKind, Inspection, InspectionResult, Ping
from tracker.core.pipeline import Pipeline
from tracker.core.reorder import Reorderer
from tracker.core.state import DeviceState
from tracker.core.stops import StopDetector
from tracker.core.trips import RETRACTED, Trip, TripParams, TripSegmenter, TripState, trip_id, trips_in

QUAY = (-46.29146, -23.98392)  # santos-quay-01, inside the port boundary
GATE = (-46.315181, -23.93485)  # santos-gate-054 (Paquetá)
BOX = "MSCU1234565"


@dataclass
class Dev:
    """One device driven through a pipeline the way the service does: fixes, ticks, customs decisions."""

    pipeline: Pipeline
    device_id: str = "TRK-1"
    kind: DeviceKind = DeviceKind.TRUCK
    state: DeviceState = field(init=False)
    out: list[Trip] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    t: float = 0.0
    through_codec: bool = False  # every state written and read back as the store does, between steps
    seen: float = 0.0  # the latest fix or customs decision so far (a loading may come after the last fix)

    def _adopt(self, state: DeviceState) -> None:
        self.state = codec.decode(codec.encode(state)) if self.through_codec else state

    def __post_init__(self) -> None:
        self.state = DeviceState(self.device_id, self.kind)

    def fix(self, t: float, place: tuple[float, float]) -> None:
        result = self.pipeline.step(self.state, Ping(self.device_id, at(t), place[0], place[1]))
        self._adopt(result.state)
        self.out.extend(result.trips)
        self.alerts.extend(a for a in result.alerts if isinstance(a, Alert))
        self.t = t
        self.seen = max(self.seen, t)

    def tick(self, t: float) -> None:
        result = self.pipeline.tick(self.state, at(t))
        self._adopt(result.state)
        self.out.extend(result.trips)

    def inspect(self, t: float, what: InspectionResult) -> None:
        result = self.pipeline.inspect(self.state, Inspection(BOX, what, at(t)))
        self.seen = max(self.seen, t)
        self._adopt(result.state)
        self.out.extend(result.trips)

    def park(self, place: tuple[float, float], seconds: float, every: float = 10.0, noise_m: float = 5.0) -> None:
        rnd = random.Random(int(self.t) + 1)
        t, end = self.t, self.t + seconds
        while t < end:
            t += every
            self.fix(t, offset(place, rnd.uniform(-noise_m, noise_m), rnd.uniform(-noise_m, noise_m)))

    def drive(self, to: tuple[float, float], speed: float = 10.0, every: float = 5.0) -> None:
        here = (self.state.last.lon, self.state.last.lat) if self.state.last else to
        dist = haversine_m(here[0], here[1], to[0], to[1])
        steps = max(1, int(dist / (speed * every)))
        t = self.t
        for i in range(1, steps + 1):
            f = i / steps
            self.fix(t + i * every, (here[0] + (to[0] - here[0]) * f, here[1] + (to[1] - here[1]) * f))

    def trips(self) -> list[Trip]:
        return sorted(trips_in(self.out).values(), key=lambda tr: tr.start)


def pipeline(params: TripParams | None = None, *, detectors: Iterable[object] = ()) -> Pipeline:
    return Pipeline(SANTOS, detectors=tuple(detectors), trips=TripSegmenter(params))  # type: ignore[arg-type]


def closed(dev: Dev) -> list[Trip]:
    return [t for t in dev.trips() if t.closed]


def check_invariants(trips: list[Trip]) -> None:
    """What every trip of one device must satisfy, whatever the fixes were."""
    ordered = sorted(trips, key=lambda t: t.start)
    for a, b in itertools.pairwise(ordered):
        assert a.end <= b.start, f"trips overlap: {a.id} ends {a.end}, {b.id} starts {b.start}"
    assert sum(1 for t in trips if not t.closed) <= 1
    if any(not t.closed for t in trips):
        assert not ordered[-1].closed, "the open trip is the latest one"
    for t in trips:
        assert t.id == trip_id(t.device_id, t.start)
        assert t.start <= t.end
        assert t.distance_m >= 0
        assert abs(t.moving_s + t.stopped_s - t.duration_s) < 1e-6
        assert 0 <= t.stopped_s <= t.duration_s + 1e-6
        last_end = t.start
        for s in t.stops:
            assert last_end <= s.start < s.end <= t.end, (s, t.start, t.end)
            last_end = s.end
        for v in t.visits:
            assert t.start <= v.enter <= t.end
            assert v.exit is None or v.enter <= v.exit <= t.end
            assert v.inside_s(t.end) <= t.duration_s + 1e-6
        j = t.to_json()
        assert (
            j["duration_s"] == round(j["moving_s"] + j["stopped_s"], 3)
            or abs(j["duration_s"] - j["moving_s"] - j["stopped_s"]) < 0.01
        )


# ---- trucks ------------------------------------------------------------------------------------------


def test_a_port_visit_is_one_trip_from_the_first_fix_inside_to_the_first_fix_outside() -> None:
    dev = Dev(pipeline())
    dev.fix(0, OUTSIDE)
    dev.drive(GATE)
    dev.park(GATE, 300)  # queue at the gate
    dev.drive(TERMINAL)
    dev.park(TERMINAL, 1200)
    dev.drive(OUTSIDE)
    [trip] = closed(dev)
    assert trip.end_reason == "port_exit" and trip.kind is DeviceKind.TRUCK
    assert trip.origin is not None and trip.destination is not None
    assert trip.port == "santos"
    assert [round(s.duration_s / 60) for s in trip.stops] == [5, 20]
    assert any(v.fence_id == "santos-gate-054" for v in trip.visits)
    terminal = [v for v in trip.visits if v.fence_id == "santos-terminal-33"]
    assert terminal and terminal[0].exit is not None and terminal[0].inside_s(trip.end) >= 1200
    straight = haversine_m(*GATE, *TERMINAL) + haversine_m(*TERMINAL, *OUTSIDE)
    assert 0.5 * straight < trip.distance_m < 1.5 * straight
    check_invariants(dev.trips())


def test_a_long_stop_in_the_port_splits_the_visit_where_the_stop_began() -> None:
    dev = Dev(pipeline())
    dev.fix(0, OUTSIDE)
    dev.drive(TERMINAL)
    stop_from = dev.t
    dev.park(TERMINAL, 2 * 3600, every=30)
    dev.drive(OUTSIDE)
    first, second = closed(dev)
    assert first.end_reason == "long_stop"
    assert abs((first.end - at(stop_from)).total_seconds()) <= 60  # the stop's first fix, not its end
    assert second.end_reason == "port_exit"
    assert second.start >= at(stop_from + 3600)  # starts when the truck leaves the stop
    assert second.origin is not None and first.destination is not None
    check_invariants(dev.trips())


def test_a_truck_parked_silent_is_closed_by_a_tick_at_the_due_time_and_not_before() -> None:
    p = pipeline()
    dev = Dev(p)
    dev.fix(0, OUTSIDE)
    dev.drive(TERMINAL)
    dev.park(TERMINAL, 120)
    assert dev.trips() and not dev.trips()[-1].closed
    due = p.next_due(dev.state)
    assert due is not None
    before = dev.state
    dev.tick((due - at(0)).total_seconds() - 1)
    assert dev.state == before and not closed(dev)
    dev.tick((due - at(0)).total_seconds() + 1)
    [trip] = closed(dev)
    assert trip.end_reason == "long_stop"
    after = p.next_due(dev.state)
    assert after is None or after > due


def test_silence_ends_the_trip_at_the_last_fix() -> None:
    dev = Dev(pipeline())
    dev.fix(0, OUTSIDE)
    dev.drive(TERMINAL)
    dev.drive(OPEN)
    last = dev.t
    dev.fix(last + 2 * 3600, OPEN)
    trips = dev.trips()
    assert trips[0].closed and trips[0].end_reason == "silence" and trips[0].end == at(last)
    check_invariants(trips)


def test_a_truck_outside_the_port_has_no_trip_until_it_enters() -> None:
    dev = Dev(pipeline())
    dev.fix(0, OUTSIDE)
    dev.drive(offset(OUTSIDE, 0, -1500))
    assert dev.out == []


def test_a_truck_back_after_a_long_stop_and_a_long_silence_starts_its_trip_at_its_first_fix_back() -> None:
    # parked past the long-stop limit, then silent for hours: the next trip does not span the silence
    dev = Dev(pipeline())
    dev.fix(0, OUTSIDE)
    dev.drive(TERMINAL)
    dev.park(TERMINAL, 2 * 3600, every=60)
    gone = dev.t
    back = gone + 3 * 3600
    dev.fix(back, offset(TERMINAL, 150, 0))
    dev.drive(OPEN)
    first, second = dev.trips()
    assert first.end_reason == "long_stop"
    assert second.start == at(back) and not second.closed
    assert second.distance_m < 1.2 * (haversine_m(*TERMINAL, *OPEN) + 150)
    check_invariants(dev.trips())


def test_leaving_a_long_stop_outside_opens_a_trip_that_ends_at_the_port_entry() -> None:
    dev = Dev(pipeline())
    dev.park(OUTSIDE, 2 * 3600, every=60)
    dev.drive(GATE)
    dev.drive(TERMINAL)
    trips = dev.trips()
    assert trips[0].end_reason == "port_entry" and trips[0].origin is None
    assert not trips[1].closed and trips[1].start >= trips[0].end
    check_invariants(trips)


def test_noise_around_a_parked_truck_is_never_a_trip() -> None:
    dev = Dev(pipeline())
    dev.park(TERMINAL, 3 * 3600, every=20, noise_m=20)
    assert dev.out == []


def test_a_replay_of_the_same_fixes_gives_the_same_trips_and_ids() -> None:
    def once() -> list[Trip]:
        dev = Dev(pipeline())
        dev.fix(0, OUTSIDE)
        dev.drive(GATE)
        dev.park(GATE, 200)
        dev.drive(TERMINAL)
        dev.drive(OUTSIDE)
        return dev.out

    a, b = once(), once()
    assert a == b and len({t.id for t in a}) == 1


def test_a_state_restored_from_the_store_codec_continues_the_same_trip() -> None:
    dev = Dev(pipeline())
    dev.fix(0, OUTSIDE)
    dev.drive(GATE)
    saved = codec.decode(codec.encode(dev.state))
    fresh = Dev(pipeline())
    fresh.state, fresh.t = saved, dev.t
    for d in (dev, fresh):
        d.drive(TERMINAL)
        d.drive(OUTSIDE)
    assert closed(dev) == closed(fresh)


def test_typed_state_round_trips_through_the_codec_exactly() -> None:
    dev = Dev(pipeline())
    dev.fix(0, OUTSIDE)
    dev.drive(GATE)
    dev.park(GATE, 200)
    ts = dev.state.trips
    assert isinstance(ts, TripState) and ts.open is not None and ts.still is not None and ts.open.visits
    assert codec.decode(codec.encode(dev.state)) == dev.state


def test_alerts_raised_during_the_trip_are_listed_by_id() -> None:
    dev = Dev(pipeline(detectors=(StopDetector(),)))
    dev.fix(0, OUTSIDE)
    dev.drive(OPEN)
    dev.park(OPEN, 600)  # 10 min in the open: an unexpected stop
    dev.drive(OUTSIDE)
    [trip] = closed(dev)
    stop_alerts = [a for a in dev.alerts if a.kind == "unexpected_stop"]
    assert stop_alerts and str(stop_alerts[0].id) in trip.alerts
    low = [a for a in dev.alerts if a.severity.value in ("info", "low")]
    assert all(str(a.id) not in trip.alerts for a in low)


def test_open_trip_snapshots_are_rate_limited_in_event_time() -> None:
    dev = Dev(pipeline(TripParams(update_every_s=120)))
    dev.fix(0, OUTSIDE)
    dev.drive(offset(OPEN, 0, 0), speed=5, every=1)  # about 2 km at 1 Hz, no stop
    opened = [t for t in dev.out if not t.closed]
    span = (opened[-1].end - opened[0].end).total_seconds()
    assert len(opened) <= span / 120 + 1 + sum(1 for _ in dev.trips()[0].visits) * 2


# ---- containers --------------------------------------------------------------------------------------


def test_a_container_trip_runs_from_pick_up_to_loading_with_its_customs_timeline() -> None:
    dev = Dev(pipeline(), device_id=BOX, kind=DeviceKind.CONTAINER)
    dev.park(TERMINAL, 3600, every=300)  # standing in the yard: no trip
    assert dev.out == []
    dev.inspect(dev.t + 10, InspectionResult.CLEARED)  # cleared while in the yard: carried into the trip
    picked = dev.t
    dev.drive(GATE)
    dev.drive(QUAY)
    dev.park(QUAY, 180)
    dev.inspect(dev.t + 30, InspectionResult.LOADED)
    [trip] = closed(dev)
    assert trip.kind is DeviceKind.CONTAINER and trip.end_reason == "loaded"
    assert at(picked) <= trip.start <= at(picked + 30)
    assert trip.customs.cleared is not None and trip.customs.loaded == trip.end
    assert trip.destination == "santos-quay-01"
    assert "santos-quay-01" in trip.stops[-1].fences and trip.stops[-1].duration_s >= 170  # standing when loaded
    assert any(v.fence_id == "santos-quay-01" and v.exit is None for v in trip.visits)
    # aboard: the ship moving is no pick-up
    dev.drive(offset(QUAY, 3000, -3000), speed=8, every=30)
    assert len(dev.trips()) == 1
    check_invariants(dev.trips())


def test_a_container_set_down_in_a_terminal_ends_its_trip_where_it_stood_still() -> None:
    dev = Dev(pipeline(), device_id=BOX, kind=DeviceKind.CONTAINER)
    dev.fix(0, OUTSIDE)
    dev.drive(GATE)
    dev.drive(TERMINAL)
    down = dev.t
    dev.park(TERMINAL, 1800, every=60)
    [trip] = closed(dev)
    assert trip.end_reason == "set_down"
    assert abs((trip.end - at(down)).total_seconds()) <= 70
    assert trip.destination is not None
    check_invariants(dev.trips())


def test_inspections_while_no_trip_is_open_start_the_next_trip_timeline_only() -> None:
    dev = Dev(pipeline(), device_id=BOX, kind=DeviceKind.CONTAINER)
    dev.park(TERMINAL, 1800, every=300)
    dev.inspect(dev.t + 1, InspectionResult.SELECTED)
    dev.drive(GATE)
    [trip] = dev.trips()
    assert trip.customs.selected == at(1801) and trip.customs.cleared is None


# ---- properties --------------------------------------------------------------------------------------

PLACES = [OUTSIDE, OPEN, TERMINAL, GATE, QUAY, offset(OPEN, 800, 0), offset(OUTSIDE, -1000, 500)]

segment = st.one_of(
    st.tuples(st.just("park"), st.sampled_from(PLACES), st.floats(30, 5400), st.sampled_from([5.0, 30.0, 300.0])),
    st.tuples(st.just("drive"), st.sampled_from(PLACES), st.floats(2, 20), st.sampled_from([1.0, 5.0, 30.0])),
    st.tuples(st.just("gap"), st.sampled_from(PLACES), st.floats(60, 3 * 3600), st.just(0.0)),
    st.tuples(st.just("tick"), st.sampled_from(PLACES), st.floats(31, 3 * 3600), st.just(0.0)),
    st.tuples(st.just("customs"), st.sampled_from(PLACES), st.sampled_from(list(InspectionResult)), st.just(0.0)),
)


def _run(
    kind: DeviceKind,
    plan: list[tuple[str, tuple[float, float], object, float]],
    p: Pipeline,
    *,
    through_codec: bool = False,
) -> Dev:
    dev = Dev(p, device_id=BOX if kind is DeviceKind.CONTAINER else "TRK-9", kind=kind, through_codec=through_codec)
    dev.fix(0, plan[0][1] if plan else OPEN)
    for what, place, value, every in plan:
        if what == "park":
            assert isinstance(value, float)
            dev.park(place, value, every=every)
        elif what == "drive":
            assert isinstance(value, float)
            dev.drive(place, speed=value, every=every)
        elif what == "gap":
            assert isinstance(value, float)
            dev.t += value
            dev.fix(dev.t, place)
        elif what == "tick":
            assert isinstance(value, float)
            dev.tick(dev.t + value)
        else:
            assert isinstance(value, InspectionResult)
            dev.inspect(dev.t + 1, value)
    return dev


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([DeviceKind.TRUCK, DeviceKind.CONTAINER]), st.lists(segment, min_size=1, max_size=8))
def test_trips_never_overlap_and_their_times_add_up(
    kind: DeviceKind, plan: list[tuple[str, tuple[float, float], object, float]]
) -> None:
    dev = _run(kind, plan, pipeline())
    trips = dev.trips()
    check_invariants(trips)
    # durations add up: the trips together never last longer than the device was observed
    total = sum(t.duration_s for t in trips)
    assert total <= (at(dev.seen) - at(0)).total_seconds() + 1e-6
    # every output of a trip has the final one's id and start (an open snapshot never changes identity)
    starts = {t.id: t.start for t in dev.out}
    assert all(starts[t.id] == t.start for t in dev.out)
    # a restart anywhere changes nothing: the same plan with every state written and read back by the codec
    again = _run(kind, plan, pipeline(), through_codec=True)
    assert again.out == dev.out


def test_closed_trips_keep_their_id_when_replayed_with_a_shifted_clock() -> None:
    # the id depends on the device and the start only: a different start is a different trip
    t = trip_id("TRK-1", at(0))
    assert t == trip_id("TRK-1", at(0)) != trip_id("TRK-1", at(0) + timedelta(microseconds=1))
    assert t != trip_id("TRK-2", at(0))


def test_snapshot_counts_the_standstill_under_way_as_the_last_stop() -> None:
    seg = TripSegmenter()
    dev = Dev(Pipeline(SANTOS, detectors=(), trips=seg))
    dev.fix(0, OUTSIDE)
    dev.drive(OPEN)
    dev.park(OPEN, 600)
    snap = [t for t in dev.out if not t.closed][-1]
    assert snap.stops and snap.stops[-1].duration_s >= 500
    assert replace(snap, stops=()).stopped_s == 0


def test_seeded_random_plans_reach_every_boundary_and_keep_the_invariants() -> None:
    # hypothesis shrinks towards small plans; this fixed sample makes sure long mixed ones are covered too,
    # and that the invariants above were checked on trips of every kind of ending (not on empty lists)
    rnd = random.Random(3)
    reasons: set[tuple[str, str | None]] = set()
    for _ in range(40):
        plan: list[tuple[str, tuple[float, float], object, float]] = []
        for _ in range(rnd.randint(1, 8)):
            what = rnd.choice(["park", "drive", "drive", "gap", "tick", "customs"])
            place = rnd.choice(PLACES)
            if what == "park":
                plan.append((what, place, rnd.uniform(30, 5400), rnd.choice([5.0, 30.0, 300.0])))
            elif what == "drive":
                plan.append((what, place, rnd.uniform(2, 20), rnd.choice([1.0, 5.0, 30.0])))
            elif what in ("gap", "tick"):
                plan.append((what, place, rnd.uniform(60, 3 * 3600), 0.0))
            else:
                plan.append((what, place, rnd.choice(list(InspectionResult)), 0.0))
        for kind in (DeviceKind.TRUCK, DeviceKind.CONTAINER):
            trips = _run(kind, plan, pipeline()).trips()
            check_invariants(trips)
            reasons |= {(kind.value, t.end_reason) for t in trips}
    expected = {
        ("truck", "port_exit"),
        ("truck", "long_stop"),
        ("truck", "silence"),
        ("truck", "port_entry"),
        ("container", "set_down"),
        ("container", "silence"),
        ("container", "loaded"),
    }
    assert expected <= reasons, expected - reasons


# ---- late fixes (tracker.core.reorder) -------------------------------------------------------------------


def _fed(fixes: Iterable[tuple[float, tuple[float, float]]], window_s: float = 30.0) -> tuple[DeviceState, list[Trip]]:
    """Fixes through the reorder window in the order given (the service's path), and every trip output."""
    seg = TripSegmenter()
    reorderer = Reorderer(Pipeline(SANTOS, detectors=(), trips=seg), window_s)
    state = DeviceState("TRK-1", DeviceKind.TRUCK)
    out: list[Trip] = []
    for t, place in fixes:
        result = reorderer.step(state, Ping("TRK-1", at(t), place[0], place[1]))
        state = result.state
        out.extend(result.trips)
    return state, out


def test_a_late_fix_before_a_trips_first_fix_withdraws_the_trip_it_replaced() -> None:
    """The trip opened at 0 s was stored (200 m done by 10 s); a fix from -3 s arrives after the one at 10 s: in
    order the trip starts at -3 s, another id. The trip from 0 s is withdrawn, or its row stays open forever."""
    fixes = [(float(t), offset(OPEN, 20.0 * t, 0.0)) for t in range(0, 60, 5)]
    straggler = (-3.0, offset(OPEN, -60.0, 0.0))
    _, in_order = _fed(sorted([straggler, *fixes]))
    _, late = _fed([*fixes[:3], straggler, *fixes[3:]])
    speculative = trip_id("TRK-1", at(0))
    assert any(t.id == speculative and not t.retracted for t in late)  # it had been output, and stored
    [withdrawn] = [t for t in late if t.retracted]
    assert withdrawn.id == speculative and withdrawn.end_reason == RETRACTED
    assert trips_in(late) == trips_in(in_order)
    assert [t.start for t in trips_in(late).values()] == [at(-3)]


def test_after_a_late_fix_the_stored_open_trip_never_goes_back_in_time() -> None:
    """Replayed from the rewound state, snapshots are rate-limited from an earlier ``emitted_at``: a straggler
    just past that limit is output, and the fix after it, which the store already holds as the trip's latest
    snapshot, no longer is. The open trip is output once more as it now stands, so the row never regresses."""
    fixes = [(float(t), offset(OPEN, 3.0 * t, 0.0)) for t in range(0, 300, 7)]  # 3 m/s, a fix every 7 s
    for late_t in [x + 0.5 for x in range(60, 250, 3)]:
        before = [f for f in fixes if f[0] < late_t + 20]  # the straggler comes 20 s late
        _, stored = _fed(before)
        state, out = _fed([*before, (late_t, offset(OPEN, 3.0 * late_t, 0.0))])
        assert state.trips is not None and state.trips.open is not None
        trip = state.trips.open
        assert trips_in(out)[trip.id].end >= trips_in(stored)[trip.id].end, late_t
        assert trips_in(out)[trip.id] == TripSegmenter().snapshot(state.trips), late_t


def test_late_fixes_leave_the_trips_in_order_delivery_would() -> None:
    """Seeded: a drive in and out of the port with random fixes held back up to 25 s (inside the 30 s window);
    the closed trips held at the end are exactly those of in-order delivery, and no withdrawn trip remains."""
    rnd = random.Random(7)
    path = [(float(t), offset(OPEN, 25.0 * t, 0.0)) for t in range(0, 120, 5)]
    _, in_order = _fed(path)
    for _ in range(20):
        delayed = sorted(path, key=lambda f: f[0] + (rnd.uniform(0.0, 25.0) if rnd.random() < 0.3 else 0.0))
        _, late = _fed(delayed)
        held = trips_in(late)
        assert {k: t for k, t in held.items() if t.closed} == {k: t for k, t in trips_in(in_order).items() if t.closed}
        assert set(held) == set(trips_in(in_order))
