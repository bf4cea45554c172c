"""Dwell alerts: a device inside one fence longer than its kind of fence allows."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from bench.detection import replay
from tests.unit.detector_helpers import OPEN, SANTOS, Runner, at, offset
from tests.unit.test_trips import QUAY, check_invariants
from tracker.core.detector import TickContext
from tracker.core.dwell import DWELL, DwellDetector, DwellParams
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Inspection, InspectionResult
from tracker.core.motion import current
from tracker.core.trips import Trip, trips_in
from tracker.sim.scenario import SimConfig, generate

INSPECTION = (-46.363338, -23.923772)  # santos-inspection-41


def parked(place: tuple[float, float], start: float, seconds: float, every: float) -> list[tuple[float, float, float]]:
    rnd = random.Random(int(start))
    out = []
    t = start
    while t <= start + seconds:
        out.append((t, *offset(place, rnd.uniform(-8, 8), rnd.uniform(-8, 8))))
        t += every
    return out


def box_runner(params: DwellParams | None = None) -> Runner:
    return Runner(DwellDetector(params), kind=DeviceKind.CONTAINER, device_id="MSCU1234565")


def test_a_box_on_the_quay_past_its_limit_raises_once_and_the_visit_end_closes_it() -> None:
    r = box_runner()
    r.run(parked(QUAY, 0, 3 * 3600, 300))
    [alert] = [e for e in r.events if isinstance(e, Alert)]
    assert alert.kind == DWELL and alert.severity.value == "medium"
    assert alert.ts == at(7500)  # the first fix past two hours (fixes every 5 min)
    ev = alert.evidence
    assert ev["fence_id"] == "santos-quay-01" and ev["fence_kind"] == "quay"
    assert ev["entered_at"] == at(0).isoformat() and ev["duration_s"] == 7500 and ev["threshold_s"] == 7200
    assert alert.fence_id == "santos-quay-01" and alert.port == "santos"
    r.run([(3 * 3600 + 300, *OPEN)])
    [upd] = [e for e in r.events if isinstance(e, AlertUpdate)]
    assert upd.closes and upd.alert == alert and upd.fields["reason"] == "exited"
    assert upd.fields["duration_s"] == 3 * 3600 + 300
    assert r.state is None  # nothing left to remember outside watched fences


def test_exactly_the_limit_does_not_raise() -> None:
    r = box_runner()
    r.run(parked(QUAY, 0, 7200, 600))
    assert r.events == []


def test_ticks_never_raise_a_dwell_even_long_after_the_last_fix() -> None:
    r = box_runner()
    r.run(parked(QUAY, 0, 1800, 300))
    assert r.tick(5 * 3600) == []
    det = DwellDetector()
    ctx = TickContext(r.device_id, r.kind, r.last, r.fences, current(r.motion_state), SANTOS, r.world)
    assert det.next_due(r.state, ctx, None) is None


def test_limits_are_per_device_kind_and_fence_kind() -> None:
    truck = Runner(DwellDetector(), kind=DeviceKind.TRUCK)
    truck.run(parked(QUAY, 0, 3 * 3600, 300))
    assert [e.evidence["threshold_s"] for e in truck.events if isinstance(e, Alert)] == [3600]
    box = box_runner()
    box.run(parked(INSPECTION, 0, 5 * 3600, 300))  # no limit for a box in the inspection area
    assert box.events == []
    truck2 = Runner(DwellDetector(), kind=DeviceKind.TRUCK)
    truck2.run(parked(INSPECTION, 0, 3 * 3600, 300))
    [alert] = [e for e in truck2.events if isinstance(e, Alert)]
    assert alert.evidence["fence_kind"] == "inspection_area" and alert.evidence["threshold_s"] == 7200


def test_a_loaded_decision_ends_the_visit_of_a_box_aboard() -> None:
    r = box_runner()
    r.run(parked(QUAY, 0, 3 * 3600, 300))
    det = DwellDetector()
    ctx = TickContext(r.device_id, r.kind, r.last, r.fences, current(r.motion_state), SANTOS, r.world)
    state, events = det.on_inspection(r.state, Inspection("MSCU1234565", InspectionResult.LOADED, at(11000)), ctx)
    assert state is None
    [upd] = events
    assert isinstance(upd, AlertUpdate) and upd.closes and upd.fields["reason"] == "loaded"
    # a cleared decision changes nothing
    same, none = det.on_inspection(r.state, Inspection("MSCU1234565", InspectionResult.CLEARED, at(11000)), ctx)
    assert same == r.state and none == []


def test_a_silence_longer_than_the_gap_restarts_the_visit() -> None:
    r = box_runner()
    r.run(parked(QUAY, 0, 1800, 300))
    r.run(parked(QUAY, 1800 + 4000, 6000, 300))  # 4000 s silent, then 100 min more: under two hours anew
    assert [e for e in r.events if isinstance(e, Alert)] == []


def test_configured_limits_replace_the_defaults() -> None:
    r = box_runner(DwellParams(limits={(DeviceKind.CONTAINER, QUAY_KIND): 600.0}))
    r.run(parked(QUAY, 0, 1200, 300))
    assert [e.evidence["threshold_s"] for e in r.events if isinstance(e, Alert)] == [600.0]


QUAY_KIND = SANTOS.get("santos-quay-01").kind


def test_clean_simulator_traffic_raises_no_dwell_and_its_trips_hold_the_invariants() -> None:
    scenario = generate(SimConfig(port="santos", trucks=12, hours=2.0, anomaly_share=0.0, seed=5))
    engine = replay(scenario)
    dwell = [e.event for e in engine.emitted if isinstance(e.event, Alert) and e.event.kind == DWELL]
    assert dwell == []
    trips = trips_in(engine.trips)
    per_device: dict[str, list[Trip]] = defaultdict(list)
    for t in trips.values():
        per_device[t.device_id].append(t)
    for device_trips in per_device.values():
        check_invariants(device_trips)
    reasons = Counter((t.kind.value, t.end_reason) for t in trips.values() if t.closed)
    trucks = sum(1 for k in scenario.devices.values() if k is DeviceKind.TRUCK)
    # every truck visit of a clean scenario leaves through a gate: one closed port-exit trip per simulated trip
    assert reasons[("truck", "port_exit")] == scenario.trips >= trucks
    assert reasons[("container", "loaded")] + reasons[("container", "set_down")] + reasons[("container", "silence")] > 0
