"""The post-clearance access window as timestamped sequences on the real Santos fence set.

Fixes come every 10 s and ticks every 5 s unless a test says otherwise, so the times at
which alerts appear are the detection latencies the detector promises (at most one
reporting interval after a threshold is crossed).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, Point
from shapely.ops import substring

from geofences import Fence, FenceIndex, FenceKind, LocalProjection, distance_m, load_port
from tests.unit.detector_helpers import stored
from tracker.core import motion
from tracker.core.detector import FixContext, Motion, TickContext, in_authorized_zone
from tracker.core.inspection import ROUTE_KINDS, AccessWindowDetector, AccessWindowParams
from tracker.core.model import (
    Alert,
    AlertUpdate,
    DeviceKind,
    Event,
    Inspection,
    InspectionResult,
    Ping,
    Severity,
)
from tracker.core.state import Fix
from tracker.core.world import Position, World

SANTOS = load_port("santos")
INDEX = FenceIndex(SANTOS.fences)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DEV = "CTR-1"
CONTAINER_NO = "CSQU3054383"
SEAL = "BR-0042317"
FACILITY = "Intertek Alemoa"

Point2 = tuple[float, float]


def fence(fence_id: str) -> Fence:
    return SANTOS.by_id(fence_id)


def rep(fence_id: str) -> Point2:
    p = fence(fence_id).geometry.representative_point()
    return (float(p.x), float(p.y))


def offset(origin: Point2, dx: float, dy: float) -> Point2:
    lon, lat = LocalProjection(*origin).to_lonlat(dx, dy)
    return (float(lon), float(lat))


def kinds_at(pt: Point2) -> set[FenceKind]:
    return {INDEX.get(f).kind for f in INDEX.fences_at([pt[0]], [pt[1]])[0]}


def clearance_m(pt: Point2) -> float:
    """Distance to the nearest fence other than the port boundary."""
    return min(distance_m(f.geometry, *pt) for f in SANTOS if f.kind is not FenceKind.PORT_BOUNDARY)


def densify(waypoints: Sequence[Point2], step_m: float) -> list[Point2]:
    """Points every ``step_m`` metres along the polyline through ``waypoints``, ends included."""
    proj = LocalProjection(*waypoints[0])
    xs, ys = proj.to_xy([p[0] for p in waypoints], [p[1] for p in waypoints])
    line = LineString(list(zip(xs.tolist(), ys.tolist(), strict=True)))
    n = max(1, round(line.length / step_m))
    out: list[Point2] = []
    for i in range(n + 1):
        p = line.interpolate(line.length * i / n)
        lon, lat = proj.to_lonlat(p.x, p.y)
        out.append((float(lon), float(lat)))
    return out


def along(fence_id: str, start: Point2, end: Point2) -> list[Point2]:
    line = fence(fence_id).centerline
    assert line is not None
    line = shapely.line_merge(line)
    assert isinstance(line, LineString)
    a, b = line.project(Point(start)), line.project(Point(end))
    part = substring(line, min(a, b), max(a, b))
    coords = [(float(x), float(y)) for x, y in part.coords]
    return coords if a <= b else coords[::-1]


def inside(a: str, b: str) -> Point2:
    p = fence(a).geometry.intersection(fence(b).geometry).representative_point()
    return (float(p.x), float(p.y))


# ---- places, all taken from the real fence set -------------------------------------------------
INSPECTION = rep("santos-inspection-41")  # Intertek, Alemoa; also inside restricted-14 (the data overlap)
TERMINAL = rep("santos-terminal-34")  # Santos Brasil
PARKING = rep("santos-parking-01")
RESTRICTED = rep("santos-restricted-11")  # vacant lease area DSP 45, next to the inspection area
QUAY = rep("santos-quay-34")  # BTP 01
# waste ground inside the port boundary between the Alemoa inspection area and the pier
VACANT_ORIGIN = (-46.36263, -23.921597)
VACANT = [offset(VACANT_ORIGIN, x, 50.0) for x in (100.0, 200.0, 300.0)]
OUTSIDE_PORT = (-46.333, -23.960)  # Santos city streets
ROAD = densify(
    along(
        "santos-road-120",
        inside("santos-inspection-41", "santos-road-120"),
        inside("santos-road-120", "santos-road-070"),
    ),
    step_m=80.0,
)  # Avenida Engenheiro Augusto Barata, a fix every 80 m (29 km/h at a fix every 10 s)
ROAD_MID = ROAD[len(ROAD) // 2]

# clearance at the inspection area -> Av. Eng. Augusto Barata -> Acesso 2 -> BTP terminal -> BTP berth 01
HAPPY_ROUTE = densify(
    [
        INSPECTION,
        inside("santos-inspection-41", "santos-road-120"),
        *ROAD,
        inside("santos-road-120", "santos-road-070"),
        *along(
            "santos-road-070",
            inside("santos-road-120", "santos-road-070"),
            inside("santos-road-070", "santos-terminal-33"),
        ),
        inside("santos-road-070", "santos-terminal-33"),
        inside("santos-terminal-33", "santos-quay-34"),
        QUAY,
    ],
    step_m=80.0,
)


def test_places_are_what_the_tests_assume() -> None:
    assert FenceKind.INSPECTION_AREA in kinds_at(INSPECTION)
    assert FenceKind.TERMINAL in kinds_at(TERMINAL)
    assert FenceKind.AUTHORIZED_PARKING in kinds_at(PARKING)
    assert kinds_at(RESTRICTED) == {FenceKind.RESTRICTED, FenceKind.PORT_BOUNDARY}
    assert FenceKind.QUAY in kinds_at(QUAY)
    for pt in VACANT:
        assert kinds_at(pt) == {FenceKind.PORT_BOUNDARY}
        assert clearance_m(pt) > 60.0  # beyond the index's 25 m hysteresis, whatever came before
    assert kinds_at(OUTSIDE_PORT) == set()
    assert all(FenceKind.CORRIDOR in kinds_at(pt) for pt in ROAD)
    for pt in HAPPY_ROUTE:
        assert kinds_at(pt) & ROUTE_KINDS, pt


# ---- a device driven through the detector like the pipeline would -------------------------------
def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Trip:
    """Runs one device through the detector: fences with hysteresis, motion, world, JSON state."""

    def __init__(
        self,
        params: AccessWindowParams | None = None,
        *,
        kind: DeviceKind = DeviceKind.CONTAINER,
        world: World | None = None,
        device: str = DEV,
    ) -> None:
        self.det = AccessWindowDetector(params)
        self.kind = kind
        self.world = world if world is not None else World()
        self.device = device
        self.state: Any = None
        self.fences: frozenset[str] = frozenset()
        self.last: Fix | None = None
        self.mstate: Any = None
        self.motion = Motion(None)
        self.log: list[tuple[float, Event]] = []
        self.raised: dict[Any, Alert] = {}

    def _keep(self, t: float, state: Any, events: Iterable[Event]) -> list[Event]:
        # the state must survive the store's codec unchanged: it is what the store keeps between fixes
        restored = stored(state)
        assert restored == state
        self.state = restored
        out = list(events)
        for ev in out:
            if isinstance(ev, Alert):
                assert ev.id not in self.raised, f"alert raised twice: {ev.key}"
                self.raised[ev.id] = ev
            else:
                # an update names the alert exactly as it was raised
                assert self.raised.get(ev.alert.id) == ev.alert
            self.log.append((t, ev))
        return out

    def fix(self, t: float, pt: Point2, *events: str, speed: float | None = None) -> list[Event]:
        ping = Ping(self.device, at(t), pt[0], pt[1], speed=speed, events=events)
        fences = INDEX.membership(pt[0], pt[1], self.fences)
        # as the pipeline does: the motion model is told whether the fix lies in an authorised stop zone
        authorized = in_authorized_zone(INDEX, fences)
        self.mstate, self.motion = motion.update(self.mstate, ping, motion.MotionParams(), authorized)
        ctx = FixContext(
            device_id=self.device,
            kind=self.kind,
            previous=self.last,
            fences_before=self.fences,
            fences=fences,
            motion=self.motion,
            index=INDEX,
            world=self.world,
        )
        state, events_out = self.det.on_fix(self.state, ping, ctx)
        self.fences, self.last = fences, Fix.of(ping)
        return self._keep(t, state, events_out)

    def _tick_ctx(self) -> TickContext:
        return TickContext(self.device, self.kind, self.last, self.fences, self.motion, INDEX, self.world)

    def tick(self, t: float) -> list[Event]:
        state, events = self.det.on_tick(self.state, at(t), self._tick_ctx())
        return self._keep(t, state, events)

    def inspect(
        self,
        t: float,
        result: InspectionResult,
        *,
        seal: str | None = SEAL,
        facility: str | None = FACILITY,
        inspection_id: str | None = None,
    ) -> list[Event]:
        insp = Inspection(CONTAINER_NO, result, at(t), facility, seal, inspection_id)
        state, events = self.det.on_inspection(self.state, insp, self._tick_ctx())
        return self._keep(t, state, events)

    def pair(self, truck: str | None) -> None:
        self.state = self.det.pair(self.state, truck)

    def drive(self, t0: float, points: Sequence[Point2], *, every: float = 10.0, tick_every: float = 5.0) -> float:
        """One fix per point every ``every`` seconds with ticks in between; returns the time of the last fix."""
        t = t0
        for i, pt in enumerate(points):
            t = t0 + i * every
            if i:
                k = 1
                while t - every + k * tick_every < t:
                    self.tick(t - every + k * tick_every)
                    k += 1
            self.fix(t, pt)
        return t

    def alerts(self, reason: str | None = None) -> list[tuple[float, Alert]]:
        return [
            (t, ev)
            for t, ev in self.log
            if isinstance(ev, Alert)
            and ev.kind == "post_inspection_access"
            and (reason is None or ev.evidence["reason"] == reason)
        ]

    def updates(self) -> list[tuple[float, AlertUpdate]]:
        return [(t, ev) for t, ev in self.log if isinstance(ev, AlertUpdate)]

    def kinds(self) -> list[str]:
        return [ev.kind for _, ev in self.log if isinstance(ev, Alert)]


def cleared_at_inspection(params: AccessWindowParams | None = None, *, world: World | None = None) -> Trip:
    """A container that waited 5 min at the inspection area and is cleared at t=0."""
    trip = Trip(params, world=world)
    trip.drive(-300, [INSPECTION] * 31)
    trip.inspect(0, InspectionResult.CLEARED, inspection_id="DUE-1")
    return trip


# ---- window opening and closing ------------------------------------------------------------------
def test_clearance_opens_the_window_with_an_info_alert() -> None:
    trip = Trip()
    trip.fix(-10, INSPECTION)
    events = trip.inspect(0, InspectionResult.CLEARED, inspection_id="DUE-1")
    assert len(events) == 1
    alert = events[0]
    assert isinstance(alert, Alert)
    assert alert.kind == "access_window_opened"
    assert alert.severity is Severity.INFO
    assert alert.ts == at(0)
    assert alert.port == "santos"
    clearance = alert.evidence["clearance"]
    assert clearance == {
        "ts": at(0).isoformat(),
        "container_no": CONTAINER_NO,
        "facility": FACILITY,
        "seal": SEAL,
        "inspection_id": "DUE-1",
    }
    assert {"id": "santos-inspection-41", "name": fence("santos-inspection-41").name, "kind": "inspection_area"} in (
        alert.evidence["fences"]
    )
    assert alert.evidence["last_fix"]["ts"] == at(-10).isoformat()
    # a redelivered clearance changes nothing
    assert trip.inspect(0, InspectionResult.CLEARED, inspection_id="DUE-1") == []


def test_happy_path_raises_only_the_info_alerts() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, [INSPECTION] * 6)  # the paperwork takes another minute
    end = trip.drive(70, HAPPY_ROUTE)
    assert trip.kinds() == ["access_window_opened", "access_window_closed"]
    t, closed = trip.log[-1]
    first_quay_fix = next(i for i, pt in enumerate(HAPPY_ROUTE) if FenceKind.QUAY in kinds_at(pt))
    assert t == 70 + 10 * first_quay_fix
    assert isinstance(closed, Alert)
    assert closed.fence_id == "santos-quay-34"
    assert closed.evidence["closed_by"]["by"] == "quay"
    assert closed.evidence["duration_s"] == t
    assert closed.evidence["alerts_raised"] == {}
    assert trip.updates() == []
    # once closed, nothing about the container is the window's business any more
    trip.fix(end + 10, VACANT[0], "door_open")
    trip.drive(end + 20, [VACANT[0]] * 30)
    assert trip.alerts() == []


def test_window_closes_on_quay_entry_and_ends_open_occurrences() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, [VACANT[0]] * 15)  # stop alert at 130 s (120 s after the stop began at 10 s)
    [(_, stop)] = trip.alerts("stop")
    trip.fix(160, QUAY)
    closed = [ev for _, ev in trip.log if isinstance(ev, Alert) and ev.kind == "access_window_closed"]
    assert len(closed) == 1
    assert closed[0].evidence["alerts_raised"] == {"stop": 1}
    [(_, upd)] = trip.updates()
    assert upd.alert == stop and upd.closes and upd.fields["ended_by"] == "window_closed"


def test_loaded_closes_the_window() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, ROAD[:5])
    events = trip.inspect(100, InspectionResult.LOADED, seal=SEAL)
    assert [e.kind for e in events if isinstance(e, Alert)] == ["access_window_closed"]
    closed = events[0]
    assert isinstance(closed, Alert)
    assert closed.evidence["closed_by"]["by"] == "loaded"
    assert closed.evidence["duration_s"] == 100.0


@pytest.mark.parametrize("result", [InspectionResult.SELECTED, InspectionResult.HELD])
def test_selected_or_held_sends_the_container_back_to_customs(result: InspectionResult) -> None:
    trip = cleared_at_inspection()
    trip.drive(10, ROAD[:3])
    events = trip.inspect(40, result, seal=SEAL, inspection_id="DUE-2")
    kinds = [e.kind for e in events if isinstance(e, Alert)]
    assert kinds == ["access_window_closed", f"inspection_{result.value}"]
    recall = events[-1]
    assert isinstance(recall, Alert)
    assert recall.severity is Severity.INFO
    assert recall.evidence["window_closed"]["ts"] == at(0).isoformat()
    # back in customs' hands: a door opened for the physical inspection is not an access alert
    trip.fix(50, INSPECTION, "door_open")
    assert trip.alerts() == []
    # cleared again: a new window, whose alerts are new alerts
    trip.inspect(600, InspectionResult.CLEARED, inspection_id="DUE-3")
    trip.fix(610, INSPECTION, "door_open")
    assert len(trip.alerts("sensor")) == 1
    assert trip.kinds().count("access_window_opened") == 2


def test_selected_without_an_open_window_is_recorded() -> None:
    trip = Trip()
    trip.fix(0, INSPECTION)
    events = trip.inspect(10, InspectionResult.SELECTED)
    assert [e.kind for e in events if isinstance(e, Alert)] == ["inspection_selected"]
    assert trip.inspect(10, InspectionResult.SELECTED) == []
    # the same decision redelivered after another one at the same instant is still the same decision
    assert [e.kind for e in trip.inspect(10, InspectionResult.HELD) if isinstance(e, Alert)] == ["inspection_held"]
    assert trip.inspect(10, InspectionResult.SELECTED, facility="other desk") == []
    # an older decision arriving late changes nothing
    assert trip.inspect(5, InspectionResult.CLEARED) == []


def test_other_device_kinds_are_ignored() -> None:
    trip = Trip(kind=DeviceKind.TRUCK)
    trip.fix(0, INSPECTION)
    assert trip.inspect(10, InspectionResult.CLEARED) == []
    trip.drive(20, [VACANT[0]] * 30)
    trip.fix(400, VACANT[0], "door_open")
    assert trip.log == [] and trip.state is None


# ---- a) stop -------------------------------------------------------------------------------------
def test_stop_of_120_s_outside_authorized_zones_fires_at_120_s() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, [ROAD_MID])
    trip.drive(20, [VACANT[0]] * 14)  # stands still from 20 s
    [(t, alert)] = trip.alerts("stop")
    assert t == 140  # 120 s after the first fix of the stop: no latency with fixes on the threshold
    assert alert.severity is Severity.HIGH
    assert alert.ts == at(140)
    ev = alert.evidence
    assert ev["started_at"] == at(20).isoformat()
    assert ev["duration_s"] == 120.0 and ev["threshold_s"] == 120.0
    assert ev["clearance"]["seal"] == SEAL
    assert ev["fix"]["lon"] == VACANT[0][0]
    assert ev["since_clearance_s"] == 140.0
    assert alert.key.startswith(f"stop@{at(20).isoformat()}")
    # standing on: no second alert; moving off ends it with an update
    trip.drive(160, [VACANT[0]] * 20)
    trip.drive(360, [VACANT[1], VACANT[2]])
    assert len(trip.alerts("stop")) == 1
    [(tu, upd)] = trip.updates()
    assert tu == 370 and upd.closes and upd.alert == alert
    assert upd.fields["duration_s"] == 350.0


def test_a_stop_seeded_by_a_rolling_fix_is_timed_from_the_first_fix_that_stands() -> None:
    """The shared stop rule (``rules.rolling``), as the unexpected-stop detector applies it: a fix reporting road
    speed is no time spent standing, neither as the fix that seeds the stop's cluster nor later in it."""
    trip = cleared_at_inspection()
    trip.drive(10, [ROAD_MID])
    trip.fix(20, VACANT[0], speed=8.0)  # still driving as it reaches the spot: seeds the cluster, stands not
    for s in range(30, 140, 10):
        trip.fix(s, offset(VACANT[0], 3.0, 0.0), speed=0.0)
    trip.fix(140, VACANT[0], speed=8.0)  # road speed inside the cluster: no evidence of standing either
    assert trip.alerts("stop") == []  # timed from 20 s, 120 s were reached at 140 s
    trip.fix(150, VACANT[0], speed=0.0)
    [(t, alert)] = trip.alerts("stop")
    assert t == 150
    ev = alert.evidence
    assert ev["started_at"] == at(20).isoformat()  # the stop is still the cluster the rolling fix began
    assert ev["standing_since"] == ev["unauthorized_since"] == at(30).isoformat()
    assert ev["duration_s"] == 120.0
    # the same fixes standing from the first are a stop at 140 s
    trip = cleared_at_inspection()
    trip.drive(10, [ROAD_MID])
    trip.fix(20, VACANT[0], speed=0.0)
    for s in range(30, 150, 10):
        trip.fix(s, offset(VACANT[0], 3.0, 0.0), speed=0.0)
    assert [t for t, _ in trip.alerts("stop")] == [140]


