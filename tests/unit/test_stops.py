"""Unexpected stops as timestamped sequences of fixes: what must fire and what must not."""

from __future__ import annotations

import random
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofences import FenceKind
from tests.unit.detector_helpers import OPEN, OUTSIDE, RESTRICTED, SANTOS, TERMINAL, Runner, at, offset
from tracker.core.detector import AUTHORIZED_STOP_KINDS
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Event, Severity
from tracker.core.stops import StopDetector, StopParams


def alerts(events: Sequence[Event]) -> list[Alert]:
    return [e for e in events if isinstance(e, Alert)]


def updates(events: Sequence[Event]) -> list[AlertUpdate]:
    return [e for e in events if isinstance(e, AlertUpdate)]


def parked(
    place: tuple[float, float], times: range, noise_m: float = 0.0, seed: int = 7
) -> list[tuple[float, float, float]]:
    rnd = random.Random(seed)
    return [(t, *offset(place, rnd.uniform(-noise_m, noise_m), rnd.uniform(-noise_m, noise_m))) for t in times]


def drive_off(
    place: tuple[float, float], start: float, n: int = 5, step_s: float = 10
) -> list[tuple[float, float, float]]:
    return [(start + i * step_s, *offset(place, 100.0 * i, 0)) for i in range(1, n + 1)]


def runner() -> Runner:
    return Runner(StopDetector(StopParams()))


def test_places_are_what_the_tests_assume() -> None:
    assert SANTOS.fences_at([OPEN[0]], [OPEN[1]])[0] == {"santos-port-boundary-1"}
    kinds = {SANTOS.get(f).kind for f in SANTOS.fences_at([TERMINAL[0]], [TERMINAL[1]])[0]}
    assert FenceKind.TERMINAL in kinds and kinds & AUTHORIZED_STOP_KINDS
    kinds = {SANTOS.get(f).kind for f in SANTOS.fences_at([RESTRICTED[0]], [RESTRICTED[1]])[0]}
    assert kinds == {FenceKind.RESTRICTED, FenceKind.PORT_BOUNDARY}


def test_stop_in_the_open_fires_once_at_the_threshold_and_closes_when_it_moves_on() -> None:
    r = runner()
    r.run(parked(OPEN, range(0, 400, 10)))
    [alert] = alerts(r.events)
    assert alert.kind == "unexpected_stop" and alert.severity is Severity.MEDIUM
    assert alert.ts == at(300) and alert.key == at(0).isoformat()
    assert alert.port == "santos"
    ev = alert.evidence
    assert ev["threshold_s"] == 300 and ev["threshold_reason"] == "default"
    assert ev["duration_s"] == 300 and ev["started_at"] == at(0).isoformat()
    assert [f["id"] for f in ev["fences"]] == ["santos-port-boundary-1"]
    r.run(drive_off(OPEN, 390))
    [upd] = updates(r.events)
    assert upd.closes and upd.alert == alert and upd.alert.id == alert.id
    assert upd.fields["ended_at"] == at(390).isoformat() and upd.fields["duration_s"] == 390
    assert len(alerts(r.events)) == 1


def test_a_stop_outside_every_fence_of_the_port_never_fires() -> None:
    # a truck parked in town between two jobs; the same stop in the port (above) fires
    r = runner()
    r.run(parked(OUTSIDE, range(0, 1200, 10)))
    assert r.fences == frozenset() and alerts(r.events) == []


def test_stop_of_t_minus_1_second_does_not_fire() -> None:
    r = runner()
    r.run([*parked(OPEN, range(0, 300)), *drive_off(OPEN, 299, step_s=1)])
    assert r.events == []


def test_stop_of_exactly_t_at_1hz_fires_with_no_delay() -> None:
    r = runner()
    r.run(parked(OPEN, range(0, 301)))
    [alert] = alerts(r.events)
    assert alert.ts == at(300)


def test_fixes_every_5_minutes_fire_on_the_second_fix() -> None:
    r = runner()
    r.run(parked(OPEN, range(0, 301, 300), noise_m=15))
    [alert] = alerts(r.events)
    assert alert.ts == at(300) and alert.key == at(0).isoformat()


