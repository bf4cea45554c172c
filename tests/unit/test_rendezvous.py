"""Rendezvous as timestamped sequences of several devices: what must fire, and what must not."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from geofences import LocalProjection, haversine_m
from tests.unit import synthetic
from tests.unit.detector_helpers import stored
from tracker.core.detector import AUTHORIZED_STOP_KINDS, FixContext, Motion, TickContext
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Event, Ping, Severity
from tracker.core.rendezvous import Params, RendezvousDetector, meeting_key, stands_at_fix
from tracker.core.state import Fix
from tracker.core.world import Position, World

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
PROJ = LocalProjection(-46.31, -23.95)


INDEX = synthetic.index(
    PROJ,
    "testport",
    [
        ("P", "Port area", "port_boundary", (-3000, -3000, 3000, 3000)),
        ("T1", "Terminal", "terminal", (1000, -300, 1600, 300)),
    ],
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class _Dev:
    kind: DeviceKind
    last: Fix | None = None
    fences: frozenset[str] = frozenset()
    anchor: Fix | None = None
    run: int = 0
    state: Any = None
    outside: datetime | None = None  # standing outside authorized zones since (the pipeline's motion rule)


@dataclass
class Sim:
    """A stand-in for the pipeline: fences, a simple motion rule (50 m, 30 s), the world, one detector."""

    detector: RendezvousDetector = field(default_factory=RendezvousDetector)
    world: World = field(default_factory=World)
    devices: dict[str, _Dev] = field(default_factory=dict)
    events: list[tuple[str, Event]] = field(default_factory=list)
    pairs: dict[str, str] = field(default_factory=dict)  # device -> its paired partner, as the pipeline knows it

    def fix(self, device: str, seconds: float, x: float, y: float, kind: DeviceKind = DeviceKind.TRUCK) -> list[Event]:
        dev = self.devices.setdefault(device, _Dev(kind))
        lon, lat = (float(v) for v in PROJ.to_lonlat(x, y))
        ping = Ping(device_id=device, ts=at(seconds), lon=lon, lat=lat)
        fences = INDEX.membership(lon, lat, dev.fences)
        # stationary: every fix since the anchor within 50 m of it, for at least 30 s
        authorized = any(INDEX.get(f).kind in AUTHORIZED_STOP_KINDS for f in fences)
        if dev.anchor is not None and haversine_m(dev.anchor.lon, dev.anchor.lat, lon, lat) <= 50.0:
            dev.run += 1
            dev.outside = None if authorized else (dev.outside or ping.ts)
        else:
            dev.anchor, dev.run = Fix.of(ping), 1
            dev.outside = None if authorized else ping.ts
        assert dev.anchor is not None
        settled = dev.run >= 2 and (ping.ts - dev.anchor.ts).total_seconds() >= 30
        motion = Motion(
            dev.anchor.ts if settled else None, dev.anchor.lon, dev.anchor.lat, 0.0, dev.outside if settled else None
        )
        ctx = FixContext(
            device_id=device,
            kind=dev.kind,
            previous=dev.last,
            fences_before=dev.fences,
            fences=fences,
            motion=motion,
            index=INDEX,
            world=self.world,
            params_port="testport" if fences else None,
            paired_with=self.pairs.get(device),
        )
        dev.state, events = self.detector.on_fix(dev.state, ping, ctx)
        stored(dev.state)  # the state must survive the store's codec
        self.world.update(
            Position(
                device,
                dev.kind,
                ping.ts,
                lon,
                lat,
                motion.stationary_since,
                authorized,
                self.pairs.get(device),
                motion.outside_since,
            )
        )
        dev.last, dev.fences = Fix.of(ping), fences
        self.events.extend((device, e) for e in events)
        return events

    def park(
        self, device: str, x: float, y: float, times: Iterable[float], kind: DeviceKind = DeviceKind.TRUCK
    ) -> None:
        for t in times:
            self.fix(device, t, x, y, kind)

    def alerts(self) -> list[Alert]:
        return [e for _, e in self.events if isinstance(e, Alert)]

    def updates(self) -> list[AlertUpdate]:
        return [e for _, e in self.events if isinstance(e, AlertUpdate)]


def every(start: float, stop: float, step: float) -> Iterator[float]:
    t = start
    while t <= stop:
        yield t
        t += step


def together(sim: Sim, a: tuple[str, float, float], b: tuple[str, float, float], times: Iterable[float]) -> None:
    for t in times:
        sim.fix(a[0], t, a[1], a[2])
        sim.fix(b[0], t + 1, b[1], b[2])


# -- firing ------------------------------------------------------------------------------------------------


def test_two_trucks_meeting_on_a_shoulder_raise_one_alert_and_close_it_when_one_leaves() -> None:
    sim = Sim()
    together(sim, ("TRK-B", 0, 0), ("TRK-A", 12, 5), every(0, 600, 30))
    alerts = sim.alerts()
    # each side raises it once, with the same id: the store keeps one
    assert len(alerts) == 2
    assert {dev for dev, e in sim.events if isinstance(e, Alert)} == {"TRK-A", "TRK-B"}
    assert len({a.id for a in alerts}) == 1
    first = alerts[0]
    assert first.kind == "rendezvous" and first.severity == Severity.HIGH
    assert first.device_id == "TRK-A"  # filed under the alphabetically first device
    assert first.key == meeting_key("TRK-B", "TRK-A", at(1))  # TRK-A stopped one second after TRK-B
    assert first.ts == at(330)  # first fix after more than 300 s together
    ev = first.evidence
    assert [d["id"] for d in ev["devices"]] == ["TRK-A", "TRK-B"]
    assert ev["together_since"] == at(1).isoformat()
    assert ev["duration_s"] == 329.0
    assert 12 < ev["distance_m"] < 14
    assert ev["thresholds"] == {"distance_m": 30.0, "min_duration_s": 300.0, "stale_s": 600.0}
    assert first.port == "testport" and first.fence_id == "P"
    assert sim.updates() == []

    # TRK-B drives off: both sides close the same alert
    sim.fix("TRK-B", 640, 400, 0)
    sim.fix("TRK-A", 641, 12, 5)
    ups = sim.updates()
    assert len(ups) == 2 and all(u.closes for u in ups)
    assert {u.alert.id for u in ups} == {first.id}
    by = {dev: u for dev, e in sim.events if isinstance(e, AlertUpdate) for u in [e]}
    assert by["TRK-B"].fields["reason"] == "moved_on" and by["TRK-B"].fields["duration_s"] == 639.0
    assert by["TRK-A"].fields["reason"] == "partner_moved_on" and by["TRK-A"].fields["ended_at"] == at(641).isoformat()
    # the update carries the alert exactly as raised by that side
    mine = next(e for dev, e in sim.events if dev == "TRK-B" and isinstance(e, Alert))
    assert by["TRK-B"].alert == mine

    # nothing more while apart
    n = len(sim.events)
    together(sim, ("TRK-B", 400, 0), ("TRK-A", 12, 5), every(700, 800, 30))
    assert len(sim.events) == n


def test_a_truck_beside_a_container_counts_and_a_new_stop_is_a_new_meeting() -> None:
    sim = Sim()
    sim.park("CONT-1", 0, 0, [0], DeviceKind.CONTAINER)
    for t in every(10, 400, 30):
        sim.fix("TRK-1", t, 20, 0)
        sim.fix("CONT-1", t + 2, 0, 0, DeviceKind.CONTAINER)
    assert len({a.id for a in sim.alerts()}) == 1
    kinds = {d["kind"] for d in sim.alerts()[0].evidence["devices"]}
    assert kinds == {"truck", "container"}
    # the truck leaves and comes back: a second meeting, a second alert
    sim.fix("TRK-1", 500, 600, 0)
    for t in every(520, 900, 30):
        sim.fix("TRK-1", t, 15, 0)
        sim.fix("CONT-1", t + 2, 0, 0, DeviceKind.CONTAINER)
    assert len({a.id for a in sim.alerts()}) == 2


def test_three_vehicles_give_one_alert_per_pair() -> None:
    sim = Sim()
    for t in every(0, 400, 20):
        sim.fix("A", t, 0, 0)
        sim.fix("B", t, 10, 0)
        sim.fix("C", t, 0, 10)
    ids = {a.id for a in sim.alerts()}
    assert len(ids) == 3
    pairs = {tuple(d["id"] for d in a.evidence["devices"]) for a in sim.alerts()}
    assert pairs == {("A", "B"), ("A", "C"), ("B", "C")}
    assert len(sim.alerts()) == 6  # every device raised each of its two meetings exactly once


def test_port_area_only_can_be_switched_off() -> None:
    outside = (5000.0, 5000.0)
    sim = Sim()
    together(sim, ("A", *outside), ("B", outside[0] + 10, outside[1]), every(0, 600, 30))
    assert sim.alerts() == []
    sim = Sim(detector=RendezvousDetector(Params(port_area_only=False)))
    together(sim, ("A", *outside), ("B", outside[0] + 10, outside[1]), every(0, 600, 30))
    assert len({a.id for a in sim.alerts()}) == 1
    assert sim.alerts()[0].port is None


def test_gps_jitter_around_the_distance_does_not_close_or_repeat_the_meeting() -> None:
    sim = Sim()
    together(sim, ("A", 0, 0), ("B", 20, 0), every(0, 400, 20))
    assert len(sim.alerts()) == 2
    for i, t in enumerate(every(420, 1200, 20)):
        sim.fix("A", t, 0, 0)
        sim.fix("B", t + 1, 20 + (25 if i % 2 else 0), 0)  # 20 m, 45 m, 20 m... stays within release_m
    assert len(sim.alerts()) == 2
    assert sim.updates() == []


# -- near-misses -------------------------------------------------------------------------------------------


def test_a_truck_passing_a_parked_truck_at_speed_does_not_fire() -> None:
    sim = Sim()
    sim.park("PARKED", 0, 0, every(0, 1200, 60))
    for t in every(1200, 1300, 2):
        sim.fix("PASSING", t, -750 + 15 * (t - 1200), 5)  # 15 m/s, 5 m from the parked truck at t = 1250
        if t % 10 == 0:
            sim.fix("PARKED", t + 1, 0, 0)
    assert sim.alerts() == []


def test_two_trucks_parked_31_m_apart_do_not_fire_but_29_m_do() -> None:
    sim = Sim()
    together(sim, ("A", 0, 0), ("B", 31, 0), every(0, 1800, 30))
    assert sim.alerts() == []
    sim = Sim()
    together(sim, ("A", 0, 0), ("B", 29, 0), every(0, 1800, 30))
    assert len({a.id for a in sim.alerts()}) == 1


def test_both_inside_a_terminal_do_not_fire_nor_one_on_each_side_of_its_edge() -> None:
    sim = Sim()
    together(sim, ("A", 1200, 0), ("B", 1210, 0), every(0, 1800, 30))
    assert sim.alerts() == []
    sim = Sim()
    together(sim, ("A", 1010, 0), ("B", 990, 0), every(0, 1800, 30))
    assert sim.alerts() == []


def test_together_299_s_does_not_fire_300_s_neither_301_s_does() -> None:
    def meet(last: float) -> list[Alert]:
        sim = Sim()
        for t in (0, 100, 200, last):
            sim.fix("A", t, 0, 0)
            sim.fix("B", t, 10, 0)
        sim.fix("A", last + 5, 300, 0)  # A drives away
        sim.fix("B", last + 6, 10, 0)
        return sim.alerts()

    assert meet(299) == []
    assert meet(300) == []
    assert len(meet(301)) == 2


def _box_and_truck(pairs: dict[str, str]) -> Sim:
    """A container and a truck standing 4 m apart on a corridor for 10 minutes (a gate queue backed up)."""
    sim = Sim(pairs=pairs)
    for t in every(0, 600, 30):
        sim.fix("TRK-1", t, 0, 0)
        sim.fix("CONT-1", t + 2, 4, 0, DeviceKind.CONTAINER)
    return sim


def test_a_container_standing_with_its_own_truck_is_not_a_meeting_whichever_side_knows_the_pair() -> None:
    assert len({a.id for a in _box_and_truck({}).alerts()}) == 1  # unpaired, the same scene is a meeting
    assert _box_and_truck({"CONT-1": "TRK-1", "TRK-1": "CONT-1"}).alerts() == []
    assert _box_and_truck({"CONT-1": "TRK-1"}).alerts() == []  # only the container's side is known
    assert _box_and_truck({"TRK-1": "CONT-1"}).alerts() == []  # only the truck's side is known


def test_a_truck_standing_with_another_trucks_container_is_still_a_meeting() -> None:
    sim = _box_and_truck({"CONT-1": "TRK-9", "TRK-9": "CONT-1", "TRK-1": "CONT-7"})
    alerts = sim.alerts()
    assert len({a.id for a in alerts}) == 1
    assert {d["id"] for d in alerts[0].evidence["devices"]} == {"TRK-1", "CONT-1"}


def test_a_tick_skips_the_devices_own_partner_known_from_its_world_position() -> None:
    def raised(partner: str | None) -> list[Event]:
        world = World()
        lon_a, lat_a = (float(v) for v in PROJ.to_lonlat(0, 0))
        lon_b, lat_b = (float(v) for v in PROJ.to_lonlat(5, 0))
        world.update(Position("A", DeviceKind.TRUCK, at(250), lon_a, lat_a, at(0), False, partner, at(0)))
        world.update(Position("B", DeviceKind.CONTAINER, at(260), lon_b, lat_b, at(20), outside_since=at(20)))
        _, events = _tick(world, "A", Fix(at(250), lon_a, lat_a), at(0), at(400), None)
        return events

    assert len(raised(None)) == 1
    assert raised("B") == []


def _xy(x: float, y: float) -> tuple[float, float]:
    lon, lat = (float(v) for v in PROJ.to_lonlat(x, y))
    return lon, lat


@pytest.mark.parametrize(
    ("speed", "centre", "fires"),
    [
        (None, (5.0, 0.0), True),  # standing at its stop
        (0.0, None, True),  # no centre known: the stop is where its fix is
        (12.0, (5.0, 0.0), False),  # reports road speed: driving off, its stop not yet ended
        (None, (600.0, 0.0), False),  # its stop is 600 m back: this fix is the departure passing by
    ],
)
def test_a_neighbours_first_fix_after_leaving_its_stop_does_not_stand_beside_anyone(
    speed: float | None, centre: tuple[float, float] | None, fires: bool
) -> None:
    # A sparse tracker (one fix every two minutes) that stood ten minutes on its own shoulder drives past a parked
    # truck: its first fix outside the stop lies 5 m from the truck and still carries the stop's start, since the
    # stationary model holds one outside fix as a possible outlier (edge-style benchmark, Santos seed 1)
    world = World()
    lon_a, lat_a = _xy(0, 0)
    world.update(Position("A", DeviceKind.TRUCK, at(250), lon_a, lat_a, at(0), outside_since=at(0)))
    world.update(
        Position(
            "B",
            DeviceKind.TRUCK,
            at(260),
            *_xy(5, 0),
            at(20),
            outside_since=at(20),
            speed=speed,
            centre=None if centre is None else _xy(*centre),
        )
    )
    _, events = _tick(world, "A", Fix(at(250), lon_a, lat_a), at(0), at(400), None)
    assert len(events) == (1 if fires else 0)


def test_the_devices_own_departure_fix_does_not_start_a_meeting() -> None:
    def raised(own_speed: float | None) -> list[Event]:
        world = World()
        lon_a, lat_a = _xy(0, 0)
        world.update(
            Position("A", DeviceKind.TRUCK, at(250), lon_a, lat_a, at(0), outside_since=at(0), speed=own_speed)
        )
        world.update(Position("B", DeviceKind.TRUCK, at(260), *_xy(5, 0), at(20), outside_since=at(20)))
        return _tick(world, "A", Fix(at(250), lon_a, lat_a), at(0), at(400), None)[1]

    assert len(raised(None)) == 1
    assert raised(11.0) == []


def test_stands_at_fix_needs_the_fix_at_its_stop_and_no_road_speed() -> None:
    lon, lat = _xy(0, 0)
    assert stands_at_fix(lon, lat, None, at(0), _xy(40, 0))
    assert not stands_at_fix(lon, lat, None, at(0), _xy(60, 0))
    assert not stands_at_fix(lon, lat, 2.5, at(0), None)
    assert stands_at_fix(lon, lat, 1.5, at(0), None)
    assert not stands_at_fix(lon, lat, 0.0, None, None)  # moving: no stop at all


def test_a_neighbour_whose_tracker_went_quiet_long_ago_is_ignored() -> None:
    sim = Sim()
    sim.park("QUIET", 0, 0, [0, 30])  # stationary, then nothing more
    sim.park("LATE", 10, 0, every(700, 1500, 30))  # arrives after QUIET's fix is 600 s old
    assert sim.alerts() == []


# -- ticks, state, efficiency ------------------------------------------------------------------------------


def _tick(world: World, device: str, last: Fix, since: datetime, now: datetime, state: Any) -> tuple[Any, list[Event]]:
    fences = INDEX.membership(last.lon, last.lat, frozenset())
    ctx = TickContext(device, DeviceKind.TRUCK, last, fences, Motion(since, outside_since=since), INDEX, world)
    return RendezvousDetector().on_tick(state, now, ctx)


def test_a_tick_raises_a_meeting_of_sparse_reporters_and_closes_it_when_the_partner_goes_quiet() -> None:
    world = World()
    lon_a, lat_a = (float(v) for v in PROJ.to_lonlat(0, 0))
    lon_b, lat_b = (float(v) for v in PROJ.to_lonlat(15, 0))
    last_a = Fix(at(250), lon_a, lat_a)
    world.update(Position("A", DeviceKind.TRUCK, at(250), lon_a, lat_a, at(0), outside_since=at(0)))
    world.update(Position("B", DeviceKind.TRUCK, at(260), lon_b, lat_b, at(20), outside_since=at(20)))
    state, events = _tick(world, "A", last_a, at(0), at(300), None)
    assert events == []  # 280 s together
    state, events = _tick(world, "A", last_a, at(0), at(330), state)
    assert len(events) == 1 and isinstance(events[0], Alert)
    assert events[0].ts == at(330) and events[0].evidence["together_since"] == at(20).isoformat()
    state, events = _tick(world, "A", last_a, at(0), at(400), state)
    assert events == []  # raised once
    state, events = _tick(world, "A", last_a, at(0), at(861), state)  # B's fix is now 601 s old, and A's too
    assert len(events) == 1 and isinstance(events[0], AlertUpdate) and events[0].closes
    assert events[0].fields["reason"] == "signal_lost"


def test_state_round_trips_and_is_empty_when_nothing_is_remembered() -> None:
    sim = Sim()
    together(sim, ("A", 0, 0), ("B", 31, 0), every(0, 600, 30))
    assert sim.devices["A"].state is None
    together(sim, ("C", 100, 100), ("D", 110, 100), every(0, 600, 30))
    state = sim.devices["C"].state
    assert state is not None and len(state.open) == 1
    assert stored(state) == state


class _NoScanWorld(World):
    def __iter__(self) -> Iterator[Position]:
        raise AssertionError("the detector scanned every device")


@pytest.mark.parametrize("n", [2000])
def test_only_neighbours_are_examined(n: int) -> None:
    sim = Sim(world=_NoScanWorld())
    for i in range(n):
        lon, lat = (float(v) for v in PROJ.to_lonlat(-2900 + (i % 50) * 100, -2900 + (i // 50) * 100))
        sim.world.update(Position(f"X{i:05d}", DeviceKind.TRUCK, at(0), lon, lat, at(0)))
    together(sim, ("A", 25, 25), ("B", 35, 25), every(0, 400, 30))
    assert {tuple(d["id"] for d in a.evidence["devices"]) for a in sim.alerts()} >= {("A", "B")}


@pytest.mark.parametrize("speed", [None, 8.0])
def test_standing_together_while_reporting_road_speed_is_still_a_meeting(speed: float | None) -> None:
    """The insider's trick against the meeting rule: both trackers report 8 m/s on every fix while they stand
    side by side in a vacant lot. The reported speed counts only where the position bears it out (``rules``)."""
    from tests.unit.detector_helpers import RESTRICTED, SANTOS, at, offset
    from tracker.core.engine import Engine
    from tracker.core.pipeline import Pipeline

    engine = Engine(Pipeline(SANTOS), kinds={"TRK-1": DeviceKind.TRUCK, "BOX-1": DeviceKind.CONTAINER})
    for s in range(0, 420, 20):
        engine.run(
            [
                Ping("TRK-1", at(s), *offset(RESTRICTED, 0.0, 0.0), speed=speed, received=at(s)),
                Ping("BOX-1", at(s + 1), *offset(RESTRICTED, 3.0, 2.0), speed=speed, received=at(s + 1)),
            ]
        )
    engine.run([], until=at(480))
    meetings = [e.event for e in engine.emitted if isinstance(e.event, Alert) and e.event.kind == "rendezvous"]
    assert len({a.id for a in meetings}) == 1  # one meeting (raised once per device's judgement)
    assert {d["id"] for d in meetings[0].evidence["devices"]} == {"TRK-1", "BOX-1"}