def test_stop_of_119_s_does_not_fire() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, [ROAD_MID])
    trip.drive(20, [VACANT[0]] * 12)  # 20 .. 130
    trip.fix(139, VACANT[0])  # last fix of the stop: 119 s after the first
    trip.fix(149, VACANT[2])  # leaving: 200 m away (held as a possible outlier, not counted as stop time)
    trip.fix(159, VACANT[1])  # still away, and away from the outlier too: the device is moving
    trip.fix(169, VACANT[0])
    assert trip.alerts("stop") == []


def test_stop_inside_a_terminal_does_not_fire() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, [TERMINAL] * 60)  # ten minutes in the Santos Brasil yard
    assert trip.alerts("stop") == []


# the edge of the Santos terminal 06 yard: 5 m inside it, and 35 m out on the corridor beside it (beyond the
# fence's 25 m exit hysteresis, 34 m from any authorised zone), 40 m apart: one stop's cluster
YARD_EDGE = (-46.31500871165907, -23.95011476759482)
BESIDE_YARD = (-46.31480892006252, -23.950424711902546)


def test_a_stop_begun_in_a_yard_counts_from_its_first_fix_outside() -> None:
    """Only time outside authorised zones counts (the motion model's ``outside_since``, the shared rule): a box
    whose stop began at the yard's edge and which then stood beside it has stood outside since its first fix
    there, not since the stop's first fix in the yard."""
    assert FenceKind.TERMINAL in kinds_at(YARD_EDGE)
    assert not kinds_at(BESIDE_YARD) & {FenceKind.TERMINAL, FenceKind.GATE, FenceKind.CUSTOMS_YARD}
    trip = cleared_at_inspection()
    trip.drive(10, [ROAD_MID])
    trip.fix(20, YARD_EDGE)
    trip.drive(30, [BESIDE_YARD] * 15)  # the stop is stationary from 20 s, outside from 30 s
    [(t, alert)] = trip.alerts("stop")
    assert t == 150
    assert alert.evidence["started_at"] == at(20).isoformat()
    assert alert.evidence["unauthorized_since"] == at(30).isoformat()
    assert alert.evidence["duration_s"] == 120.0


