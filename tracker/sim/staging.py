"""Where and how anomalies are staged on a cleared trip, with the ground truth each one leaves.

Roadside anomalies (detour, unexpected stop, rendezvous, separated box) take a shoulder on the way to the
quay that is clear of authorised zones and of every other anomaly staged around the same time, so one
truth item describes what really happened there; timed anomalies (going dark, GPS spoofing) are placed
between the gate-in and the gate-out. Apart from the trips (tracker/sim/fleet.py) because these rules are
about what a detector can and cannot be expected to see, not about routine traffic.
"""

from __future__ import annotations

import math

import numpy as np
import shapely

from geofences import FenceKind
from tracker.sim.anomalies import (
    DARK_S,
    DETOUR_STAY_S,
    RENDEZVOUS_GAP_M,
    SPOOF_DISTANCE_M,
    SPOOF_FIXES,
    STOP_MIN_S,
    AnomalyKind,
    GroundTruth,
)
from tracker.sim.model import EDGE_AUTHORIZED_M, PARKED_DARK_S
from tracker.sim.movement import (
    ANOMALY_CLEAR_M,
    ANOMALY_RESERVE_S,
    OUTSIDE_SPEED,
    SPUR_SPEED,
    PlannerBase,
)
from tracker.sim.roads import Place
from tracker.sim.tracks import Track, positions

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


class StagingPlanner(PlannerBase):
    """Picks the shoulders and instants of anomalies and drives them, recording their ground truth."""

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
        truck: Track,
        cont: Track,
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

    def timed_anomaly(self, no: int, truck: Track, anomaly: AnomalyKind, t0: float, t1: float) -> None:
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
