"""Container/truck pairing as timestamped sequences: what must fire, and what must not."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from geofences import LocalProjection, haversine_m
from tests.unit import synthetic
from tests.unit.detector_helpers import stored
from tracker.core.detector import FixContext, Motion, TickContext
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Event, Ping, Severity
from tracker.core.pairing import MOVING_UNPAIRED, SEPARATED, PairingDetector, PairingState
from tracker.core.state import Fix
from tracker.core.world import Position, World

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
PROJ = LocalProjection(-77.14, -12.05)  # Callao
DET = PairingDetector()
C, K = DeviceKind.CONTAINER, DeviceKind.TRUCK


INDEX = synthetic.index(
    PROJ,
    "callao",
    [
        ("P", "Port area", "port_boundary", (-5000, -5000, 5000, 5000)),
        ("YARD", "Container yard", "terminal", (-2000, -300, -1000, 300)),
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
    motion: Motion = field(default_factory=lambda: Motion(None))
    state: Any = None


@dataclass
class Sim:
    """A stand-in for the pipeline: fences, a simple motion rule (50 m, 30 s), the world, the detector."""

    world: World = field(default_factory=World)
    devices: dict[str, _Dev] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    def fix(
        self, device: str, seconds: float, x: float, y: float, kind: DeviceKind = C, speed: float | None = None
    ) -> list[Event]:
        dev = self.devices.setdefault(device, _Dev(kind))
        lon, lat = (float(v) for v in PROJ.to_lonlat(x, y))
        ping = Ping(device_id=device, ts=at(seconds), lon=lon, lat=lat, speed=speed)
        fences = INDEX.membership(lon, lat, dev.fences)
        # stationary: every fix since the anchor within 50 m of it, for at least 30 s
        if dev.anchor is not None and haversine_m(dev.anchor.lon, dev.anchor.lat, lon, lat) <= 50.0:
            dev.run += 1
        else:
            dev.anchor, dev.run = Fix.of(ping), 1
        assert dev.anchor is not None
        settled = dev.run >= 2 and (ping.ts - dev.anchor.ts).total_seconds() >= 30
        dev.motion = Motion(dev.anchor.ts if settled else None, dev.anchor.lon, dev.anchor.lat)
        ctx = FixContext(device, dev.kind, dev.last, dev.fences, fences, dev.motion, INDEX, self.world, None)
        dev.state, events = DET.on_fix(dev.state, ping, ctx)
        stored(dev.state)
        stationary = dev.motion.stationary_since
        self.world.update(Position(device, dev.kind, ping.ts, lon, lat, stationary, ctx.authorized_stop()))
        dev.last, dev.fences = Fix.of(ping), fences
        self.events.extend(events)
        return events

    def tick(self, device: str, seconds: float) -> list[Event]:
        dev = self.devices[device]
        ctx = TickContext(device, dev.kind, dev.last, dev.fences, dev.motion, INDEX, self.world)
        dev.state, events = DET.on_tick(dev.state, at(seconds), ctx)
        self.events.extend(events)
        return events

    def pair(self, container: str, truck: str, seconds: float) -> None:
        dev = self.devices.setdefault(container, _Dev(C))
        dev.state = DET.pair(dev.state, truck, at(seconds))

    def unpair(self, container: str, seconds: float) -> None:
        dev = self.devices[container]
        dev.state = DET.unpair(dev.state, at(seconds))

    def truck(self, container: str) -> str | None:
        return DET.paired_truck(self.devices[container].state)

    def alerts(self, kind: str | None = None) -> list[Alert]:
        return [e for e in self.events if isinstance(e, Alert) and (kind is None or e.kind == kind)]

    def updates(self) -> list[AlertUpdate]:
        return [e for e in self.events if isinstance(e, AlertUpdate)]


def every(start: float, stop: float, step: float) -> Iterator[float]:
    t = start
    while t <= stop:
        yield t
        t += step


def park(
    sim: Sim, device: str, x: float, y: float, start: float, stop: float, step: float, kind: DeviceKind = C
) -> None:
    for t in every(start, stop, step):
        sim.fix(device, t, x, y, kind)


def convoy(
    sim: Sim, truck: str, container: str, start: float, stop: float, speed: float, x0: float, gap: float
) -> None:
    """The truck leads, the container follows ``gap`` metres behind; both report every 5 s."""
    for t in every(start, stop, 5):
        x = x0 + speed * (t - start)
        sim.fix(truck, t, x, 0, K)
        sim.fix(container, t + 1, x - gap + speed, 0)


# -- container_separated -----------------------------------------------------------------------------------


def test_a_declared_pair_separating_raises_once_and_the_rejoin_closes_it() -> None:
    sim = Sim()
    park(sim, "CONT", 0, 0, 0, 60, 30)
    park(sim, "TRK", 10, 0, 0, 60, 30, K)
    sim.pair("CONT", "TRK", 60)
    convoy(sim, "TRK", "CONT", 100, 400, 10.0, 0, 8)  # 3 km together
    assert sim.events == []
    # the container is dropped on a road shoulder; the truck drives on
    stop_x = 10.0 * 300 - 8 + 10
    for t in every(405, 600, 5):
        sim.fix("TRK", t, stop_x + 10.0 * (t - 400), 0, K)
        sim.fix("CONT", t + 1, stop_x, 0)
    seps = sim.alerts(SEPARATED)
    assert len(seps) == 1
    sep = seps[0]
    assert sep.severity == Severity.HIGH and sep.device_id == "CONT"
    assert sep.evidence["truck"]["id"] == "TRK" and sep.evidence["pairing"]["inferred"] is False
    assert sep.evidence["distance_m"] > 100
    # noticed within a few fixes: the first reading over 100 m (416) is confirmed by the next one (421)
    assert sep.ts == at(421)
    assert sep.evidence["first_reading"]["at"] == at(416).isoformat()
    assert sim.alerts(MOVING_UNPAIRED) == []
    # the truck comes back for it
    for t in every(700, 760, 5):
        sim.fix("TRK", t, stop_x + 5, 0, K)
        sim.fix("CONT", t + 1, stop_x, 0)
    ups = sim.updates()
    assert len(ups) == 1 and ups[0].closes and ups[0].alert == sep
    assert ups[0].fields["reason"] == "rejoined" and ups[0].fields["distance_m"] < 50
    assert len(sim.alerts()) == 1


def test_a_truck_fix_60_s_older_than_the_container_fix_is_compared_at_its_own_time() -> None:
    sim = Sim()
    sim.pair("CONT", "TRK", 0)
    naive: list[float] = []
    for t in every(0, 600, 5):
        x = 1.9 * t  # a slow convoy inside the port
        sim.fix("CONT", t, x - 3, 0)
        if t % 60 == 0:
            sim.fix("TRK", t, x, 0, K)  # the truck reports once a minute, just after the container
        truck = sim.world.get("TRK")
        cont = sim.world.get("CONT")
        assert truck is not None and cont is not None
        naive.append(haversine_m(truck.lon, truck.lat, cont.lon, cont.lat))
    assert max(naive) > 100  # the momentary reading a naive comparison would act on
    assert sim.alerts() == []


def test_a_stale_truck_position_draws_no_conclusion_but_is_noted() -> None:
    sim = Sim()
    sim.pair("CONT", "TRK", 0)
    sim.fix("TRK", 0, 500, 0, K)  # far away, but 200 s before the container fixes below
    park(sim, "CONT", 0, 0, 200, 400, 20)
    assert sim.alerts() == []
    state = sim.devices["CONT"].state or PairingState()
    assert state.unverified_since == at(200)
    # a fresh fix of the truck still far away settles it, and the alert says since when it was unverified
    sim.fix("TRK", 410, 500, 0, K)
    sim.fix("CONT", 415, 0, 0)
    assert sim.alerts() == []  # one reading is not yet a separation
    sim.fix("CONT", 420, 0, 0)
    assert sim.alerts() == []  # the same truck fix again: no independent second reading
    sim.fix("TRK", 425, 500, 0, K)
    sim.fix("CONT", 430, 0, 0)
    (sep,) = sim.alerts(SEPARATED)
    assert sep.evidence["unverified_since"] == at(200).isoformat()


def test_trackers_reporting_every_five_minutes_in_step_still_see_a_dropped_box() -> None:
    """Both trackers at a five-minute rhythm, the truck's fix always delivered a second after the box's: no truck
    fix is ever within ``stale_s`` of a box fix, but the box has stood at one spot since before each of them."""

    def run(away: bool) -> Sim:
        sim = Sim()
        sim.pair("CONT", "TRK", 0)
        for t in (0, 300):  # dropped on the shoulder, the truck still beside it
            sim.fix("CONT", t, 0, 0)
            sim.fix("TRK", t + 1, 5, 0, K)
        for i, t in enumerate((600, 900, 1200)):
            sim.fix("CONT", t, 0, 0)
            sim.fix("TRK", t + 1, 800 + 400 * i if away else 5, 0, K)
        return sim

    (sep,) = run(away=True).alerts(SEPARATED)
    assert sep.ts == at(1200)  # readings at 900 (truck fix of 601) and 1200 (of 901): no fix shared
    assert sep.evidence["lag_s"] == 299.0
    assert run(away=False).alerts() == []


def test_a_truck_fix_a_fraction_of_a_second_before_the_boxs_stop_began_still_counts() -> None:
    """The same five-minute rhythm, the truck's fix 0.4 s ahead of the box's: the box's stop began just after it, so
    the box was within 0.4 s of driving (10 m at 25 m/s) of its stop then, and the reading counts with that slack."""
    sim = Sim()
    sim.pair("CONT", "TRK", 0)
    sim.fix("CONT", 0, -300, 0)
    sim.fix("TRK", 0.6, -295, 0, K)
    for i, t in enumerate((300, 600, 900)):
        sim.fix("CONT", t, 0, 0)  # the box stands from 300 on
        sim.fix("TRK", t - 0.4, 1500 + 300 * i, 0, K)  # taken 0.4 s before, delivered after: it drove on
    (sep,) = sim.alerts(SEPARATED)
    assert sep.ts == at(900)  # first reading at 600 (the truck's fix of 299.6), second at 900 (of 899.6)
    assert sep.evidence["first_reading"]["at"] == at(600).isoformat()


def test_a_reading_by_the_stop_centre_for_a_fix_outside_the_stop_shares_the_fix_before() -> None:
    """Truck and box pull up together; the box's first fix there is a multipath jump 160 m back, which the stationary
    model takes into a stop (one reading "apart"). Its next fix, beside the truck, lies outside that stop and is
    compared by the stop's centre, which rests on the jump: no independent second reading, no separation."""
    world = World()
    t_lon, t_lat = (float(v) for v in PROJ.to_lonlat(0, 0))
    c_lon, c_lat = (float(v) for v in PROJ.to_lonlat(-160, 0))
    stop = Motion(at(0), c_lon, c_lat, 15.0)  # the stop the jump made: its fixes are 160 m back

    def run(second_x: float) -> list[Alert]:
        state: PairingState | None = DET.pair(None, "TRK", at(0))
        events: list[Event] = []
        previous: Fix | None = None
        for t, x in ((30, -160.0), (60, second_x)):
            world.update(Position("TRK", K, at(t - 5), t_lon, t_lat, at(0), speed=0.0, centre=(t_lon, t_lat)))
            lon, lat = (float(v) for v in PROJ.to_lonlat(x, 0))
            ctx = FixContext("BOX", C, previous, frozenset({"P"}), frozenset({"P"}), stop, INDEX, world, "callao")
            state, out = DET.on_fix(state, Ping("BOX", at(t), lon, lat, speed=0.0), ctx)
            events.extend(out)
            previous = Fix(at(t), lon, lat)
        return [e for e in events if isinstance(e, Alert)]

    assert run(5.0) == []
    # the same second fix inside the stop (the box really stands 160 m from its truck) is a second reading
    assert [a.kind for a in run(-159.0)] == [SEPARATED]