def test_stop_that_began_before_clearance_counts_from_clearance() -> None:
    trip = Trip()
    trip.drive(-300, [VACANT[0]] * 31)
    trip.inspect(0, InspectionResult.CLEARED)
    trip.drive(10, [VACANT[0]] * 12)
    [(t, alert)] = trip.alerts("stop")
    assert t == 120
    assert alert.evidence["started_at"] == at(-300).isoformat()
    assert alert.evidence["unauthorized_since"] == at(0).isoformat()


# ---- b) zone -------------------------------------------------------------------------------------
def test_entering_a_restricted_zone_fires_once() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, [VACANT[0], RESTRICTED, RESTRICTED, offset(RESTRICTED, 5, 5)])
    [(t, alert)] = trip.alerts("zone")
    assert t == 20
    assert alert.fence_id == "santos-restricted-11"
    assert alert.evidence["fence"]["kind"] == "restricted"
    assert alert.evidence["transition"] == "enter"
    assert alert.evidence["previous_fix"]["lon"] == VACANT[0][0]


def test_entering_authorized_parking_fires() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, [TERMINAL, PARKING])
    [(t, alert)] = trip.alerts("zone")
    assert alert.fence_id == "santos-parking-01" and t == 20


def test_leaving_the_port_boundary_fires() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, [ROAD_MID, OUTSIDE_PORT, OUTSIDE_PORT])
    [(t, alert)] = trip.alerts("zone")
    assert t == 20
    assert alert.fence_id == "santos-port-boundary-1"
    assert alert.evidence["transition"] == "exit"


