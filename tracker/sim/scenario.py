"""Port traffic with ground truth: trucks and containers moving through a port's fence set.

A trip is planned as a chain of *legs* (a stay at a point, or a drive along a polyline at constant
speed) in a local metric plane, from the road graph of :mod:`tracker.sim.roads`. A container being
hauled shares its truck's legs, so the two are co-located by construction; once dropped it gets legs
of its own. Only after every trip is planned are the legs sampled at each device's reporting times and
passed through the GPS model of :mod:`tracker.sim.gps`.

Trip kinds:

* ``export_cleared``: gate queue → inspection area (customs ``cleared``) → quay (``loaded``) → exit gate.
  Every anomaly is injected on this kind, since the threat is the window between clearance and loading.
* ``export_terminal``: gate queue → terminal, the container is left in the yard → exit gate.
* ``import``: gate queue → terminal, a container standing in the yard is picked up → exit gate.

Guarantees for a clean trip (no anomaly), so that it should raise no security alert:

* the truck drives only along corridor centre lines, plus straight access spurs of at most
  :data:`~tracker.sim.roads.MAX_SPUR_M` (+20 m) between a road node and a place; it never stops on a road;
* it stands still only inside a gate (queue), the inspection area, a terminal, or at a quay for at most
  :data:`QUAY_MAX_DWELL_S` (quays are not authorised stop zones; handing a container over takes minutes);
* a container stands still only in a terminal yard (at least :data:`YARD_INSET_M` inside the terminal and
  the authorised zones and away from corridors and quays, so noisy fixes of a parked box stay there), or at the quay
  for at most ``QUAY_MAX_DWELL_S`` before it is ``loaded``; its last fix on the quay precedes the
  ``loaded`` report by more than any late delivery (the box is on board, its tracker quiet in the hold);
* no device is silent longer than its reporting interval + ``GpsConfig.max_dropout_extra_s`` (60 s)
  while on a trip, and no tracker stops inside the port except a loaded box: trucks keep reporting
  through the exit gate and out along the public road (:meth:`_Planner.outside_path`, straight outward
  or the nearest bearing that crosses no restricted fence) for at least :data:`OUTSIDE_MIN_M`, ending
  :data:`OUTSIDE_CLEAR_M` clear of every fence; a box leaving on a truck goes quiet there with it; a box
  left in a yard reports at the yard interval until the scenario's last trip ends;
* a trip starts outside every fence too and drives in to its gate; between trips the truck is silent
  outside, and its next trip starts no sooner than the city crossing takes at :data:`TRANSFER_SPEED`,
  so consecutive fixes of a device never imply more than road speed (no teleports);
* inside the port every fix lies inside the boundary (true positions are on roads inside it; a noisy or
  outlier fix that would fall outside is replaced by the true position); outside it only on the public road;
* access spurs cross no restricted fence (:func:`tracker.sim.roads.build` picks another road node), and the
  corridor centre lines lie outside restricted fences, so a clean trip's true path never enters one;
* a span's first and last fix carry noise but no multipath outlier;
* a container is within a few metres of its truck whenever it is hauled (identical true position).

Going-dark and spoofing anomalies are placed between the gate-in and the gate-out, where they matter.

``hours`` is the arrival window: trips start within it and run to completion.
"""

from __future__ import annotations

import enum
import json
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
import shapely.ops

from geofences import FenceKind, load_port
from tracker.core.model import DeviceKind, Inspection, InspectionResult, Ping
from tracker.sim.anomalies import (
    ALL_KINDS,
    DARK_S,
    DETOUR_STAY_S,
    RENDEZVOUS_GAP_M,
    SHOULDER_OFFSET_M,
    SPOOF_DISTANCE_M,
    SPOOF_FIXES,
    STOP_MIN_S,
    AnomalyKind,
    GroundTruth,
)
from tracker.sim.gps import GpsConfig, observe
from tracker.sim.iso6346 import container_number
from tracker.sim.roads import Place, RoadGraph, build

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_START = datetime(2024, 3, 4, 6, 0, tzinfo=UTC)
QUAY_MAX_DWELL_S = 180.0
SPUR_SPEED = 3.0  # m/s inside a place or on its access spur
CREEP_SPEED = 1.2  # m/s while a gate queue moves up
ROAD_SPEED = (7.0, 12.0)  # m/s on internal port roads (25–43 km/h)
OUTSIDE_SPEED = (9.0, 14.0)  # m/s on the public road between a gate and the city (32–50 km/h)
OUTSIDE_CLEAR_M = 40.0
"""A truck's fixes outside the port end at least this far from every fence, so GPS noise cannot put them back in."""
OUTSIDE_MIN_M = 1200.0
"""A truck drives at least this far from its gate before it goes quiet, and starts at least this far out."""
OUTSIDE_TAIL_M = 300.0
"""...of which at least this much lies clear of every fence (a few fixes outside the port, not one)."""
TRANSFER_SPEED = 15.0
"""m/s (54 km/h): the fastest a truck crosses the city between two trips, so a reappearance is always plausible."""
YARD_INSET_M = 20.0
ANOMALY_RESERVE_S = 3600.0
"""How long a roadside anomaly keeps its shoulder to itself (a separated box waits up to about an hour)."""
DARK_GRID_S = 5.0
"""Spacing of the candidate instants a blackout may start at."""
DARK_DRIVING_MS = 2.5
"""A blackout starts after the truck has driven at least this fast for three reports (faster than a gate queue
creeps), so the motion detector has seen it moving."""
RENDEZVOUS_RULE_S = 300.0
"""The meeting length the product's rendezvous rule looks for; injected meetings outlast it (see road_anomaly)."""
STOP_RULE_S = 300.0
"""The stop length the product's unexpected-stop rule looks for outside named zones; injected stops outlast it by two
reporting intervals of the slower tracker on board (see road_anomaly)."""
ANOMALY_AUTHORIZED_CLEAR_M = 40.0
"""A roadside anomaly is staged this far from every authorised zone: beyond the 25 m fence hysteresis plus noise."""
ANOMALY_HOLD_S = {
    AnomalyKind.POST_CLEARANCE_DETOUR: 300.0,  # leaves the road at speed: the shoulder is only passed
    AnomalyKind.UNEXPECTED_STOP: STOP_MIN_S[AnomalyKind.UNEXPECTED_STOP][1] + 300.0,
    AnomalyKind.RENDEZVOUS: STOP_MIN_S[AnomalyKind.RENDEZVOUS][1] + 600.0,
    AnomalyKind.CONTAINER_SEPARATED: ANOMALY_RESERVE_S,
}
"""The longest each roadside kind can keep its shoulder (the rendezvous waits for slow trackers, a separated box for
the truck's round trip to the quay): a shoulder is free for another anomaly outside that span."""
ANOMALY_MAX_WAIT_S = 3600.0
"""How long a truck staging a roadside anomaly waits in the inspection area for a free shoulder before sharing one."""
ANOMALY_WAIT_STEP_S = 120.0
ANOMALY_RELEASE_S = 300.0
"""A shoulder stays reserved this long after the anomaly staged there ends (GPS noise, a late fix, the grace)."""
ANOMALY_QUAY_TRIES = 8
"""Other quays (routes) tried for a free shoulder before two anomalies share one."""
ANOMALY_CLEAR_M = 80.0
"""How far apart two roadside anomalies staged at the same time must be (beyond every cross-device radius, 30 m,
and the noise of both devices)."""
"""A box in a yard stands this far inside its terminal and authorised area and away from corridors: a spot on
the edge puts noisy fixes on the road outside, where a parked box is an alert."""