def test_one_truck_outlier_never_confirms_itself() -> None:
    """A truck fix thrown 250 m off while the container reports twice is one reading, not two."""
    sim = Sim()
    sim.pair("CONT", "TRK", 0)
    park(sim, "TRK", 0, 0, 0, 300, 60, K)
    park(sim, "CONT", 0, 5, 0, 300, 10)
    sim.fix("TRK", 360, 250, 0, K)  # multipath jump of the parked truck
    sim.fix("CONT", 365, 0, 5)
    sim.fix("CONT", 375, 0, 5)
    sim.fix("CONT", 385, 0, 5)
    sim.fix("TRK", 420, 0, 0, K)  # back where it stands
    sim.fix("CONT", 425, 0, 5)
    assert sim.alerts(SEPARATED) == []


def test_an_unknown_truck_is_not_a_separation() -> None:
    sim = Sim()
    sim.pair("CONT", "NEVER-SEEN", 0)
    park(sim, "CONT", 0, 0, 0, 300, 30)
    assert sim.alerts() == []


def test_unpairing_through_the_api_ends_an_open_separation() -> None:
    sim = Sim()
    sim.pair("CONT", "TRK", 0)
    park(sim, "CONT", 0, 0, 0, 60, 30)
    sim.fix("TRK", 61, 400, 0, K)
    sim.fix("CONT", 62, 0, 0)
    sim.fix("TRK", 64, 400, 0, K)
    sim.fix("CONT", 65, 0, 0)
    assert len(sim.alerts(SEPARATED)) == 1
    sim.unpair("CONT", 70)
    sim.fix("CONT", 90, 0, 0)
    (up,) = sim.updates()
    assert up.closes and up.fields["reason"] == "unpaired"
    assert sim.truck("CONT") is None