def test_zones_it_was_already_in_or_skirts_do_not_fire() -> None:
    # cleared inside restricted-14 (the inspection area lies in it): leaving it is no entry
    trip = cleared_at_inspection()
    trip.drive(10, [INSPECTION, ROAD_MID])
    # 10 m outside a restricted fence stays outside
    near = offset(RESTRICTED, 0, 0)
    geom = LocalProjection(*near).project(fence("santos-restricted-11").geometry)
    beside = offset(near, 0, geom.bounds[3] + 10)
    assert FenceKind.RESTRICTED not in kinds_at(beside)
    trip.drive(30, [beside])
    assert trip.alerts("zone") == []


# ---- c) off route --------------------------------------------------------------------------------
def test_excursion_off_the_route_fires_after_the_grace() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, ROAD[:3])  # on Av. Eng. Augusto Barata, 10..30
    zigzag = [VACANT[0], VACANT[1], VACANT[2], VACANT[1], VACANT[0], VACANT[1]]
    trip.drive(40, zigzag)  # off route from 40 s, moving
    [(t, alert)] = trip.alerts("off_route")
    assert t == 80  # 40 s off route: the first fix beyond the 30 s grace
    ev = alert.evidence
    assert ev["started_at"] == at(40).isoformat()
    assert ev["duration_s"] == 40.0 and ev["threshold_s"] == 30.0
    assert ev["nearest_route_fence"]["distance_m"] > 60.0
    assert ev["first_off_route_fix"]["lon"] == VACANT[0][0]
    trip.drive(100, ROAD[3:5])
    [(tu, upd)] = trip.updates()
    assert tu == 100 and upd.alert == alert and upd.fields["duration_s"] == 60.0
    assert len(trip.alerts("off_route")) == 1