class StagingStyle(enum.StrEnum):
    """How anomalies are staged.

    ``clear``: where no detector could mistake them for routine traffic (a daytime shift, each device at its own
    rhythm, roadside anomalies more than :data:`ANOMALY_AUTHORIZED_CLEAR_M` from every authorised zone).

    ``edge``: the cases the first style avoids by design. The shift runs at night (:data:`NIGHT_START`), every
    tracker reports sparsely (:data:`SPARSE_INTERVALS`), arrivals come in a burst with
    longer gate queues so the gates and the inspection area are congested, roadside anomalies take the shoulder
    nearest an authorised zone that is still beyond its hysteresis band (:data:`EDGE_AUTHORIZED_M`), a blackout may
    start while the truck stands in a queue (then it outlasts three parked reports), and half the door openings
    happen in the inspection area right after the clearance, among the queue.
    """

    CLEAR = "clear"
    EDGE = "edge"


NIGHT_START = datetime(2024, 3, 4, 3, 0, tzinfo=UTC)
"""The edge style's default start: midnight at Santos (UTC-3), 22:00 at Callao (UTC-5)."""
SPARSE_INTERVALS = (120.0, 300.0)
"""Reporting intervals of every device in the edge style (a night shift of battery-saving trackers), each keeping
its own for its whole life: a tracker that changed its rhythm mid-shift would be a different case."""
EDGE_AUTHORIZED_M = (30.0, 45.0)
"""Edge-style roadside anomalies: this far from the nearest authorised zone when a shoulder allows, i.e. just past
the 25 m hysteresis band plus one GPS sigma; beyond it no fence holds a device that never entered it."""
EDGE_ARRIVAL_S = 1200.0
"""Edge style: every truck's first trip starts within this span (the clear style spreads them over an hour)."""
EDGE_QUEUE_S = (400.0, 1500.0)
"""Edge style: a gate queue lasts this long (clear style: 120-720 s)."""
PARKED_DARK_S = 3 * 300.0
"""A parked tracker may report every five minutes: a blackout starting while parked outlasts three such reports."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    port: str = "santos"
    trucks: int = 50
    hours: float = 2.0
    anomaly_share: float = 0.05
    seed: int = 1
    start: datetime = DEFAULT_START
    gps: GpsConfig = field(default_factory=GpsConfig)
    anomaly_kinds: tuple[AnomalyKind, ...] = ALL_KINDS
    cleared_share: float = 0.5  # of clean trips; the rest split between terminal drops and imports
    import_share: float = 0.25
    style: StagingStyle = StagingStyle.CLEAR


@dataclass(frozen=True, slots=True)
class Trip:
    trip: int
    truck: str
    container: str
    kind: str  # export_cleared | export_terminal | import
    start: datetime
    end: datetime
    anomaly: AnomalyKind | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "trip": self.trip,
            "truck": self.truck,
            "container": self.container,
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "anomaly": None if self.anomaly is None else self.anomaly.value,
        }


@dataclass(frozen=True, slots=True)
class Haul:
    """An interval during which a container rides on a truck (true positions identical)."""

    container: str
    truck: str
    start: datetime
    end: datetime


@dataclass
class Scenario:
    pings: list[Ping]  # delivery order, with duplicates and late messages
    inspections: list[Inspection]
    devices: dict[str, DeviceKind]
    pairs: dict[str, str]  # container -> truck, as known to the system when the trip starts
    truth: list[GroundTruth]
    trips: int
    clean_trips: int
    km: float
    trip_log: list[Trip] = field(default_factory=list)
    hauls: list[Haul] = field(default_factory=list)
    port: str = "santos"
    start: datetime = DEFAULT_START
    seed: int = 0
    unstaged: int = 0
    """Roadside anomalies planned but run as clean trips: no shoulder clear of authorised zones came free in time."""
    _tracks: dict[str, list[Leg]] = field(default_factory=dict, repr=False)
    _proj: Any = field(default=None, repr=False)

    def true_position(self, device_id: str, ts: datetime) -> tuple[float, float]:
        """(lon, lat) the device really was at ``ts``; only for a freshly generated scenario."""
        legs = self._tracks[device_id]
        t = np.array([(ts - self.start).total_seconds()])
        x, y, _, _ = positions(legs, t)
        lon, lat = self._proj.to_lonlat(x, y)
        return float(lon[0]), float(lat[0])

    def write_jsonl(self, path: str | Path) -> None:
        with Path(path).open("w", encoding="utf-8") as fh:
            for obj in self.records():
                fh.write(json.dumps(obj, separators=(",", ":")))
                fh.write("\n")

    def records(self) -> Iterator[dict[str, Any]]:
        yield {
            "type": "meta",
            "port": self.port,
            "start": self.start.isoformat(),
            "seed": self.seed,
            "trips": self.trips,
            "clean_trips": self.clean_trips,
            "km": round(self.km, 3),
            "devices": {k: v.value for k, v in self.devices.items()},
            "pairs": self.pairs,
        }
        for trip in self.trip_log:
            yield {"type": "trip", **trip.to_json()}
        for h in self.hauls:
            yield {
                "type": "haul",
                "container": h.container,
                "truck": h.truck,
                "start": h.start.isoformat(),
                "end": h.end.isoformat(),
            }
        for g in self.truth:
            yield {"type": "truth", **g.to_json()}
        for i in self.inspections:
            yield {"type": "inspection", **inspection_json(i)}
        for p in self.pings:
            yield {"type": "ping", "device_id": p.device_id, **ping_payload(p), "received": _iso(p.received)}


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def ping_payload(p: Ping) -> dict[str, Any]:
    """The native ``trackers/{id}/ping`` body."""
    body: dict[str, Any] = {"ts": p.ts.isoformat(), "lat": p.lat, "lon": p.lon}
    if p.speed is not None:
        body["speed"] = p.speed
    if p.heading is not None:
        body["heading"] = p.heading
    if p.accuracy is not None:
        body["accuracy"] = p.accuracy
    if p.events:
        body["events"] = list(p.events)
    return body


def inspection_json(i: Inspection) -> dict[str, Any]:
    """The ``customs/inspections`` body."""
    return {
        "container_no": i.container_no,
        "result": i.result.value,
        "ts": i.ts.isoformat(),
        "facility": i.facility,
        "seal": i.seal,
        "inspection_id": i.inspection_id,
    }


def read_jsonl(path: str | Path) -> Scenario:
    meta: dict[str, Any] = {}
    pings: list[Ping] = []
    inspections: list[Inspection] = []
    truth: list[GroundTruth] = []
    trips: list[Trip] = []
    hauls: list[Haul] = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            obj = json.loads(line)
            kind = obj.pop("type", None)
            if kind == "ping":
                rec = obj.get("received")
                pings.append(
                    Ping(
                        device_id=obj["device_id"],
                        ts=datetime.fromisoformat(obj["ts"]),
                        lon=float(obj["lon"]),
                        lat=float(obj["lat"]),
                        speed=obj.get("speed"),
                        heading=obj.get("heading"),
                        accuracy=obj.get("accuracy"),
                        events=tuple(obj.get("events", ())),
                        received=None if rec is None else datetime.fromisoformat(rec),
                    )
                )
            elif kind == "inspection":
                inspections.append(
                    Inspection(
                        container_no=obj["container_no"],
                        result=InspectionResult(obj["result"]),
                        ts=datetime.fromisoformat(obj["ts"]),
                        facility=obj.get("facility"),
                        seal=obj.get("seal"),
                        inspection_id=obj.get("inspection_id"),
                    )
                )
            elif kind == "truth":
                truth.append(GroundTruth.from_json(obj))
            elif kind == "trip":
                anomaly = obj.get("anomaly")
                trips.append(
                    Trip(
                        trip=int(obj["trip"]),
                        truck=obj["truck"],
                        container=obj["container"],
                        kind=obj["kind"],
                        start=datetime.fromisoformat(obj["start"]),
                        end=datetime.fromisoformat(obj["end"]),
                        anomaly=None if anomaly is None else AnomalyKind(anomaly),
                    )
                )
            elif kind == "haul":
                hauls.append(
                    Haul(
                        obj["container"],
                        obj["truck"],
                        datetime.fromisoformat(obj["start"]),
                        datetime.fromisoformat(obj["end"]),
                    )
                )
            elif kind == "meta":
                meta = obj
    return Scenario(
        pings=pings,
        inspections=inspections,
        devices={k: DeviceKind(v) for k, v in meta.get("devices", {}).items()},
        pairs=dict(meta.get("pairs", {})),
        truth=truth,
        trips=int(meta.get("trips", len(trips))),
        clean_trips=int(meta.get("clean_trips", 0)),
        km=float(meta.get("km", 0.0)),
        trip_log=trips,
        hauls=hauls,
        port=str(meta.get("port", "")),
        start=datetime.fromisoformat(meta["start"]) if "start" in meta else DEFAULT_START,
        seed=int(meta.get("seed", 0)),
    )


# --------------------------------------------------------------------------------------------- motion


@dataclass(frozen=True, slots=True)
class Leg:
    """A stay (one point) or a constant-speed drive along a polyline, between two scenario times (s)."""

    t0: float
    t1: float
    x: FloatArray
    y: FloatArray
    cum: FloatArray  # cumulative distance along the polyline; [0.0] for a stay

    @property
    def length(self) -> float:
        return float(self.cum[-1])


def positions(legs: list[Leg], t: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """True x, y, speed, heading (NaN while standing) at sorted times; times between legs hold the last point."""
    n = len(t)
    x = np.empty(n)
    y = np.empty(n)
    speed = np.zeros(n)
    heading = np.full(n, np.nan)
    starts = np.array([leg.t0 for leg in legs])
    bounds = [*np.searchsorted(t, starts, side="left").tolist(), n]
    bounds[0] = 0
    for i, leg in enumerate(legs):
        lo, hi = bounds[i], bounds[i + 1]
        if hi <= lo:
            continue
        if len(leg.x) == 1:
            x[lo:hi] = leg.x[0]
            y[lo:hi] = leg.y[0]
            continue
        dur = leg.t1 - leg.t0
        d = np.clip((t[lo:hi] - leg.t0) / dur, 0.0, 1.0) * leg.length
        x[lo:hi] = np.interp(d, leg.cum, leg.x)
        y[lo:hi] = np.interp(d, leg.cum, leg.y)
        seg = np.clip(np.searchsorted(leg.cum, d, side="right") - 1, 0, len(leg.x) - 2)
        dx = leg.x[seg + 1] - leg.x[seg]
        dy = leg.y[seg + 1] - leg.y[seg]
        heading[lo:hi] = np.degrees(np.arctan2(dx, dy)) % 360.0
        inside = t[lo:hi] < leg.t1
        speed[lo:hi] = np.where(inside, leg.length / dur, 0.0)
    return x, y, speed, heading


class _Track:
    """Builds one device's legs; riders (hauled containers) receive every leg the truck drives."""

    def __init__(self, device_id: str, kind: DeviceKind, interval: float, t: float, x: float, y: float) -> None:
        self.device_id = device_id
        self.kind = kind
        self.interval = interval
        self.t, self.x, self.y = t, x, y
        self.spans: list[tuple[list[Leg], float]] = []
        self.riders: list[_Track] = []
        self.km = 0.0
        self.silent: list[tuple[float, float]] = []
        self.free: list[tuple[float, float]] = []  # windows whose fixes may lie outside the port
        self.events: list[tuple[float, tuple[str, ...]]] = []
        self.spoof: list[tuple[float, int, float, float, int]] = []  # (from, fixes, dx, dy, trip)

    def new_span(self, t: float, x: float, y: float, interval: float | None = None) -> None:
        # fix times are rounded to the millisecond: a span starting between two milliseconds would have its
        # first fix sampled just before it, at wherever the device went quiet (a teleport, at speed zero)
        t = round(t, 3)
        self.t, self.x, self.y = t, x, y
        self.spans.append(([], self.interval if interval is None else interval))

    def _push(self, leg: Leg) -> None:
        for tr in (self, *self.riders):
            tr.spans[-1][0].append(leg)
            tr.t = leg.t1
            tr.x = float(leg.x[-1])
            tr.y = float(leg.y[-1])

    def stay(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self._push(Leg(self.t, self.t + seconds, np.array([self.x]), np.array([self.y]), np.zeros(1)))

    def stay_until(self, t: float) -> None:
        self.stay(t - self.t)

    def drive(self, pts: Iterable[tuple[float, float]], speed: float) -> None:
        xs = [self.x]
        ys = [self.y]
        for px, py in pts:
            if abs(px - xs[-1]) > 1e-6 or abs(py - ys[-1]) > 1e-6:
                xs.append(px)
                ys.append(py)
        if len(xs) < 2:
            return
        x = np.array(xs)
        y = np.array(ys)
        cum = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
        length = float(cum[-1])
        self.km += length / 1000.0
        self._push(Leg(self.t, self.t + length / speed, x, y, cum))

    def all_legs(self) -> list[Leg]:
        return [leg for legs, _ in self.spans for leg in legs]


# ------------------------------------------------------------------------------------------- planning


class _Planner:
    def __init__(self, cfg: SimConfig, graph: RoadGraph) -> None:
        self.cfg = cfg
        self.g = graph
        self.rng = random.Random(cfg.seed)
        self.tracks: dict[str, _Track] = {}
        self.inspections: list[Inspection] = []
        self.truth: list[GroundTruth] = []
        self.trips: list[Trip] = []
        self.hauls: list[tuple[str, str, float, float]] = []
        self.pairs: dict[str, str] = {}
        self.used_numbers: set[str] = set()
        self.yard: list[_Track] = []  # containers left in a yard until the scenario ends
        self.extra_trucks = 0
        self.unstaged = 0  # anomalies planned but not staged: no shoulder came free (see cleared_trip)
        self.edge = cfg.style is StagingStyle.EDGE
        self.unstaged_trip = 0
        self._outside: dict[str, list[tuple[float, float]]] = {}
        self._yards: dict[str, Any] = {}
        self._staged: list[tuple[float, float, float, float]] = []  # roadside anomalies: x, y, from, to
        self._route_area: Any = None  # union of the fences a cleared box may be driven through, projected
        self._clear = graph.fences.buffer(OUTSIDE_CLEAR_M) if not graph.fences.is_empty else graph.fences
        shapely.prepare(self._clear)
        gates = graph.places.get(FenceKind.GATE, [])
        terminals = graph.places.get(FenceKind.TERMINAL, [])
        quays = graph.places.get(FenceKind.QUAY, [])
        inspection = graph.places.get(FenceKind.INSPECTION_AREA, [])
        if not (gates and terminals and quays and inspection):
            raise ValueError("the port needs reachable gates, terminals, quays and an inspection area")
        self.gates, self.terminals, self.quays, self.inspection = gates, terminals, quays, inspection

    def at(self, t: float) -> datetime:
        # fix times are rounded to the millisecond, so truth must be too or its bounds miss the fix
        return self.cfg.start + timedelta(seconds=round(t, 3))

    def speed(self) -> float:
        return self.rng.uniform(*ROAD_SPEED)

    # movement helpers ------------------------------------------------------------------------------

    def route(self, tr: _Track, a: int, b: int) -> None:
        tr.drive(self.g.path(self.g.route(a, b)), self.speed())

    def enter(self, tr: _Track, place: Place) -> None:
        tr.drive([place.anchor], SPUR_SPEED)

    def leave(self, tr: _Track, place: Place) -> None:
        tr.drive([self.node_xy(place.node)], SPUR_SPEED)

    def node_xy(self, node: int) -> tuple[float, float]:
        return float(self.g.xy[node, 0]), float(self.g.xy[node, 1])

    def gate_axis(self, gate: Place) -> tuple[tuple[float, float], tuple[float, float]]:
        """Axis ends ordered outer → inner (the inner end is nearer the road node)."""
        a, b = gate.axis
        n = self.node_xy(gate.node)
        return (a, b) if math.dist(b, n) <= math.dist(a, n) else (b, a)

    def queue_in(self, tr: _Track, gate: Place) -> None:
        """Stop-and-go creep through the gate lane: short moves, pauses of at most 90 s."""
        outer, inner = self.gate_axis(gate)
        total = self.rng.uniform(*(EDGE_QUEUE_S if self.edge else (120.0, 720.0)))
        chunks = max(2, int(math.dist(outer, inner) // 8.0))
        pause = min(90.0, max(5.0, (total - math.dist(outer, inner) / CREEP_SPEED) / chunks))
        for k in range(1, chunks + 1):
            f = k / chunks
            tr.stay(pause * self.rng.uniform(0.5, 1.5) if pause * 1.5 <= 90.0 else pause)
            tr.drive([(outer[0] + (inner[0] - outer[0]) * f, outer[1] + (inner[1] - outer[1]) * f)], CREEP_SPEED)
        tr.drive([self.node_xy(gate.node)], SPUR_SPEED)

    def queue_out(self, tr: _Track, gate: Place) -> None:
        outer, inner = self.gate_axis(gate)
        tr.drive([inner], SPUR_SPEED)
        tr.stay(self.rng.uniform(10.0, 40.0))  # barrier and plate check
        tr.drive([outer], 2.0)

    def pick_interval(self) -> float:
        """A device's reporting interval for its whole life: the fleet's mix, or battery-saving only (edge style)."""
        return self.rng.choice(SPARSE_INTERVALS) if self.edge else self.cfg.gps.pick_interval(self.rng)

    def new_truck_track(self, device_id: str, interval: float | None = None) -> _Track:
        iv = self.pick_interval() if interval is None else interval
        tr = _Track(device_id, DeviceKind.TRUCK, iv, 0.0, 0.0, 0.0)
        self.tracks[device_id] = tr
        return tr

    def new_container(self, t: float, x: float, y: float) -> _Track:
        cid = container_number(self.rng, self.used_numbers)
        tr = _Track(cid, DeviceKind.CONTAINER, self.pick_interval(), t, x, y)
        self.tracks[cid] = tr
        return tr

    def yard_area(self, place: Place) -> Any:
        """Where a box may stand in ``place``: well inside the place and the authorised zones, off every corridor."""
        hit = self._yards.get(place.fence_id)
        if hit is None:
            area = place.geometry.buffer(-YARD_INSET_M).intersection(self.g.authorized.buffer(-YARD_INSET_M))
            if not self.g.corridors.is_empty:
                area = area.difference(self.g.corridors.buffer(YARD_INSET_M))
            # nor on a quay: the apron is where a box waits minutes for the crane, not where it is stacked (Callao's
            # derived berth strip runs along the edge of DP World's yard, and boxes parked in it dwelt for hours)
            for quay in self.quays:
                area = area.difference(quay.geometry.buffer(YARD_INSET_M))
            hit = self._yards[place.fence_id] = area
        return hit

    def yard_spot(self, place: Place) -> tuple[float, float]:
        area = self.yard_area(place)
        if area.is_empty:
            return place.anchor
        for _ in range(20):
            r = self.rng.uniform(5.0, 60.0)
            b = self.rng.uniform(0.0, 2 * math.pi)
            p = (place.anchor[0] + r * math.sin(b), place.anchor[1] + r * math.cos(b))
            if shapely.contains_xy(area, *p):
                return p
        q = shapely.ops.nearest_points(area, shapely.Point(place.anchor))[0]
        return float(q.x), float(q.y)

    def outside_path(self, gate: Place) -> list[tuple[float, float]]:
        """The public road from the gate's outer end out of the port: ``[outer, ..., far]``, clear of fences at the end.

        Straight outward from the gate lane, or the nearest bearing to it that leaves every fence (plus
        :data:`OUTSIDE_CLEAR_M`) without crossing a restricted fence; the last :data:`OUTSIDE_TAIL_M` or more lie
        clear of every fence, so the fixes before a truck goes quiet are outside the port, where silence is no alert.
        """
        hit = self._outside.get(gate.fence_id)
        if hit is not None:
            return hit
        outer, inner = self.gate_axis(gate)
        base = math.atan2(outer[0] - inner[0], outer[1] - inner[1])
        path: list[tuple[float, float]] | None = None
        for off in (0, 20, -20, 40, -40, 60, -60, 90, -90, 120, -120, 150, -150, 180):
            b = base + math.radians(off)
            ux, uy = math.sin(b), math.cos(b)
            for dist in np.arange(100.0, 4001.0, 50.0).tolist():
                p = (outer[0] + ux * dist, outer[1] + uy * dist)
                if shapely.contains_xy(self._clear, *p):
                    continue
                total = max(dist + OUTSIDE_TAIL_M, OUTSIDE_MIN_M)
                far = (outer[0] + ux * total, outer[1] + uy * total)
                if not self.g.restricted.is_empty and shapely.LineString([outer, far]).intersects(self.g.restricted):
                    break
                if shapely.LineString([p, far]).intersects(self._clear):
                    continue
                path = [outer, p, far]
                break
            if path is not None:
                break
        if path is None:  # no clear bearing: the nearest point outside the boundary, as a detour does
            far = self.warehouse(outer)
            path = [outer, far]
        self._outside[gate.fence_id] = path
        return path

    def arrive(self, tr: _Track, gate: Place, t: float) -> None:
        """Start a trip outside the port and drive in to the gate's outer end (the tracker reports all along)."""
        path = self.outside_path(gate)
        tr.new_span(t, *path[-1])
        tr.drive(path[-2::-1], self.rng.uniform(*OUTSIDE_SPEED))
        for rider in (tr, *tr.riders):
            rider.free.append((t, tr.t))

    def depart(self, tr: _Track, gate: Place) -> None:
        """From the gate's outer end out of the port, still reporting: a tracker does not die at the barrier."""
        t0 = tr.t
        tr.drive(self.outside_path(gate)[1:], self.rng.uniform(*OUTSIDE_SPEED))
        for rider in (tr, *tr.riders):
            rider.free.append((t0, tr.t))

    def shoulder(self, route: list[int], k: int) -> tuple[float, float]:
        """A point beside the carriageway at route node ``k`` (pulled over, not in the traffic lane)."""
        a = self.node_xy(route[max(0, k - 1)])
        b = self.node_xy(route[min(len(route) - 1, k + 1)])
        dx, dy = b[0] - a[0], b[1] - a[1]
        norm = math.hypot(dx, dy) or 1.0
        px, py = self.node_xy(route[k])
        return px - dy / norm * SHOULDER_OFFSET_M, py + dx / norm * SHOULDER_OFFSET_M

    # trips -----------------------------------------------------------------------------------------

    def plan(self) -> None:
        cfg = self.cfg
        window = cfg.hours * 3600.0
        anomalous = 0
        kinds = list(cfg.anomaly_kinds)
        self.rng.shuffle(kinds)
        trip_no = 0
        for i in range(cfg.trucks):
            truck = self.new_truck_track(f"TRK-{i + 1:04d}")
            t = self.rng.uniform(0.0, min(window, EDGE_ARRIVAL_S if self.edge else 3600.0))
            while t < window:
                trip_no += 1
                anomaly: AnomalyKind | None = None
                if kinds and self.rng.random() < cfg.anomaly_share:
                    anomaly = kinds[anomalous % len(kinds)]
                    anomalous += 1
                    kind = "export_cleared"
                else:
                    r = self.rng.random()
                    kind = (
                        "export_cleared"
                        if r < cfg.cleared_share
                        else "import"
                        if r < cfg.cleared_share + cfg.import_share
                        else "export_terminal"
                    )
                end = self.trip(trip_no, truck, t, kind, anomaly)
                t = end + self.rng.uniform(20 * 60.0, 120 * 60.0)
        horizon = max((trip.end for trip in self.trips), default=cfg.start)
        end_t = (horizon - cfg.start).total_seconds()
        for c in self.yard:
            c.stay_until(max(end_t, c.t + 1.0))

    def trip(self, no: int, truck: _Track, t: float, kind: str, anomaly: AnomalyKind | None) -> float:
        rng = self.rng
        gate = rng.choice(self.gates)
        far = self.outside_path(gate)[-1]
        if truck.spans:  # from where it went quiet after its last trip, at no more than city speed
            t = max(t, truck.t + math.dist((truck.x, truck.y), far) / TRANSFER_SPEED)
        if kind == "import":
            terminal = rng.choice(self.terminals)
            spot = self.yard_spot(terminal)
            cont = self.new_container(0.0, *spot)
            self.pairs[cont.device_id] = truck.device_id
            self.arrive(truck, gate, t)
            inside_from = truck.t
            self.queue_in(truck, gate)
            self.route(truck, gate.node, terminal.node)
            self.enter(truck, terminal)
            truck.stay(rng.uniform(5 * 60.0, 55 * 60.0))
            truck.drive([spot], SPUR_SPEED)
            since = max(0.0, truck.t - rng.uniform(3600.0, 4 * 3600.0))
            cont.new_span(since, *spot, interval=max(cont.interval, self.cfg.gps.yard_interval_s))
            cont.stay_until(truck.t + rng.uniform(30.0, 90.0))
            truck.stay_until(cont.t + rng.uniform(10.0, 30.0))
            cont.new_span(cont.t, cont.x, cont.y)
            cont.stay_until(truck.t)
            haul_from = truck.t
            truck.riders.append(cont)
            self.leave(truck, terminal)
            node = terminal.node
        else:
            cont = self.new_container(t, *far)
            cont.new_span(t, *far)
            self.pairs[cont.device_id] = truck.device_id
            truck.riders.append(cont)
            haul_from = t
            self.arrive(truck, gate, t)
            inside_from = truck.t
            self.queue_in(truck, gate)
            node = gate.node
            if kind == "export_terminal":
                terminal = rng.choice(self.terminals)
                self.route(truck, node, terminal.node)
                self.enter(truck, terminal)
                dwell_until = truck.t + rng.uniform(5 * 60.0, 60 * 60.0)
                spot = self.yard_spot(terminal)
                truck.drive([spot], SPUR_SPEED)
                truck.stay(rng.uniform(60.0, 180.0))
                truck.riders.remove(cont)
                self.hauls.append((cont.device_id, truck.device_id, haul_from, truck.t))
                cont.new_span(cont.t, cont.x, cont.y, interval=max(cont.interval, self.cfg.gps.yard_interval_s))
                self.yard.append(cont)
                truck.drive([terminal.anchor], SPUR_SPEED)
                truck.stay_until(max(dwell_until, truck.t))
                self.leave(truck, terminal)
                node = terminal.node
            else:
                node = self.cleared_trip(no, truck, cont, node, anomaly, haul_from)
        exit_gate = rng.choice(self.gates)
        self.route(truck, node, exit_gate.node)
        self.queue_out(truck, exit_gate)
        inside_to = truck.t
        self.depart(truck, exit_gate)
        if kind == "import":  # the box leaves the port on the truck and goes quiet outside with it
            truck.riders.remove(cont)
            self.hauls.append((cont.device_id, truck.device_id, haul_from, truck.t))
        start = self.at(truck.spans[-1][0][0].t0)
        if self.unstaged_trip == no:
            anomaly = None
        trip = Trip(no, truck.device_id, cont.device_id, kind, start, self.at(truck.t), anomaly)
        self.trips.append(trip)
        if anomaly in (AnomalyKind.GOING_DARK, AnomalyKind.GPS_SPOOFING):  # inside the port, where they matter
            self.timed_anomaly(no, truck, anomaly, inside_from, inside_to)
        return truck.t

    def cleared_trip(
        self, no: int, truck: _Track, cont: _Track, node: int, anomaly: AnomalyKind | None, haul_from: float
    ) -> int:
        rng = self.rng
        insp = rng.choice(self.inspection)
        quay = rng.choice(self.quays)
        seal = f"BR{rng.randrange(10_000_000):07d}"
        self.route(truck, node, insp.node)
        self.enter(truck, insp)
        long_trip = anomaly in (AnomalyKind.GOING_DARK, AnomalyKind.GPS_SPOOFING)
        dwell = rng.uniform(25 * 60.0, 45 * 60.0) if long_trip else rng.uniform(10 * 60.0, 40 * 60.0)
        cleared_at = truck.t + dwell - rng.uniform(30.0, 120.0)
        truck.stay(dwell)
        self.inspections.append(
            Inspection(
                cont.device_id, InspectionResult.CLEARED, self.at(cleared_at), insp.fence_id, seal, f"SIM-{no:06d}-C"
            )
        )
        route = self.g.route(insp.node, quay.node)
        k: int | None = None
        if anomaly in (
            AnomalyKind.POST_CLEARANCE_DETOUR,
            AnomalyKind.UNEXPECTED_STOP,
            AnomalyKind.RENDEZVOUS,
            AnomalyKind.CONTAINER_SEPARATED,
        ):
            # a free shoulder on the way to this quay, or to another one (the route decides where it is staged); in
            # a small port every route shares the same few shoulders, so the truck waits in the inspection area for
            # one to come free rather than stage a second anomaly on a shoulder already holding one
            waited = 0.0
            while k is None:
                for q in [quay, *rng.sample(self.quays, min(len(self.quays), ANOMALY_QUAY_TRIES))]:
                    r = self.g.route(insp.node, q.node)
                    k = self.pick_node(r, q, truck.t, strict=True, hold=ANOMALY_HOLD_S[anomaly])
                    if k is not None:
                        quay, route = q, r
                        break
                if k is None and waited >= ANOMALY_MAX_WAIT_S:
                    break
                if k is None:
                    truck.stay(ANOMALY_WAIT_STEP_S)
                    waited += ANOMALY_WAIT_STEP_S
            self.leave(truck, insp)
        if k is None and anomaly in ANOMALY_HOLD_S:
            # no shoulder came free: an anomaly staged beside another one is a meeting no truth item describes, so
            # this trip runs clean instead (counted in ``unstaged``, never silently)
            self.unstaged += 1
            self.unstaged_trip = no
            anomaly = None
            truck.drive(self.g.path(route), self.speed())
        elif anomaly in ANOMALY_HOLD_S:
            assert k is not None
            staged = len(self._staged) - 1
            truck.drive(self.g.path(route[: k + 1]), self.speed())
            haul_from = self.road_anomaly(no, truck, cont, route, k, quay, anomaly, haul_from)
            # the shoulder is free again once the truck has left it (the reservation was a guess of the duration)
            x, y, a, _ = self._staged[staged]
            self._staged[staged] = (x, y, a, truck.t + ANOMALY_RELEASE_S)
            truck.drive(self.g.path(route[k:]), self.speed())
        elif anomaly is AnomalyKind.DOOR_OPEN_AFTER_CLEARANCE:
            self.leave(truck, insp)
            t0 = truck.t
            truck.drive(self.g.path(route), self.speed())
            if self.edge and rng.random() < 0.5:  # in the inspection area, among the queue, right after clearance
                t_open = cleared_at + rng.uniform(5.0, 20.0)
            else:
                t_open = t0 + (truck.t - t0) * rng.uniform(0.2, 0.6)
            t_close = t_open + rng.uniform(60.0, 240.0)
            cont.events.append((t_open, ("door_open",)))
            cont.events.append((t_close, ("door_close",)))
            self.truth.append(
                GroundTruth(cont.device_id, anomaly, self.at(t_open), self.at(t_close), truck.device_id, no)
            )
        else:
            self.leave(truck, insp)
            truck.drive(self.g.path(route), self.speed())
        self.enter(truck, quay)
        arrival = truck.t
        truck.stay(rng.uniform(30.0, 80.0))
        truck.riders.remove(cont)
        self.hauls.append((cont.device_id, truck.device_id, haul_from, truck.t))
        loaded_at = truck.t + rng.uniform(60.0, 120.0)
        # last fix on the quay: the box is lifted on board and customs report it loaded later than any late
        # delivery of that fix (``late_max_s`` + latency), so the loaded report always follows the last fix
        cont.stay_until(loaded_at - rng.uniform(25.0, 40.0))
        self.inspections.append(
            Inspection(
                cont.device_id, InspectionResult.LOADED, self.at(loaded_at), quay.fence_id, seal, f"SIM-{no:06d}-L"
            )
        )
        truck.stay_until(max(truck.t + 5.0, arrival + rng.uniform(100.0, QUAY_MAX_DWELL_S)))
        self.leave(truck, quay)
        return quay.node

    def _busy(self, t: float, hold: float = ANOMALY_RESERVE_S) -> list[tuple[float, float]]:
        return [(x, y) for x, y, a, b in self._staged if a < t + hold and t < b]

    def _stage(self, spot: tuple[float, float], t: float, hold: float = ANOMALY_RESERVE_S) -> None:
        self._staged.append((spot[0], spot[1], t, t + hold))

    def pick_node(
        self, route: list[int], quay: Place, t: float, *, strict: bool = False, hold: float = ANOMALY_RESERVE_S
    ) -> int | None:
        """A route node outside authorised zones, far enough from the quay for a separation to show, and clear of
        every other roadside anomaly staged around the same time.

        Two anomalies on one shoulder at once (a box dropped there while another truck stops beside it) really
        are a meeting, which no single truth item describes: the ground truth would call the true alert false.
        ``strict``: None rather than a shoulder another anomaly already holds (the caller tries another route).
        ``hold``: how long the anomaly may keep the shoulder (its kind's longest staging; trimmed once planned).
        """
        busy = self._busy(t, hold)
        inner = range(1, len(route) - 1)
        clear = [k for k in inner if self.g.distance(route[k], quay.node) > 400.0]
        if self.edge:  # the shoulders just past a hysteresis band, else the clear ones
            near = [k for k in clear if self._edge_of_authorized(self.shoulder(route, k))]
            far = [k for k in clear if self._clear_of_authorized(self.shoulder(route, k))]
            free_near = [k for k in near if all(math.dist(self.shoulder(route, k), s) > ANOMALY_CLEAR_M for s in busy)]
            clear = near if free_near or not far else far
        else:
            clear = [k for k in clear if self._clear_of_authorized(self.shoulder(route, k))]
        free = [k for k in clear if all(math.dist(self.shoulder(route, k), spot) > ANOMALY_CLEAR_M for spot in busy)]
        if strict and not free:
            return None
        # on a busy route every shoulder may be taken: then share one rather than stage a stop inside a yard
        choice = free or clear or [k for k in inner if not self.g.is_authorized(*self.shoulder(route, k))]
        k = self.rng.choice(choice) if choice else 0
        self._stage(self.shoulder(route, k), t, hold)
        return k

    def road_anomaly(
        self,
        no: int,
        truck: _Track,
        cont: _Track,
        route: list[int],
        k: int,
        quay: Place,
        anomaly: AnomalyKind,
        haul_from: float,
    ) -> float:
        rng = self.rng
        node_xy = self.node_xy(route[k])
        if anomaly is AnomalyKind.POST_CLEARANCE_DETOUR:
            dest = self.warehouse(node_xy, truck.t)
            leave_t = truck.t
            speed = rng.uniform(8.0, 12.0)
            truck.drive([dest], speed)
            truck.stay(rng.uniform(*DETOUR_STAY_S))
            truck.drive([node_xy], rng.uniform(8.0, 12.0))
            for tr in (truck, cont):
                tr.free.append((leave_t, truck.t))
            off = leave_t + self.off_route_m(node_xy, dest) / speed
            self.truth.append(GroundTruth(truck.device_id, anomaly, self.at(off), self.at(truck.t), cont.device_id, no))
            return haul_from
        shoulder = self.shoulder(route, k)
        truck.drive([shoulder], 2.0)
        if anomaly is AnomalyKind.UNEXPECTED_STOP:
            t0 = truck.t
            # long enough for the slower tracker on board to show it beyond the rule twice over, as a meeting is: a
            # 7-minute stop seen by trackers reporting every five minutes holds one fix, and no product can tell it
            # from a slow drive past (edge style, Santos seed 3: the one stop missed)
            seen = STOP_RULE_S + 2 * max(truck.interval, cont.interval)
            truck.stay(max(rng.uniform(*STOP_MIN_S[anomaly]), seen))
            self.truth.append(GroundTruth(truck.device_id, anomaly, self.at(t0), self.at(truck.t), None, no))
        elif anomaly is AnomalyKind.RENDEZVOUS:
            t0 = truck.t
            other_iv = self.pick_interval()
            arrive = t0 + rng.uniform(10.0, 60.0)
            # long enough for the slowest tracker involved to show the meeting beyond the 5-min rendezvous rule
            # twice over (as going dark lasts at least three intervals): a shorter one no product could see
            seen = RENDEZVOUS_RULE_S + 2 * max(truck.interval, cont.interval, other_iv)
            depart = max(t0 + rng.uniform(*STOP_MIN_S[anomaly]), arrive + seen)
            other_arrival, other = self.accomplice(route, k, shoulder, arrive, depart, other_iv)
            truck.stay_until(depart)
            self.truth.append(GroundTruth(truck.device_id, anomaly, self.at(other_arrival), self.at(depart), other, no))
        else:  # container separated: dropped on the shoulder, the truck drives off and comes back
            truck.stay(rng.uniform(60.0, 120.0))
            truck.riders.remove(cont)
            self.hauls.append((cont.device_id, truck.device_id, haul_from, truck.t))
            left = truck.t
            truck.drive([node_xy], 2.0)
            truck.drive(self.g.path(route[k:]), self.speed())
            self.enter(truck, quay)
            # away long enough for the slower of the two trackers to show it three times over (two readings that
            # share no fix of either device, as the pairing rule asks): a shorter one no product could confirm
            back_speed = self.speed()
            back_s = (
                math.dist(quay.anchor, self.node_xy(quay.node)) / SPUR_SPEED
                + self.g.distance(quay.node, route[k]) / back_speed
                + math.dist(node_xy, shoulder) / 2.0
            )
            seen = 3 * max(cont.interval, truck.interval) + 60.0
            truck.stay(max(rng.uniform(180.0, 480.0), left + seen - truck.t - back_s))
            self.leave(truck, quay)
            truck.drive(self.g.path(self.g.route(quay.node, route[k])), back_speed)
            truck.drive([shoulder], 2.0)
            back = truck.t
            cont.stay_until(back)
            self.truth.append(GroundTruth(cont.device_id, anomaly, self.at(left), self.at(back), truck.device_id, no))
            truck.stay(rng.uniform(60.0, 120.0))
            cont.stay_until(truck.t)
            truck.riders.append(cont)
            haul_from = truck.t
        truck.drive([node_xy], 2.0)
        return haul_from

    def _clear_of_authorized(self, p: tuple[float, float]) -> bool:
        """Outside every authorised zone by more than the fence hysteresis and the GPS noise: a truck stopped 10 m
        outside a terminal's fence is still at that terminal for any tracking product (and for this one, whose
        fences are left only 25 m beyond their edge), so the truth could not call it an unexpected stop."""
        return bool(self.g.authorized.distance(shapely.Point(p)) > ANOMALY_AUTHORIZED_CLEAR_M)

    def _edge_of_authorized(self, p: tuple[float, float]) -> bool:
        d = float(self.g.authorized.distance(shapely.Point(p)))
        return EDGE_AUTHORIZED_M[0] < d <= EDGE_AUTHORIZED_M[1]

    def off_route_m(self, a: tuple[float, float], b: tuple[float, float]) -> float:
        """How far along the straight drive a -> b the truck is still on its route (corridors, yards, terminals,
        gates, inspection area, quays): where a detour becomes observable, the truth's start."""
        if self._route_area is None:
            quays = [p.geometry for p in self.g.places.get(FenceKind.QUAY, [])]
            self._route_area = shapely.union_all([self.g.corridors, self.g.authorized, *quays])
        line = shapely.LineString([a, b])
        outside = line.difference(self._route_area)
        if outside.is_empty:
            return 0.0
        return float(
            min(line.project(shapely.Point(c)) for g in getattr(outside, "geoms", [outside]) for c in g.coords)
        )

    def accomplice(
        self, route: list[int], k: int, shoulder: tuple[float, float], arrive: float, leave: float, interval: float
    ) -> tuple[float, str]:
        """A second truck that comes from a gate, stops just ahead of the first, and leaves through a gate."""
        rng = self.rng
        self.extra_trucks += 1
        tr = self.new_truck_track(f"TRK-{self.cfg.trucks + self.extra_trucks:04d}", interval)
        gate = rng.choice(self.gates)
        a = self.node_xy(route[max(0, k - 1)])
        b = self.node_xy(route[min(len(route) - 1, k + 1)])
        norm = math.dist(a, b) or 1.0
        gap = rng.uniform(*RENDEZVOUS_GAP_M)
        spot = (shoulder[0] + (b[0] - a[0]) / norm * gap, shoulder[1] + (b[1] - a[1]) / norm * gap)
        outer, inner = self.gate_axis(gate)
        outside = self.outside_path(gate)
        out_speed = rng.uniform(*OUTSIDE_SPEED)
        speed = self.speed()
        node_xy = self.node_xy(route[k])
        travel = (
            float(shapely.LineString(outside).length) / out_speed
            + math.dist(outer, inner) / SPUR_SPEED
            + math.dist(inner, self.node_xy(gate.node)) / SPUR_SPEED
            + self.g.distance(gate.node, route[k]) / speed
            + math.dist(node_xy, spot) / 2.0
        )
        t0 = arrive - travel
        tr.new_span(t0, *outside[-1])
        tr.drive(outside[-2::-1], out_speed)
        tr.free.append((t0, tr.t))
        tr.drive([inner, self.node_xy(gate.node)], SPUR_SPEED)
        tr.drive(self.g.path(self.g.route(gate.node, route[k])), speed)
        tr.drive([spot], 2.0)
        arrived = tr.t
        tr.stay_until(leave + rng.uniform(5.0, 30.0))
        tr.drive([node_xy], 2.0)
        out = rng.choice(self.gates)
        self.route(tr, route[k], out.node)
        self.queue_out(tr, out)
        self.depart(tr, out)
        return arrived, tr.device_id

    def warehouse(self, origin: tuple[float, float], t: float | None = None) -> tuple[float, float]:
        """A point outside the port boundary, as near as possible: where a detour goes to load.

        ``t``: a detour staged then; its warehouse keeps clear of the other anomalies of the hour, and holds its
        spot against later ones."""
        offset = self.rng.uniform(0.0, 2 * math.pi)
        busy = [] if t is None else self._busy(t)
        for dist in (600.0, 1000.0, 1500.0, 2000.0, 3000.0, 4500.0, 6000.0):
            for j in range(16):
                b = offset + j * math.pi / 8
                p = (origin[0] + dist * math.sin(b), origin[1] + dist * math.cos(b))
                if shapely.contains_xy(self.g.boundary, *p):
                    continue
                if any(math.dist(p, spot) <= ANOMALY_CLEAR_M for spot in busy):
                    continue
                if t is not None:
                    self._stage(p, t)
                return p
        return origin[0] + 8000.0, origin[1]

    def timed_anomaly(self, no: int, truck: _Track, anomaly: AnomalyKind, t0: float, t1: float) -> None:
        rng = self.rng
        iv = truck.interval
        if anomaly is AnomalyKind.GOING_DARK:
            lo = max(DARK_S[0], 3 * iv)
            hi = max(DARK_S[1], 4 * iv)
            dur = min(rng.uniform(lo, hi), max(60.0, t1 - t0 - 240.0))
            legs = truck.all_legs()
            # the tracker's last report before it falls silent must come from inside the port's fences: one that
            # goes quiet on a road between two port areas, where no fence is drawn, has left the port as far as any
            # product can tell, and its silence is nobody's alarm. And it must be driving: a truck parked in a gate
            # queue or at the inspection area may have switched to a battery-saving rhythm (one fix per five
            # minutes), so a silence there shorter than three such reports is no loss any product could call
            # (tracker.core.dark's parked limit). Starts are drawn among the instants (every DARK_GRID_S) meeting
            # both, else among those meeting the first, else anywhere.
            # A blackout that starts while driving may run on past the exit gate (the silence began inside the port;
            # the tracker is heard again outside): in a small port the drives are short and near the trip's end.
            lo, hi = t0 + 120.0, max(t0 + 120.0, t1 - 120.0)
            grid = np.arange(lo, hi + DARK_GRID_S, DARK_GRID_S)
            within = grid + dur <= t1 - 120.0
            inside = np.ones(len(grid), dtype=np.bool_)
            driving = np.ones(len(grid), dtype=np.bool_)
            for back in (3 * iv, 2 * iv, iv, iv / 2, 0.0):
                x, y, speed, _ = positions(legs, grid - back)
                inside &= np.asarray(shapely.contains_xy(self.g.fences, x, y))
                driving &= speed >= DARK_DRIVING_MS
            first = inside & driving
            if self.edge:  # also while parked in a queue, for long enough to outlast three parked reports
                parked_dur = max(dur, PARKED_DARK_S + 2 * iv + 60.0)
                first = inside & (driving | (grid + parked_dur <= t1 - 120.0))
            for ok in (first, inside & within, within, np.ones(len(grid), dtype=np.bool_)):
                if ok.any():
                    pick = int(rng.choice(np.flatnonzero(ok).tolist()))
                    a = float(grid[pick])
                    if self.edge and not driving[pick]:
                        dur = max(dur, PARKED_DARK_S + 2 * iv + 60.0)
                    break
            truck.silent.append((a, a + dur))
            self.truth.append(GroundTruth(truck.device_id, anomaly, self.at(a), self.at(a + dur), None, no))
        else:
            n = rng.randint(*SPOOF_FIXES)
            a = rng.uniform(t0 + 60.0, max(t0 + 60.0, t1 - (n + 2) * iv))
            dist = rng.uniform(*SPOOF_DISTANCE_M)
            b = rng.uniform(0.0, 2 * math.pi)
            truck.spoof.append((a, n, dist * math.sin(b), dist * math.cos(b), no))


# ------------------------------------------------------------------------------------------- sampling


def _sample(planner: _Planner, tr: _Track, truth: list[GroundTruth]) -> tuple[list[Ping], FloatArray]:
    cfg = planner.cfg.gps
    rng = planner.rng
    legs = tr.all_legs()
    if not legs:
        return [], np.zeros(0)
    gen = np.random.default_rng(rng.getrandbits(63))
    parts: list[FloatArray] = []
    ends: list[float] = []
    for span_legs, interval in tr.spans:
        if not span_legs:
            continue
        t0, t1 = span_legs[0].t0, span_legs[-1].t1
        n = int((t1 - t0) // interval) + 1
        span_t = t0 + np.arange(n) * interval
        if n > 1 and cfg.jitter_s > 0:
            span_t[1:] += gen.uniform(-cfg.jitter_s, cfg.jitter_s, n - 1)
        span_t = span_t[span_t < t1 - 1.0]
        parts.append(np.append(span_t, t1))
        ends.extend((round(t0, 3), round(t1, 3)))
    t: FloatArray = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
    protect = np.zeros(len(t), dtype=np.bool_)
    events: list[tuple[str, ...]] = [()] * len(t)
    extra_t: list[float] = []
    extra_ev: list[tuple[str, ...]] = []
    for a, b in tr.silent:
        keep = (t < a) | (t >= b)
        t, protect = t[keep], protect[keep]
        events = [e for e, k in zip(events, keep.tolist(), strict=True) if k]
        extra_t.append(b)
        extra_ev.append(())
    for te, ev in tr.events:
        extra_t.append(te)
        extra_ev.append(ev)
    if extra_t:
        t = np.concatenate([t, np.array(extra_t)])
        protect = np.concatenate([protect, np.ones(len(extra_t), dtype=np.bool_)])
        events = events + extra_ev
    t = np.round(t, 3).astype(np.float64)
    order = np.argsort(t, kind="stable")
    t = t[order]
    protect = protect[order]
    events = [events[i] for i in order.tolist()]
    x, y, speed, heading = positions(legs, t)
    free = np.zeros(len(t), dtype=np.bool_)
    for a, b in tr.free:
        free |= (t >= a) & (t <= b)
    spoofed = np.zeros(len(t), dtype=np.bool_)
    for a, n, dx, dy, trip in tr.spoof:
        idx = np.flatnonzero(t >= a)[:n]
        if len(idx) == 0:
            continue
        x[idx] += dx + np.array([rng.uniform(-40.0, 40.0) for _ in idx])
        y[idx] += dy + np.array([rng.uniform(-40.0, 40.0) for _ in idx])
        spoofed[idx] = True
        protect[idx] = True
        first, last = float(t[idx[0]]), float(t[idx[-1]])
        truth.append(
            GroundTruth(tr.device_id, AnomalyKind.GPS_SPOOFING, planner.at(first), planner.at(last), None, trip)
        )
    obs = observe(rng, cfg, t, x, y, tr.interval, protect)
    ox, oy = obs.x, obs.y
    # a span's first and last fix are settled ones (no multipath jump): a box first heard 200 m off its yard
    # spot looks moved without a truck, and a last fix thrown back inside a fence looks like going dark there
    settled = obs.outlier & np.isin(t, np.array(ends))
    ox[settled] = x[settled]
    oy[settled] = y[settled]
    ox[spoofed] = x[spoofed]  # a spoofer sends clean-looking fixes
    oy[spoofed] = y[spoofed]
    check = ~(free | spoofed)
    if check.any():
        outside = check.copy()
        outside[check] = ~planner.g.in_boundary(ox[check], oy[check])
        ox[outside] = x[outside]
        oy[outside] = y[outside]
    lon, lat = planner.g.proj.to_lonlat(ox, oy)
    spd = np.where(speed > 0, np.maximum(0.0, speed + gen.normal(0.0, 0.3, len(t))), 0.0)
    start = planner.cfg.start
    pings: list[Ping] = []
    deliver: list[float] = []
    dev = tr.device_id
    rows = zip(
        t.tolist(),
        np.round(lon, 7).tolist(),
        np.round(lat, 7).tolist(),
        np.round(spd, 2).tolist(),
        np.round(heading, 1).tolist(),
        obs.accuracy.tolist(),
        obs.deliver.tolist(),
        obs.keep.tolist(),
        obs.duplicate.tolist(),
        events,
        strict=True,
    )
    for ti, lo, la, sp, hd, acc, dl, keep, dup, ev in rows:
        if not keep:
            continue
        ts = start + timedelta(seconds=ti)
        hd_v = None if math.isnan(hd) else hd
        pings.append(Ping(dev, ts, lo, la, sp, hd_v, acc, ev, "native", start + timedelta(seconds=dl)))
        deliver.append(dl)
        if dup:
            again = dl + rng.uniform(0.05, 5.0)
            pings.append(Ping(dev, ts, lo, la, sp, hd_v, acc, ev, "native", start + timedelta(seconds=again)))
            deliver.append(again)
    return pings, np.array(deliver)


def generate(cfg: SimConfig, graph: RoadGraph | None = None) -> Scenario:
    """Plan every trip, then sample and degrade the fixes; deterministic for ``cfg.seed``."""
    if cfg.style is StagingStyle.EDGE and cfg.start == DEFAULT_START:
        cfg = replace(cfg, start=NIGHT_START)
    g = graph if graph is not None else build(load_port(cfg.port))
    planner = _Planner(cfg, g)
    planner.plan()
    truth = list(planner.truth)
    all_pings: list[Ping] = []
    delivers: list[FloatArray] = []
    for dev_id in sorted(planner.tracks):
        pings, deliver = _sample(planner, planner.tracks[dev_id], truth)
        all_pings.extend(pings)
        delivers.append(deliver)
    order = np.argsort(np.concatenate(delivers) if delivers else np.zeros(0), kind="stable")
    pings_sorted = [all_pings[i] for i in order.tolist()]
    truth.sort(key=lambda r: (r.start, r.device_id))
    anomalous = {t.trip for t in planner.trips if t.anomaly is not None}
    return Scenario(
        pings=pings_sorted,
        inspections=sorted(planner.inspections, key=lambda i: (i.ts, i.container_no)),
        devices={d: tr.kind for d, tr in sorted(planner.tracks.items())},
        pairs=dict(planner.pairs),
        truth=truth,
        trips=len(planner.trips),
        clean_trips=len(planner.trips) - len(anomalous),
        km=sum(tr.km for tr in planner.tracks.values() if tr.kind is DeviceKind.TRUCK),
        trip_log=sorted(planner.trips, key=lambda t: t.trip),
        hauls=[Haul(c, tk, planner.at(a), planner.at(b)) for c, tk, a, b in planner.hauls],
        port=cfg.port,
        start=cfg.start,
        seed=cfg.seed,
        _tracks={d: tr.all_legs() for d, tr in planner.tracks.items()},
        unstaged=planner.unstaged,
        _proj=g.proj,
    )