def test_a_sparse_container_is_judged_on_its_own_fixes_not_on_ticks() -> None:
    # a silent parked container whose truck drives off may have been picked up: ticks conclude nothing,
    # its next fixes (still where it stood, the truck far away) do, on the second reading
    sim = Sim()
    sim.pair("CONT", "TRK", 0)
    park(sim, "CONT", 0, 0, 0, 300, 300)  # parked trackers report every five minutes
    for t in every(300, 600, 10):
        sim.fix("TRK", t, 5 + 8 * (t - 300), 0, K)
    assert all(sim.tick("CONT", t) == [] for t in (405, 411, 500, 590))
    sim.fix("CONT", 600, 0, 0)
    assert sim.alerts(SEPARATED) == []  # a first reading
    for t in every(610, 900, 10):
        sim.fix("TRK", t, 5 + 8 * 300, 0, K)
    sim.fix("CONT", 900, 0, 0)
    (sep,) = sim.alerts(SEPARATED)
    assert sep.ts == at(900) and sep.evidence["distance_m"] > 2000
    assert sim.tick("CONT", 905) == []


def test_a_container_leaving_with_its_parked_truck_is_compared_at_the_trucks_fix_time() -> None:
    # the truck's last fix was taken while it was still parked; since then it drove off with the container
    def run(truck_leaves_with_it: bool) -> Sim:
        sim = Sim()
        sim.pair("CONT", "TRK", 0)
        park(sim, "TRK", 5, 0, 0, 90, 30, K)
        park(sim, "CONT", 0, 0, 0, 95, 5)
        for t in every(100, 150, 5):  # the container moves off at 10 m/s; the truck stays silent meanwhile
            sim.fix("CONT", t, 10.0 * (t - 95), 0)
        if not truck_leaves_with_it:  # near-miss's opposite: the truck really is still parked where it was
            sim.fix("TRK", 151, 5, 0, K)
            sim.fix("CONT", 155, 10.0 * 60, 0)
            sim.fix("TRK", 158, 5, 0, K)  # a second, independent reading needs a new fix of both
            sim.fix("CONT", 160, 10.0 * 65, 0)
        return sim

    together = run(True)
    truck = together.world.get("TRK")
    cont = together.world.get("CONT")
    assert truck is not None and cont is not None and truck.stationary_since is not None
    assert haversine_m(truck.lon, truck.lat, cont.lon, cont.lat) > 300  # what a naive comparison would act on
    assert together.alerts() == []
    left_behind = run(False)
    (sep,) = left_behind.alerts(SEPARATED)
    assert sep.evidence["distance_m"] > 500