@pytest.mark.parametrize("off_fixes", [1, 2, 4])
def test_short_blip_off_the_route_does_not_fire(off_fixes: int) -> None:
    # 1 fix = a 10 s blip; 4 fixes = 30 s off route, still not more than the grace
    trip = cleared_at_inspection()
    trip.drive(10, ROAD[:3])
    trip.drive(40, [VACANT[i % 2] for i in range(off_fixes)])
    trip.drive(40 + 10 * off_fixes, ROAD[3:6])
    assert trip.alerts("off_route") == []


def test_standing_still_off_route_is_a_stop_not_an_excursion() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, ROAD[:3])
    trip.drive(40, [VACANT[0]] * 10)
    assert trip.alerts("off_route") == []


@pytest.mark.parametrize(("south_m", "fires"), [(35.0, False), (60.0, True)])
def test_driving_beside_a_corridor_band_is_on_route_but_well_away_from_it_is_not(south_m: float, fires: bool) -> None:
    # the avenue's band is drawn from its centre line: 35 m south of it a box is 13 m outside the band (a bend or a
    # junction the band misses), which counts as on route; 60 m south, 38 m outside, is an excursion
    trip = cleared_at_inspection()
    trip.drive(10, [offset(p, 0.0, -south_m) for p in ROAD[1:8]])
    assert bool(trip.alerts("off_route")) is fires


def test_a_given_route_makes_other_corridors_off_route() -> None:
    params = AccessWindowParams(route_fence_ids=frozenset({"santos-road-070"}))
    trip = cleared_at_inspection(params)
    trip.drive(10, ROAD[:8])
    [(_, alert)] = trip.alerts("off_route")
    assert alert.evidence["route_fence_ids"] == ["santos-road-070"]
    # the same drive with every corridor allowed is on route
    trip2 = cleared_at_inspection()
    trip2.drive(10, ROAD[:8])
    assert trip2.alerts("off_route") == []


# ---- d) sensor -----------------------------------------------------------------------------------
def test_door_open_and_seal_tamper_fire_once_per_fix() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, ROAD[:2])
    trip.fix(30, ROAD[2], "door_open", "seal_tamper")
    trip.fix(40, ROAD[3], "door_close")
    trip.fix(50, ROAD[4], "seal_tamper")
    alerts = trip.alerts("sensor")
    assert [(t, a.evidence["events"]) for t, a in alerts] == [(30, ["door_open", "seal_tamper"]), (50, ["seal_tamper"])]
    assert all(a.severity is Severity.HIGH for _, a in alerts)


def test_door_open_before_clearance_or_after_loading_does_not_fire() -> None:
    trip = Trip()
    trip.fix(-20, INSPECTION, "door_open")
    trip.inspect(0, InspectionResult.CLEARED)
    trip.drive(10, ROAD[:2])
    trip.inspect(30, InspectionResult.LOADED)
    trip.fix(40, ROAD[2], "door_open")
    trip.fix(50, QUAY, "door_open")
    assert trip.alerts() == []


def test_door_open_at_the_quay_entry_is_after_the_window() -> None:
    trip = cleared_at_inspection()
    trip.fix(10, QUAY, "door_open")
    assert trip.alerts() == []
    assert trip.kinds()[-1] == "access_window_closed"


# ---- e) alongside --------------------------------------------------------------------------------
def parked(
    world: World,
    device: str,
    pt: Point2,
    t: float,
    since: float,
    kind: DeviceKind = DeviceKind.TRUCK,
    authorized: bool = False,
) -> None:
    """Another device standing at ``pt`` since ``since``: outside authorized zones unless ``authorized``."""
    world.update(
        Position(
            device,
            kind,
            at(t),
            pt[0],
            pt[1],
            stationary_since=at(since),
            authorized=authorized,
            outside_since=None if authorized else at(since),
        )
    )


