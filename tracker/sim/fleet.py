"""The fleet's day: each truck's trips one after another, of the three kinds, with the boxes they haul.

Decides how many trips each truck makes and of which kind (``export_cleared``, ``export_terminal``,
``import``), which of them carry an anomaly, and drives each trip from outside the port through its gates,
yards, inspection area and quay, with the customs decisions a cleared trip produces. The anomalies
themselves are staged by tracker/sim/staging.py.
"""

from __future__ import annotations

import math

from tracker.core.model import Inspection, InspectionResult
from tracker.sim.anomalies import AnomalyKind, GroundTruth
from tracker.sim.model import EDGE_ARRIVAL_S, Trip
from tracker.sim.movement import SPUR_SPEED, TRANSFER_SPEED
from tracker.sim.staging import (
    ANOMALY_HOLD_S,
    ANOMALY_MAX_WAIT_S,
    ANOMALY_QUAY_TRIES,
    ANOMALY_RELEASE_S,
    ANOMALY_WAIT_STEP_S,
    StagingPlanner,
)
from tracker.sim.tracks import Track

QUAY_MAX_DWELL_S = 180.0


class Planner(StagingPlanner):
    """Plans every trip of the scenario (``plan``); the legs are sampled afterwards."""

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

    def trip(self, no: int, truck: Track, t: float, kind: str, anomaly: AnomalyKind | None) -> float:
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
        self, no: int, truck: Track, cont: Track, node: int, anomaly: AnomalyKind | None, haul_from: float
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