def test_a_truck_whose_last_fix_left_its_stop_is_compared_at_that_fix_not_at_the_old_stop_centre() -> None:
    # the pair waits in a gate queue, drives 270 m to the inspection area and parks there; the truck reports every
    # 60 s, so its first fix at the inspection area is still held outside its gate-queue stop (a possible outlier)
    def run(truck_really_left: bool) -> Sim:
        sim = Sim()
        sim.pair("CONT", "TRK", 0)
        park(sim, "TRK", 0, 0, 0, 240, 60, K)
        park(sim, "CONT", 2, 0, 0, 270, 30)
        for t in (300.0, 330.0, 360.0, 390.0):
            sim.fix("CONT", t, 270 if truck_really_left else 2, 0)  # the box parks at the inspection area
            if t in (300.0, 360.0):
                sim.fix("TRK", t + 1, 268, 0, K)
                gate = PROJ.to_lonlat(0.0, 0.0)
                truck = sim.world.get("TRK")
                assert truck is not None
                # what the pipeline publishes: still the gate stop (one fix outside it), centre back at the gate
                sim.world.update(
                    replace(truck, stationary_since=at(0), centre=(float(gate[0]), float(gate[1])), speed=0.0)
                )
        return sim

    assert run(True).alerts(SEPARATED) == []
    # the same centres with the box left behind at the gate: compared at the truck's fix, it is 266 m away
    (sep,) = run(False).alerts(SEPARATED)
    assert sep.evidence["distance_m"] > 250