def test_another_vehicle_alongside_fires_after_60_s() -> None:
    world = World()
    trip = cleared_at_inspection(world=world)
    spot = VACANT[0]
    beside = offset(spot, 12, 0)
    trip.drive(10, [ROAD_MID])
    for i in range(12):  # container stands still from 20 s; truck TRK-9 parked beside it from 30 s
        t = 20.0 + 10 * i
        if t >= 30:
            parked(world, "TRK-9", beside, t, 30)
        trip.fix(t, spot)
    [(fired, alert)] = trip.alerts("alongside")
    assert fired == 100  # together since 30 s; first fix with more than 60 s together
    ev = alert.evidence
    assert ev["other"]["device_id"] == "TRK-9" and ev["other"]["kind"] == "truck"
    assert 11.0 < ev["distance_m"] < 13.0
    assert ev["started_at"] == at(30).isoformat() and ev["duration_s"] == 70.0
    # the truck drives off: the meeting ends
    world.update(Position("TRK-9", DeviceKind.TRUCK, at(135), *VACANT[2]))
    trip.fix(140, spot)
    [(_, upd)] = trip.updates()
    assert upd.alert == alert and upd.fields["duration_s"] == 110.0
    assert len(trip.alerts("alongside")) == 1


def box_on_the_road(neighbour: Callable[[World, float], None], *, fixes: int, step: float) -> Trip:
    """A cleared box driven off the road to waste ground and standing there from 20 s, reporting every ``step``
    seconds; before each of its fixes ``neighbour`` may place another device in the world."""
    world = World()
    trip = cleared_at_inspection(world=world)
    trip.drive(10, [ROAD_MID])
    for i in range(fixes):
        t = 20.0 + step * i
        neighbour(world, t)
        trip.fix(t, VACANT[0])
    return trip


def test_a_vehicle_standing_inside_an_authorized_zone_beside_the_box_is_not_alongside() -> None:
    # near miss of the test above: the same truck, 12 m away, but standing inside a yard the box stands at the edge of
    def truck_in_a_yard(world: World, t: float) -> None:
        if t >= 30:
            parked(world, "TRK-9", offset(VACANT[0], 12, 0), t, 30, authorized=True)

    assert box_on_the_road(truck_in_a_yard, fixes=12, step=10).alerts("alongside") == []


def test_a_sparse_reporter_standing_beside_the_box_is_alongside_on_its_one_fix() -> None:
    # the accomplice's tracker reports every five minutes: one fix, at speed 0, beside the box standing on the road
    def run(speed: float) -> list[tuple[float, Alert]]:
        def one_fix(world: World, t: float) -> None:
            if t == 110:
                world.update(Position("TRK-9", DeviceKind.TRUCK, at(105), *offset(VACANT[0], 10, 0), speed=speed))

        return box_on_the_road(one_fix, fixes=14, step=30).alerts("alongside")

    [(fired, alert)] = run(0.0)
    assert fired == 170 and alert.evidence["started_at"] == at(105).isoformat()  # first fix over 60 s after 105
    assert run(9.0) == []  # near miss: the same single fix, but rolling past at 9 m/s


def test_truck_passing_at_speed_is_not_alongside() -> None:
    world = World()
    trip = cleared_at_inspection(world=world)
    spot = VACANT[0]
    trip.drive(10, [ROAD_MID])
    for i in range(20):
        t = 20 + 10 * i
        # a truck crawls past, 5 m from the container at every fix, never standing still
        world.update(Position("TRK-7", DeviceKind.TRUCK, at(t), *offset(spot, 5, 0), stationary_since=None))
        trip.fix(t, spot)
    assert trip.alerts("alongside") == []


def test_paired_truck_alongside_does_not_fire() -> None:
    world = World()
    trip = cleared_at_inspection(world=world)
    trip.pair("TRK-1")
    trip.drive(10, [ROAD_MID])
    for i in range(20):
        t = 20 + 10 * i
        parked(world, "TRK-1", offset(VACANT[0], 3, 0), t, 20)
        trip.fix(t, VACANT[0])
    assert trip.alerts("alongside") == []
    assert trip.alerts("stop")  # the stop itself still counts
    trip.pair(None)
    for i in range(10):
        t = 220 + 10 * i
        parked(world, "TRK-1", offset(VACANT[0], 3, 0), t, 20)
        trip.fix(t, VACANT[0])
    assert len(trip.alerts("alongside")) == 1


def test_containers_stacked_in_a_terminal_are_not_alongside() -> None:
    world = World()
    trip = cleared_at_inspection(world=world)
    for i in range(30):
        t = 10 + 10 * i
        parked(world, "CTR-2", offset(TERMINAL, 3, 0), t, 0, DeviceKind.CONTAINER)
        trip.fix(t, TERMINAL)
    assert trip.alerts() == []


def test_stale_or_distant_neighbours_are_not_alongside() -> None:
    world = World()
    trip = cleared_at_inspection(world=world)
    parked(world, "TRK-OLD", offset(VACANT[0], 5, 0), -600, -900)  # last heard of ten minutes ago
    trip.drive(10, [ROAD_MID])
    for i in range(20):
        t = 20 + 10 * i
        parked(world, "TRK-FAR", offset(VACANT[0], 0, 35), t, 0)  # 35 m away: the next lane
        trip.fix(t, VACANT[0])
    assert trip.alerts("alongside") == []


# ---- f) dark -------------------------------------------------------------------------------------
def test_silence_fires_from_the_first_tick_beyond_180_s() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, ROAD[:3])  # last fix at 30
    fired: list[float] = []
    for k in range(1, 50):
        if trip.tick(30 + 5 * k):
            fired.append(30 + 5 * k)
    assert fired == [215]  # silent for more than 180 s at the tick 185 s after the last fix
    [(_, alert)] = trip.alerts("dark")
    assert alert.ts == at(210)  # the moment the threshold was crossed
    assert alert.evidence["last_fix"]["ts"] == at(30).isoformat()
    assert alert.evidence["threshold_s"] == 180.0
    trip.fix(400, ROAD[3])
    [(tu, upd)] = trip.updates()
    assert tu == 400 and upd.closes and upd.fields["duration_s"] == 370.0


