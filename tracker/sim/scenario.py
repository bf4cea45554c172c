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
  through the exit gate and out along the public road (:meth:`~tracker.sim.movement.PlannerBase.outside_path`,
  straight outward or the nearest bearing that crosses no restricted fence) for at least :data:`OUTSIDE_MIN_M`, ending
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

The code is split by responsibility: :mod:`tracker.sim.model` (the configuration, the scenario and its
JSONL form), :mod:`~tracker.sim.tracks` (legs and true positions), :mod:`~tracker.sim.movement` (the
planner's movement primitives), :mod:`~tracker.sim.staging` (anomalies and their ground truth),
:mod:`~tracker.sim.fleet` (the trips) and :mod:`~tracker.sim.sampling` (fixes from legs). This module puts
them together in :func:`generate` and re-exports the names callers import from here.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from geofences import load_port
from tracker.core.model import DeviceKind, Ping
from tracker.sim.fleet import QUAY_MAX_DWELL_S, Planner
from tracker.sim.model import (
    DEFAULT_START,
    EDGE_ARRIVAL_S,
    EDGE_AUTHORIZED_M,
    EDGE_QUEUE_S,
    NIGHT_START,
    PARKED_DARK_S,
    SPARSE_INTERVALS,
    Haul,
    Scenario,
    SimConfig,
    StagingStyle,
    Trip,
    inspection_json,
    ping_payload,
    read_jsonl,
)
from tracker.sim.movement import OUTSIDE_CLEAR_M, OUTSIDE_MIN_M, TRANSFER_SPEED, YARD_INSET_M
from tracker.sim.roads import RoadGraph, build
from tracker.sim.sampling import sample
from tracker.sim.staging import ANOMALY_AUTHORIZED_CLEAR_M, RENDEZVOUS_RULE_S, STOP_RULE_S
from tracker.sim.tracks import FloatArray

__all__ = [
    "ANOMALY_AUTHORIZED_CLEAR_M",
    "DEFAULT_START",
    "EDGE_ARRIVAL_S",
    "EDGE_AUTHORIZED_M",
    "EDGE_QUEUE_S",
    "NIGHT_START",
    "OUTSIDE_CLEAR_M",
    "OUTSIDE_MIN_M",
    "PARKED_DARK_S",
    "QUAY_MAX_DWELL_S",
    "RENDEZVOUS_RULE_S",
    "SPARSE_INTERVALS",
    "STOP_RULE_S",
    "TRANSFER_SPEED",
    "YARD_INSET_M",
    "Haul",
    "Scenario",
    "SimConfig",
    "StagingStyle",
    "Trip",
    "generate",
    "inspection_json",
    "ping_payload",
    "read_jsonl",
]
"""What callers import from ``tracker.sim.scenario`` (the CLI, publish, bench/, tests/); the rest of the
simulator is reached through :func:`generate`."""


def generate(cfg: SimConfig, graph: RoadGraph | None = None) -> Scenario:
    """Plan every trip, then sample and degrade the fixes; deterministic for ``cfg.seed``."""
    if cfg.style is StagingStyle.EDGE and cfg.start == DEFAULT_START:
        cfg = replace(cfg, start=NIGHT_START)
    g = graph if graph is not None else build(load_port(cfg.port))
    planner = Planner(cfg, g)
    planner.plan()
    truth = list(planner.truth)
    all_pings: list[Ping] = []
    delivers: list[FloatArray] = []
    for dev_id in sorted(planner.tracks):
        pings, deliver = sample(planner, planner.tracks[dev_id], truth)
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
