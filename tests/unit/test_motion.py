"""Stationary tracking as sequences of fixes: noise, outliers, creeping queues, 1 s and 5 min rates."""

from __future__ import annotations

import random
from typing import Any

import msgspec

from geofences import haversine_m
from tests.unit.detector_helpers import OPEN, at, offset, stored
from tracker.core import motion
from tracker.core.detector import Motion
from tracker.core.model import Ping
from tracker.core.motion import MotionParams

P = MotionParams()


def feed(seq: list[tuple[float, float, float]], params: MotionParams = P) -> tuple[Any, list[Motion]]:
    state: Any = None
    out: list[Motion] = []
    for t, lon, lat in seq:
        state, m = motion.update(state, Ping("TRK-1", at(t), lon, lat), params)
        out.append(m)
    return state, out


def parked(seconds: range, noise_m: float = 0.0, seed: int = 1) -> list[tuple[float, float, float]]:
    rnd = random.Random(seed)
    return [(t, *offset(OPEN, rnd.uniform(-noise_m, noise_m), rnd.uniform(-noise_m, noise_m))) for t in seconds]


def test_two_fixes_five_minutes_apart_are_stationary_since_the_first() -> None:
    _, ms = feed([(0, *OPEN), (300, *offset(OPEN, 10, 5))])
    assert ms[0].stationary_since is None
    assert ms[1].stationary_since == at(0)
    assert ms[1].radius_m < 10


def test_two_fixes_five_minutes_apart_but_far_are_moving() -> None:
    _, ms = feed([(0, *OPEN), (300, *offset(OPEN, 60, 0))])
    assert ms[1].stationary_since is None


def test_parked_with_noise_at_1hz_stays_one_stationary_period() -> None:
    _, ms = feed(parked(range(0, 3600), noise_m=20))
    assert all(m.stationary_since == at(0) for m in ms[20:])
    last = ms[-1]
    assert last.centre_lon is not None and last.centre_lat is not None
    assert haversine_m(last.centre_lon, last.centre_lat, *OPEN) < 3
    assert last.radius_m <= P.radius_m


def test_a_rolling_truck_at_1hz_is_never_stationary() -> None:
    # 8 m/s (29 km/h): consecutive fixes are well within the radius, the dwell filter keeps it "moving"
    _, ms = feed([(t, *offset(OPEN, 8.0 * t, 0)) for t in range(600)])
    assert all(m.stationary_since is None for m in ms)


def test_a_single_outlier_does_not_end_the_stop_nor_move_the_centre() -> None:
    seq = parked(range(0, 600, 10), noise_m=5)
    seq.insert(30, (295, *offset(OPEN, 300, 0)))
    state, ms = feed(seq)
    assert all(m.stationary_since == at(0) for m in ms[2:])
    before, outlier, after = ms[29], ms[30], ms[31]
    assert outlier.centre_lon == before.centre_lon and outlier.centre_lat == before.centre_lat
    assert not motion.holds(outlier, *offset(OPEN, 300, 0))
    assert after.radius_m <= P.radius_m
    assert state is not None and state.pending is None


def test_two_fixes_outside_end_the_stop_and_the_next_cluster_starts_at_the_first() -> None:
    seq = [*parked(range(0, 300, 10)), (300, *offset(OPEN, 300, 0)), (330, *offset(OPEN, 310, 0))]
    _, ms = feed(seq)
    assert ms[-2].stationary_since == at(0)  # one fix away is not yet a departure
    assert ms[-1].stationary_since == at(300)  # stopped again 300 m further, since the first fix there


def test_two_fixes_outside_and_apart_mean_moving() -> None:
    seq = [*parked(range(0, 300, 10)), (300, *offset(OPEN, 300, 0)), (310, *offset(OPEN, 400, 0))]
    _, ms = feed(seq)
    assert ms[-1].stationary_since is None


def test_creeping_queue_at_1_m_s_is_moving_once_it_left_the_radius() -> None:
    _, ms = feed([(t, *offset(OPEN, 1.0 * t, 0)) for t in range(0, 1800)])
    periods: dict[object, int] = {}
    for m in ms:
        if m.stationary_since is not None:
            periods[m.stationary_since] = periods.get(m.stationary_since, 0) + 1
    # the running-mean centre follows at half speed, so each period ends ~100 s (100 m) in
    assert periods and max(periods.values()) < 2 * P.radius_m + 5
    assert ms[150].stationary_since != at(0)


def test_creeping_queue_every_5_min_never_stops() -> None:
    _, ms = feed([(t, *offset(OPEN, 1.0 * t, 0)) for t in range(0, 3600, 300)])
    assert all(m.stationary_since is None for m in ms)


def test_state_stays_bounded_at_1hz() -> None:
    small, _ = feed(parked(range(0, 10), noise_m=20))
    big, _ = feed(parked(range(0, 7200), noise_m=20))
    assert len(msgspec.msgpack.encode(big)) <= len(msgspec.msgpack.encode(small)) + 16


def test_a_long_silence_restarts_the_cluster() -> None:
    _, ms = feed([(0, *OPEN), (60, *OPEN), (60 + P.max_gap_s + 1, *OPEN)])
    assert ms[1].stationary_since == at(0)
    assert ms[2].stationary_since is None


def test_old_or_repeated_fixes_change_nothing() -> None:
    state, ms = feed(parked(range(0, 120, 10)))
    again, m = motion.update(state, Ping("TRK-1", at(50), *offset(OPEN, 500, 0)), P)
    assert again == state and m == ms[-1]


def test_current_reports_the_last_motion_without_extrapolating() -> None:
    state, ms = feed(parked(range(0, 120, 10)))
    assert motion.current(state) == ms[-1]
    assert motion.current(None) == Motion(None)


def test_state_round_trips_through_json() -> None:
    state, _ = feed([*parked(range(0, 100, 10)), (100, *offset(OPEN, 200, 0))])
    assert stored(state) == state
    assert state is not None and state.pending is not None


def test_outside_since_counts_only_the_run_of_fixes_outside_authorized_zones() -> None:
    state: Any = None
    seen: list[Motion] = []
    # waiting in a yard, then the departure fix from the road 40 m away, still within the stop's cluster
    for t, dx, auth in ((0, 0, True), (30, 5, True), (60, 3, True), (90, 40, False)):
        state, m = motion.update(state, Ping("TRK-1", at(t), *offset(OPEN, dx, 0)), P, auth)
        seen.append(m)
    assert seen[2].stationary_since == at(0) and seen[2].outside_since is None
    assert seen[3].stationary_since == at(0) and seen[3].outside_since == at(90)  # outside for no time yet
    # it stays on that shoulder: the run outside goes on from its first fix there
    for t in (120, 150, 180):
        state, m = motion.update(state, Ping("TRK-1", at(t), *offset(OPEN, 38, 0)), P, False)
    assert m.stationary_since == at(0) and m.outside_since == at(90)
    # one fix back inside an authorized zone ends the run
    state, m = motion.update(state, Ping("TRK-1", at(210), *offset(OPEN, 10, 0)), P, True)
    assert m.outside_since is None
    assert motion.current(stored(state)).outside_since is None


def test_a_stop_that_never_touched_an_authorized_zone_is_outside_from_its_first_fix() -> None:
    state: Any = None
    for t in range(0, 301, 30):
        state, m = motion.update(state, Ping("TRK-1", at(t), *offset(OPEN, 3, 0)), P, False)
    assert m.stationary_since == at(0) and m.outside_since == at(0)
    assert motion.current(stored(state)).outside_since == at(0)