def test_silence_of_180_s_does_not_fire() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, ROAD[:3])
    for k in range(1, 37):
        trip.tick(30 + 5 * k)  # up to 210: silent for exactly 180 s
    trip.fix(210, ROAD[3])
    assert trip.alerts("dark") == []


def test_silence_is_found_from_the_fix_gap_when_no_tick_ran() -> None:
    live = cleared_at_inspection()
    live.drive(10, ROAD[:3])
    for k in range(1, 40):
        live.tick(30 + 5 * k)
    live.fix(230, ROAD[3])
    replay = cleared_at_inspection()
    replay.drive(10, ROAD[:3])
    replay.fix(230, ROAD[3])  # 200 s gap, no ticks
    [(_, a_live)] = live.alerts("dark")
    [(_, a_replay)] = replay.alerts("dark")
    assert a_live == a_replay and a_live.id == a_replay.id
    [(_, u_replay)] = replay.updates()
    assert u_replay.closes and u_replay.alert == a_replay
    short = cleared_at_inspection()
    short.drive(10, ROAD[:3])
    short.fix(210, ROAD[3])  # 180 s gap
    assert short.alerts("dark") == []


def test_a_tracker_never_heard_after_clearance_goes_dark() -> None:
    trip = Trip()
    trip.inspect(0, InspectionResult.CLEARED)
    events = [e for k in range(1, 40) for e in trip.tick(5 * k)]
    (alert,) = [e for e in events if isinstance(e, Alert)]
    assert alert.ts == at(180) and alert.evidence["last_fix"] is None


def _cleared_in_yard_rhythm(interval: float) -> Trip:
    """A container at the inspection area whose tracker reports every ``interval`` s, cleared 100 s after a fix."""
    trip = Trip()
    trip.drive(-100 - 8 * interval, [INSPECTION] * 9, every=interval)  # last fix at -100
    trip.inspect(0, InspectionResult.CLEARED, inspection_id="DUE-1")
    return trip


@pytest.mark.parametrize("interval", [60.0, 300.0])
def test_a_slow_tracker_keeping_its_rhythm_is_not_dark(interval: float) -> None:
    # before the limit followed the tracker's rhythm, the 300-s box raised "dark" 180 s after clearance
    trip = _cleared_in_yard_rhythm(interval)
    trip.drive(-100 + interval, [INSPECTION] * 6, every=interval)
    assert trip.alerts("dark") == []


def test_a_slow_tracker_is_dark_after_three_of_its_intervals() -> None:
    trip = _cleared_in_yard_rhythm(300.0)
    fired = [t for t in range(5, 1200, 5) if trip.tick(t)]
    assert fired == [905]  # silent since the clearance for more than 3 x 300 s
    [(_, alert)] = trip.alerts("dark")
    assert alert.ts == at(900) and alert.evidence["threshold_s"] == 900.0
    assert alert.evidence["expected_interval_s"] == 300.0 and alert.evidence["dark_s"] == 180.0
    assert alert.key == f"dark@{at(0).isoformat()}|cleared@{at(0).isoformat()}"  # same key as before the change


def test_a_slow_tracker_silence_is_found_from_the_fix_gap_when_no_tick_ran() -> None:
    near = _cleared_in_yard_rhythm(300.0)
    near.fix(900, INSPECTION)  # exactly 3 intervals since the clearance: not more
    assert near.alerts("dark") == []
    far = _cleared_in_yard_rhythm(300.0)
    far.fix(901, INSPECTION)
    [(_, alert)] = far.alerts("dark")
    assert alert.ts == at(900)


def test_before_any_interval_is_known_dark_s_applies() -> None:
    trip = Trip()
    trip.fix(-10, INSPECTION)
    trip.inspect(0, InspectionResult.CLEARED)
    trip.fix(181, INSPECTION)
    [(_, alert)] = trip.alerts("dark")
    assert alert.evidence["threshold_s"] == 180.0 and alert.evidence["expected_interval_s"] is None


# ---- g) overrun ----------------------------------------------------------------------------------
def test_window_open_longer_than_6_h_fires_once() -> None:
    trip = cleared_at_inspection(AccessWindowParams(dark_s=1e9))
    six_h = 6 * 3600
    assert trip.tick(six_h) == []
    (alert,) = trip.tick(six_h + 5)
    assert isinstance(alert, Alert)
    assert alert.evidence["reason"] == "overrun" and alert.ts == at(six_h)
    assert trip.tick(six_h + 10) == []
    trip.fix(six_h + 20, ROAD_MID)
    assert len(trip.alerts("overrun")) == 1
    trip.fix(six_h + 30, QUAY)
    [(_, upd)] = trip.updates()
    assert upd.alert == alert and upd.fields["ended_by"] == "window_closed"


def test_overrun_is_found_from_a_fix_when_no_tick_ran() -> None:
    trip = cleared_at_inspection(AccessWindowParams(dark_s=1e9))
    trip.fix(6 * 3600, ROAD_MID)
    assert trip.alerts("overrun") == []
    trip.fix(6 * 3600 + 10, ROAD_MID)
    [(_, alert)] = trip.alerts("overrun")
    assert alert.ts == at(6 * 3600)
    # the same alert a tick would have raised, so a replay and the live run agree
    live = cleared_at_inspection(AccessWindowParams(dark_s=1e9))
    live.fix(6 * 3600, ROAD_MID)
    live.tick(6 * 3600 + 5)
    assert [a for _, a in live.alerts("overrun")] == [alert]