def test_a_single_outlier_fix_is_not_a_separation_but_two_readings_in_a_row_are() -> None:
    sim = Sim()
    sim.pair("CONT", "TRK", 0)
    park(sim, "CONT", 0, 0, 0, 60, 30)
    park(sim, "TRK", 5, 0, 0, 60, 30, K)
    convoy(sim, "TRK", "CONT", 100, 300, 8.0, 0, 5)
    sim.fix("TRK", 305, 8.0 * 205, 0, K)
    sim.fix("CONT", 306, 8.0 * 206 - 5, 275)  # multipath: one fix 275 m off the road
    sim.fix("TRK", 310, 8.0 * 210, 0, K)
    sim.fix("CONT", 311, 8.0 * 211 - 5, 0)  # back on the truck
    convoy(sim, "TRK", "CONT", 315, 400, 8.0, 8.0 * 215, 5)
    assert sim.alerts() == []
    assert (sim.devices["CONT"].state or PairingState()).suspect is None  # the good reading cleared the outlier
    # two readings in a row are a separation
    sim.fix("TRK", 405, 8.0 * 305, 0, K)
    sim.fix("CONT", 406, 8.0 * 306 - 5, 275)
    sim.fix("TRK", 410, 8.0 * 310, 0, K)
    assert sim.alerts() == []
    sim.fix("CONT", 411, 8.0 * 311 - 5, 280)
    (sep,) = sim.alerts(SEPARATED)
    assert sep.ts == at(411) and sep.evidence["first_reading"]["at"] == at(406).isoformat()


# -- inference ---------------------------------------------------------------------------------------------


def test_moving_together_for_two_minutes_infers_the_pair_and_the_closest_truck_wins() -> None:
    sim = Sim()
    park(sim, "CONT", 0, 0, 0, 60, 30)
    for t in every(100, 260, 5):
        x = 10.0 * (t - 100)
        sim.fix("FAR", t, x + 20, 5, K)
        sim.fix("NEAR", t, x + 10, 0, K)
        sim.fix("CONT", t + 1, x + 10, 0)
        if t < 215:
            assert sim.truck("CONT") is None
    assert sim.truck("CONT") == "NEAR"
    state = sim.devices["CONT"].state
    assert state is not None and state.inferred is True
    assert sim.events == []  # moving with a truck alongside is no alert


def test_standing_next_to_a_truck_in_a_yard_infers_nothing() -> None:
    sim = Sim()
    for t in every(0, 600, 10):
        sim.fix("TRK", t, -1500, 0, K)
        sim.fix("CONT", t + 1, -1490, 0)
    assert sim.truck("CONT") is None
    assert sim.events == []


def test_an_inferred_haul_dropped_in_a_terminal_ends_silently_but_on_a_shoulder_it_alerts() -> None:
    def haul_and_drop(drop_x: float) -> Sim:
        sim = Sim()
        park(sim, "CONT", drop_x - 1600, 0, 0, 60, 30)
        convoy(sim, "TRK", "CONT", 100, 260, 10.0, drop_x - 1600, 5)
        assert sim.truck("CONT") == "TRK"
        for t in every(265, 500, 5):
            sim.fix("TRK", t, drop_x + 6 * (t - 260), 50, K)
            sim.fix("CONT", t + 1, drop_x - 5, 0)
        return sim

    in_yard = haul_and_drop(-1500 + 1600 - 1600 + 100)  # the convoy ends inside the yard (x in -2000..-1000)
    assert in_yard.alerts() == []
    assert in_yard.truck("CONT") is None
    on_shoulder = haul_and_drop(0)
    assert [a.kind for a in on_shoulder.alerts()] == [SEPARATED]
    assert on_shoulder.alerts()[0].evidence["pairing"]["inferred"] is True