def test_two_fixes_at_road_speed_five_minutes_and_40_m_apart_are_no_stop() -> None:
    # a tracker reporting every five minutes, one fix just before a gate queue and one just after it: the cluster
    # spans five minutes, but both fixes say the box is driving (edge-style benchmark, Santos seed 1)
    r = runner()
    r.fix(0, *OPEN, speed=11.4)
    r.fix(300, *offset(OPEN, 40, 0), speed=10.2)
    assert alerts(r.events) == []
    # the same two fixes reporting no speed are a five-minute stop
    r = runner()
    r.fix(0, *OPEN, speed=0.0)
    r.fix(300, *offset(OPEN, 40, 0), speed=0.0)
    assert len(alerts(r.events)) == 1


def test_a_stop_seeded_by_a_rolling_fix_is_timed_from_the_first_fix_that_stands() -> None:
    # a truck slowing into a quay beside a restricted lot: its last rolling fix (2.8 m/s) lands in the lot, the next
    # stands; two minutes from the rolling fix were a restricted-zone stop (edge-style benchmark, Santos seed 4)
    r = runner()
    r.fix(0, *RESTRICTED, speed=2.8)
    r.fix(120, *offset(RESTRICTED, 5, 0), speed=0.0)
    assert alerts(r.events) == []
    r.fix(240, *offset(RESTRICTED, 3, 0), speed=0.0)
    [alert] = alerts(r.events)  # standing since 120 s: two minutes at 240 s
    assert alert.ts == at(240) and alert.evidence["started_at"] == at(120).isoformat()
    assert alert.key == at(0).isoformat()  # the stop is still the cluster that began at the rolling fix
    # the same fixes with the first one standing are a two-minute stop at 120 s
    r = runner()
    r.fix(0, *RESTRICTED, speed=0.0)
    r.fix(120, *offset(RESTRICTED, 5, 0), speed=0.0)
    assert [a.ts for a in alerts(r.events)] == [at(120)]


def test_time_to_alert_is_at_most_one_interval() -> None:
    r = runner()
    r.run(parked(OPEN, range(0, 1000, 240)))
    [alert] = alerts(r.events)
    assert alert.ts == at(480)


def test_departure_fix_does_not_count_as_stop_time() -> None:
    # last fix in the stop at 290 s; the fix at 300 s is already 150 m away
    r = runner()
    r.run([*parked(OPEN, range(0, 300, 10)), *drive_off(OPEN, 290, n=3, step_s=10)])
    assert alerts(r.events) == []


def test_stop_inside_a_real_terminal_never_fires() -> None:
    r = runner()
    r.run(parked(TERMINAL, range(0, 3600, 10), noise_m=20))
    assert r.events == []


def test_gps_noise_while_parked_gives_one_alert() -> None:
    r = runner()
    r.run(parked(OPEN, range(0, 3600), noise_m=20))
    assert len(alerts(r.events)) == 1
    assert updates(r.events) == []


def test_single_300m_outlier_during_a_stop_neither_splits_nor_ends_it() -> None:
    seq = parked(OPEN, range(0, 600, 10), noise_m=5)
    seq[15] = (150, *offset(OPEN, 300, 0))  # before the alert
    seq[40] = (400, *offset(OPEN, 0, -300))  # after the alert
    r = runner()
    r.run(seq)
    [alert] = alerts(r.events)
    assert alert.key == at(0).isoformat() and alert.ts == at(300)
    assert updates(r.events) == []


def test_truck_creeping_in_a_queue_never_fires() -> None:
    r = runner()
    r.run([(t, *offset(OPEN, 1.0 * t, 0)) for t in range(0, 900)])
    assert r.events == []


def test_restricted_zone_uses_the_shorter_threshold_and_high_severity() -> None:
    r = runner()
    r.run(parked(RESTRICTED, range(0, 200, 10)))
    [alert] = alerts(r.events)
    assert alert.severity is Severity.HIGH and alert.ts == at(120)
    assert alert.evidence["threshold_reason"] == "zone kind restricted"
    assert alert.evidence["threshold_fence"]["id"] == "santos-restricted-11"
    assert alert.fence_id == "santos-restricted-11"