# ---- h) seal mismatch ----------------------------------------------------------------------------
def test_a_different_seal_reported_later_is_critical() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, ROAD[:3])
    events = trip.inspect(40, InspectionResult.CLEARED, seal="BR-0042318", facility="Gate Alemoa")
    (alert,) = events
    assert isinstance(alert, Alert)
    assert alert.severity is Severity.CRITICAL
    assert alert.evidence["reason"] == "seal_mismatch"
    assert alert.evidence["recorded_seal"] == SEAL and alert.evidence["reported_seal"] == "BR-0042318"
    assert alert.evidence["clearance"]["ts"] == at(0).isoformat()


def test_loaded_with_a_different_seal_fires_then_closes() -> None:
    trip = cleared_at_inspection()
    events = trip.inspect(40, InspectionResult.LOADED, seal="XX-1")
    assert [(e.kind, e.severity) for e in events if isinstance(e, Alert)] == [
        ("post_inspection_access", Severity.CRITICAL),
        ("access_window_closed", Severity.INFO),
    ]


def test_same_seal_written_differently_does_not_fire() -> None:
    trip = cleared_at_inspection()
    assert trip.inspect(40, InspectionResult.CLEARED, seal=" br 0042317 ", facility="Gate") == []
    assert trip.inspect(50, InspectionResult.CLEARED, seal=None, facility="Gate") == []
    events = trip.inspect(60, InspectionResult.LOADED, seal="br0042317")
    assert [e.kind for e in events if isinstance(e, Alert)] == ["access_window_closed"]
    assert len(events) == 1


# ---- the state survives restarts and replays -----------------------------------------------------
def test_restored_state_continues_the_same_window() -> None:
    trip = cleared_at_inspection()
    trip.drive(10, [VACANT[0]] * 8)
    restarted = Trip()
    restarted.state = stored(trip.state)
    restarted.fences, restarted.last, restarted.mstate, restarted.motion = (
        trip.fences,
        trip.last,
        trip.mstate,
        trip.motion,
    )
    restarted.drive(90, [VACANT[0]] * 6)
    [(t, _)] = restarted.alerts("stop")
    assert t == 130


# ---- no alert twice, whatever happens ------------------------------------------------------------
PLACES = [INSPECTION, TERMINAL, PARKING, RESTRICTED, QUAY, OUTSIDE_PORT, ROAD_MID, ROAD[1], *VACANT]
Action = tuple[str, int, int, list[str]]
ACTIONS: st.SearchStrategy[Action] = st.one_of(
    st.tuples(
        st.just("fix"),
        st.sampled_from([1, 5, 10, 10, 10, 30, 130, 400]),
        st.sampled_from(range(len(PLACES))),
        st.lists(st.sampled_from(["door_open", "seal_tamper", "door_close"]), max_size=2),
    ),
    st.tuples(st.just("tick"), st.sampled_from([1, 5, 30, 200]), st.just(0), st.just([])),
    st.tuples(
        st.just("inspect"),
        st.integers(0, 400),
        st.sampled_from(range(len(InspectionResult) * 3)),
        st.just([]),
    ),
    st.tuples(st.just("pair"), st.integers(0, 0), st.sampled_from([0, 1]), st.just([])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTIONS, min_size=1, max_size=40))
def test_no_alert_is_raised_twice(actions: list[Action]) -> None:
    world = World()
    parked(world, "TRK-9", offset(VACANT[0], 8, 0), 0, -100)
    trip = Trip(AccessWindowParams(stop_s=60, alongside_s=30, dark_s=120, max_window_s=900), world=world)
    results = list(InspectionResult)
    t = 0.0
    for action, dt, choice, events in actions:
        t += dt
        if action == "fix":
            parked(world, "TRK-9", offset(VACANT[0], 8, 0), t, -100)
            trip.fix(t, PLACES[choice], *events)
        elif action == "tick":
            trip.tick(t)
        elif action == "inspect":
            trip.inspect(t, results[choice % len(results)], seal=["S1", "S2", None][choice // len(results)])
        else:
            trip.pair("TRK-9" if choice else None)
    # Trip itself asserts that no alert id repeats and that every update names an alert as raised
    ids = [ev.id for _, ev in trip.log if isinstance(ev, Alert)]
    assert len(ids) == len(set(ids))
    opened = [ev for _, ev in trip.log if isinstance(ev, Alert) and ev.kind == "access_window_opened"]
    closed = [ev for _, ev in trip.log if isinstance(ev, Alert) and ev.kind == "access_window_closed"]
    assert len(opened) - len(closed) in (0, 1)


@pytest.mark.parametrize("port", ["santos", "callao"])
def test_nearest_route_fence_is_the_one_a_full_scan_finds(port: str) -> None:
    """The off-route evidence names the nearest route fence; the bounded search must find the very fence and
    distance that measuring every route fence finds, anywhere in and around the port."""
    index = FenceIndex(load_port(port).fences)
    det = AccessWindowDetector()

    def full_scan(lon: float, lat: float) -> tuple[float, str] | None:
        best: tuple[float, str] | None = None
        for f in index.fences:
            if f.kind in ROUTE_KINDS:
                d = distance_m(f.geometry, lon, lat)
                if best is None or (d, f.id) < best:
                    best = (d, f.id)
        return best

    minx, miny, maxx, maxy = shapely.total_bounds([f.geometry for f in index.fences])
    rng = random.Random(7)
    for _ in range(300):
        lon, lat = rng.uniform(minx - 0.02, maxx + 0.02), rng.uniform(miny - 0.02, maxy + 0.02)
        got = det._nearest_route(index, lon, lat)
        want = full_scan(lon, lat)
        assert want is not None and got is not None
        assert (got["id"], got["distance_m"]) == (want[1], round(want[0], 1))