# -- container_moving_unpaired ----------------------------------------------------------------------------


def test_a_container_leaving_its_yard_alone_raises_once_per_movement() -> None:
    sim = Sim()
    park(sim, "CONT", 0, 0, 0, 300, 30)
    assert sim.events == []  # parked, no truck: nothing to say
    for t in every(310, 400, 5):
        sim.fix("CONT", t, 4.0 * (t - 300), 0)
    (mov,) = sim.alerts(MOVING_UNPAIRED)
    assert mov.severity == Severity.HIGH and mov.evidence["moved_m"] > 50
    assert mov.key == mov.evidence["moving_since"]
    park(sim, "CONT", 400, 0, 420, 600, 30)  # stops again
    (up,) = sim.updates()
    assert up.closes and up.alert == mov and up.fields["reason"] == "stopped"
    for t in every(610, 700, 5):
        sim.fix("CONT", t, 400 - 4.0 * (t - 600), 0)
    assert len(sim.alerts(MOVING_UNPAIRED)) == 2


def test_a_parked_container_jittering_in_its_yard_is_not_moving() -> None:
    sim = Sim()
    for i, t in enumerate(every(0, 1200, 10)):
        sim.fix("CONT", t, -1500 + (12 if i % 2 else -12), 8 if i % 3 else -8)
    assert sim.events == []


def test_a_container_moving_with_its_truck_15_m_away_does_not_fire() -> None:
    sim = Sim()
    park(sim, "CONT", 0, 0, 0, 60, 30)
    convoy(sim, "TRK", "CONT", 100, 500, 8.0, 0, 15)
    assert sim.events == []


def test_explicitly_unpaired_container_moving_alone_fires() -> None:
    sim = Sim()
    sim.pair("CONT", "TRK", 0)
    park(sim, "CONT", 0, 0, 0, 120, 30)
    park(sim, "TRK", 10, 0, 0, 120, 30, K)
    sim.unpair("CONT", 130)
    for t in every(140, 200, 5):
        sim.fix("CONT", t, 5.0 * (t - 130), 0)
    (mov,) = sim.alerts(MOVING_UNPAIRED)
    assert mov.evidence["unpaired_at"] == at(130).isoformat()


def test_trucks_and_seals_are_not_this_detectors_business() -> None:
    sim = Sim()
    for t in every(0, 300, 5):
        sim.fix("TRK", t, 10.0 * t, 0, K)
    assert sim.events == []
    assert sim.devices["TRK"].state is None


def test_a_sparse_box_that_drove_off_with_its_truck_is_not_placed_on_the_straight_line_between_its_fixes() -> None:
    # the box reports every 5 min, the truck every minute; they wait together, then drive off at 10 m/s at 240 s.
    # On the straight line from the box's fix at 0 s to its fix at 300 s, the box would be 240 m ahead of the truck
    # at the truck's fix at 270 s; it could have been anywhere within 10 m/s x 30 s of its 300 s fix.
    def run(box_moves: bool) -> Sim:
        sim = Sim()
        sim.pair("CONT", "TRK", 0)
        sim.fix("CONT", 0, 0, 0, speed=0.0)
        for t in every(30, 270, 60):
            sim.fix("TRK", t, max(0.0, 10.0 * (t - 240)), 0, K)
        if box_moves:
            sim.fix("CONT", 300, 600, 0, speed=10.0)
        else:  # near miss: the box really stayed behind, and says so with its own speed
            sim.fix("CONT", 300, 0, 0, speed=0.0)
        return sim

    rode = run(True)
    assert (rode.devices["CONT"].state or PairingState()).suspect is None and rode.alerts() == []
    left = run(False)
    suspect = (left.devices["CONT"].state or PairingState()).suspect
    assert suspect is not None and suspect["distance_m"] > 250


def test_a_box_moving_alone_outside_the_port_is_not_watched() -> None:
    # delivered: on the public road beyond the port boundary (x > 5000) nobody declares its truck any more
    sim = Sim()
    park(sim, "CONT", 6000, 0, 0, 300, 30)
    for t in every(310, 400, 5):
        sim.fix("CONT", t, 6000 + 4.0 * (t - 300), 0)
    assert sim.alerts(MOVING_UNPAIRED) == []