def test_restricted_zone_near_miss() -> None:
    r = runner()
    r.run([*parked(RESTRICTED, range(0, 120)), *drive_off(RESTRICTED, 119, step_s=1)])
    assert r.events == []


def test_device_kind_override() -> None:
    det = StopDetector(StopParams(by_device={DeviceKind.CONTAINER: 600}))
    miss = Runner(det, kind=DeviceKind.CONTAINER)
    miss.run([*parked(OPEN, range(0, 600, 1)), *drive_off(OPEN, 599, step_s=1)])
    assert miss.events == []
    hit = Runner(det, kind=DeviceKind.CONTAINER)
    hit.run(parked(OPEN, range(0, 601, 60)))
    [alert] = alerts(hit.events)
    assert alert.ts == at(600) and alert.evidence["threshold_reason"] == "device kind container"


def test_zone_overrides_device_kind() -> None:
    det = StopDetector(StopParams(by_device={DeviceKind.TRUCK: 900}))
    assert det.threshold(DeviceKind.TRUCK, [SANTOS.get("santos-restricted-11")])[0] == 120
    assert det.threshold(DeviceKind.TRUCK, [SANTOS.get("santos-port-boundary-1")])[0] == 900
    both = [SANTOS.get("santos-quay-26"), SANTOS.get("santos-restricted-11")]
    assert det.threshold(DeviceKind.TRUCK, both)[1] == "zone kind restricted"


def test_ticks_never_extrapolate_a_silent_stop() -> None:
    r = runner()
    r.run(parked(OPEN, range(0, 250, 10)))
    before = r.state
    assert r.tick(1000) == [] and r.state == before


def test_a_second_stop_gets_its_own_alert() -> None:
    far = offset(OPEN, 0, 600)
    r = runner()
    r.run([*parked(OPEN, range(0, 400, 10)), *parked(far, range(400, 800, 10))])
    first, second = alerts(r.events)
    assert first.key == at(0).isoformat() and second.key == at(400).isoformat()
    assert first.id != second.id
    [upd] = updates(r.events)
    assert upd.alert.id == first.id


# mostly standing (noise), sometimes a short move, sometimes a real departure
move = st.one_of(st.just(0.0), st.floats(min_value=-15, max_value=15), st.floats(min_value=-200, max_value=200))
step = st.tuples(
    st.integers(min_value=1, max_value=400),  # seconds since the previous fix
    move,  # metres east of the previous fix
    move,  # metres north
    st.booleans(),  # a 300 m outlier on this fix only
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=120))
def test_never_two_alerts_with_one_id_nor_two_for_one_stop(steps: list[tuple[int, float, float, bool]]) -> None:
    r = runner()
    t, x, y = 0, 0.0, 0.0
    for dt, dx, dy, outlier in steps:
        t += dt
        x, y = x + dx, y + dy
        lon, lat = offset(OPEN, x + (300 if outlier else 0), y)
        r.fix(t, lon, lat)
    raised = alerts(r.events)
    assert len({a.id for a in raised}) == len(raised)
    assert len({a.key for a in raised}) == len(raised)
    closed = [u.alert.id for u in updates(r.events)]
    assert len(set(closed)) == len(closed)
    assert set(closed) <= {a.id for a in raised}


def test_a_tracker_standing_still_while_reporting_road_speed_still_stops() -> None:
    # the speed field is the tracker's word: fixes within 3 m of each other for six minutes, each saying 8 m/s, are
    # a stop (an insider's tracker must not switch the stop rule off by lying about its speed)
    r = runner()
    for t, lon, lat in parked(OPEN, range(0, 400, 10), noise_m=1.5):
        r.fix(t, lon, lat, speed=8.0)
    [alert] = alerts(r.events)
    assert alert.kind == "unexpected_stop" and alert.ts <= at(320)


def test_reported_speed_counts_when_the_fixes_move() -> None:
    # the same speed on fixes that do move 25 m every 10 s (a slow crawl) is rolling: no stop
    r = runner()
    for i, t in enumerate(range(0, 400, 10)):
        r.fix(t, *offset(OPEN, 25.0 * (i % 8), 0), speed=8.0)
    assert alerts(r.events) == []
