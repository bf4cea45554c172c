"""How trucks and boxes move through a port: the planner's state and its movement primitives.

Gate queues, routes along corridor centre lines, access spurs, yard spots, the public road outside a gate,
road shoulders, and the ledger of roadside spots that staged anomalies hold. The clean-trip guarantees of
tracker/sim/scenario.py rest on these primitives; the trips (tracker/sim/fleet.py) and the anomalies
(tracker/sim/staging.py) are composed of them. A base class so that each of those modules stays about
one responsibility while sharing one random stream, whose draw order makes a seed's output.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import shapely
import shapely.ops

from geofences import FenceKind
from tracker.core.model import DeviceKind, Inspection
from tracker.sim.anomalies import SHOULDER_OFFSET_M, GroundTruth
from tracker.sim.iso6346 import container_number
from tracker.sim.model import EDGE_QUEUE_S, SPARSE_INTERVALS, SimConfig, StagingStyle, Trip
from tracker.sim.roads import Place, RoadGraph
from tracker.sim.tracks import Track

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
"""A box in a yard stands this far inside its terminal and authorised area and away from corridors: a spot on
the edge puts noisy fixes on the road outside, where a parked box is an alert."""
ANOMALY_RESERVE_S = 3600.0
"""How long a roadside anomaly keeps its shoulder to itself (a separated box waits up to about an hour)."""
ANOMALY_CLEAR_M = 80.0
"""How far apart two roadside anomalies staged at the same time must be (beyond every cross-device radius, 30 m,
and the noise of both devices)."""


class PlannerBase:
    """The planner's state and how a device gets from one place to another."""

    def __init__(self, cfg: SimConfig, graph: RoadGraph) -> None:
        self.cfg = cfg
        self.g = graph
        self.rng = random.Random(cfg.seed)
        self.tracks: dict[str, Track] = {}
        self.inspections: list[Inspection] = []
        self.truth: list[GroundTruth] = []
        self.trips: list[Trip] = []
        self.hauls: list[tuple[str, str, float, float]] = []
        self.pairs: dict[str, str] = {}
        self.used_numbers: set[str] = set()
        self.yard: list[Track] = []  # containers left in a yard until the scenario ends
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

    def route(self, tr: Track, a: int, b: int) -> None:
        tr.drive(self.g.path(self.g.route(a, b)), self.speed())

    def enter(self, tr: Track, place: Place) -> None:
        tr.drive([place.anchor], SPUR_SPEED)

    def leave(self, tr: Track, place: Place) -> None:
        tr.drive([self.node_xy(place.node)], SPUR_SPEED)

    def node_xy(self, node: int) -> tuple[float, float]:
        return float(self.g.xy[node, 0]), float(self.g.xy[node, 1])

    def gate_axis(self, gate: Place) -> tuple[tuple[float, float], tuple[float, float]]:
        """Axis ends ordered outer → inner (the inner end is nearer the road node)."""
        a, b = gate.axis
        n = self.node_xy(gate.node)
        return (a, b) if math.dist(b, n) <= math.dist(a, n) else (b, a)

    def queue_in(self, tr: Track, gate: Place) -> None:
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

    def queue_out(self, tr: Track, gate: Place) -> None:
        outer, inner = self.gate_axis(gate)
        tr.drive([inner], SPUR_SPEED)
        tr.stay(self.rng.uniform(10.0, 40.0))  # barrier and plate check
        tr.drive([outer], 2.0)

    def pick_interval(self) -> float:
        """A device's reporting interval for its whole life: the fleet's mix, or battery-saving only (edge style)."""
        return self.rng.choice(SPARSE_INTERVALS) if self.edge else self.cfg.gps.pick_interval(self.rng)

    def new_truck_track(self, device_id: str, interval: float | None = None) -> Track:
        iv = self.pick_interval() if interval is None else interval
        tr = Track(device_id, DeviceKind.TRUCK, iv, 0.0, 0.0, 0.0)
        self.tracks[device_id] = tr
        return tr

    def new_container(self, t: float, x: float, y: float) -> Track:
        cid = container_number(self.rng, self.used_numbers)
        tr = Track(cid, DeviceKind.CONTAINER, self.pick_interval(), t, x, y)
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

    def arrive(self, tr: Track, gate: Place, t: float) -> None:
        """Start a trip outside the port and drive in to the gate's outer end (the tracker reports all along)."""
        path = self.outside_path(gate)
        tr.new_span(t, *path[-1])
        tr.drive(path[-2::-1], self.rng.uniform(*OUTSIDE_SPEED))
        for rider in (tr, *tr.riders):
            rider.free.append((t, tr.t))

    def depart(self, tr: Track, gate: Place) -> None:
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

    # roadside spots held by staged anomalies, and the nearest point outside the port -----------------

    def _busy(self, t: float, hold: float = ANOMALY_RESERVE_S) -> list[tuple[float, float]]:
        return [(x, y) for x, y, a, b in self._staged if a < t + hold and t < b]

    def _stage(self, spot: tuple[float, float], t: float, hold: float = ANOMALY_RESERVE_S) -> None:
        self._staged.append((spot[0], spot[1], t, t + hold))

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
