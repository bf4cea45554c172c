"""The shared stop, silence and meeting rules (tracker/core/rules.py), and that the detectors sharing them agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tracker.core.dark import DarkDetector, DarkParams
from tracker.core.detector import Motion
from tracker.core.inspection import AccessWindowDetector, AccessWindowParams
from tracker.core.model import DeviceKind
from tracker.core.rules import (
    clip_interval,
    learn_interval,
    median_interval,
    median_silence_limit,
    met,
    silence_due,
    silence_limit,
    silent,
    standing_since,
    stood_long_enough,
    stop_ended,
    stop_evidence,
    together_since,
)
from tracker.core.world import Position

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
LON, LAT = -46.30, -23.95


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# ---------------------------------------------------------------- stop


def test_a_stop_is_long_enough_at_the_limit_not_a_microsecond_before() -> None:
    assert stood_long_enough(T0, at(120), 120.0)
    assert not stood_long_enough(T0, at(120) - US, 120.0)


def test_a_stop_ends_when_the_stationary_period_changes_or_the_device_moves() -> None:
    still = Motion(T0, LON, LAT, 10.0, T0)
    assert not stop_ended(T0, still)
    assert stop_ended(at(-60), still)  # the motion model restarted the cluster: another stop
    assert stop_ended(T0, Motion(None))  # moving
    assert stop_ended(None, still)  # nothing followed yet: this one is new
    assert not stop_ended(None, Motion(None))


def test_only_fixes_inside_the_stops_cluster_add_to_it() -> None:
    still = Motion(T0, LON, LAT, 20.0, T0)
    assert stop_evidence(still, LON, LAT)
    assert stop_evidence(still, LON + 0.0001, LAT)  # ~10 m east: inside the 20 m the cluster spreads over
    assert not stop_evidence(still, LON + 0.001, LAT)  # ~100 m: the pending fix that may be the departure
    assert not stop_evidence(Motion(None), LON, LAT)


# ---------------------------------------------------------------- silence


def test_the_silence_limit_is_k_reports_never_below_the_floor() -> None:
    assert silence_limit(None, 3.0, 180.0) == 180.0  # rhythm unknown
    assert silence_limit(10.0, 3.0, 180.0) == 180.0  # a fast tracker still gets the floor
    assert silence_limit(300.0, 3.0, 180.0) == 900.0  # a parked one gets three of its own reports


def test_silence_is_strict_and_its_due_time_is_the_first_silent_instant() -> None:
    assert not silent(T0, at(180), 180.0)  # a fix exactly on the limit is on time
    assert silent(T0, at(180) + US, 180.0)
    for limit in (180.0, 0.1 + 0.2, 3 * 10.001, 900.0000005):
        due = silence_due(T0, limit)
        assert silent(T0, due, limit)
        assert not silent(T0, due - US, limit)


def test_intervals_are_clipped_and_only_the_recent_ones_kept() -> None:
    assert clip_interval(0.2, 1.0, 600.0) == 1.0
    assert clip_interval(7200.0, 1.0, 600.0) == 600.0
    assert clip_interval(30.0, 1.0, 600.0) == 30.0
    learned = learn_interval((10.0, 20.0, 30.0), 5000.0, floor_s=1.0, ceiling_s=600.0, history=3)
    assert learned == (20.0, 30.0, 600.0)
    assert median_interval(()) is None
    assert median_interval((10.0, 20.0, 600.0)) == 20.0  # one long gap does not move the rhythm


@pytest.mark.parametrize(
    "intervals",
    [
        (10.0, 12.0, 11.0, 10.0),  # k x the largest within the floor: the floor, without a sort
        (39.9, 40.0, 40.0, 10.0),  # k x the largest exactly on the floor
        (40.0, 40.1, 10.0, 10.0),  # the largest just over it, the median well under: still the floor
        (40.1, 40.2, 40.3, 10.0),  # the median over it: k x the median
        (60.0, 61.0, 59.0, 60.0, 62.0),
        (0.1, 0.2, 0.30000000000000004, 0.1),
        (30.0, 300.0, 30.0, 300.0, 30.0, 300.0),
    ],
)
def test_the_silence_limit_of_a_learned_rhythm_is_the_median_rule_to_the_float(intervals: tuple[float, ...]) -> None:
    for k, floor in ((3.0, 120.0), (3.0, 0.9), (2.5, 100.0)):
        expected = silence_limit(median_interval(intervals), k, floor)
        assert median_silence_limit(intervals, k, floor) == expected


@pytest.mark.parametrize(
    "intervals",
    [
        (10.0, 12.0, 11.0, 10.0),
        (60.0, 61.0, 59.0, 60.0, 62.0),
        (300.0, 300.0, 299.0, 301.0),
        (30.0, 300.0, 30.0, 300.0, 30.0, 300.0),
    ],
)
def test_the_going_dark_rule_and_the_access_window_judge_one_silence_alike(intervals: tuple[float, ...]) -> None:
    """Set to the same floor and k, a moving container's ``signal_lost`` and its window's ``dark`` share a limit."""
    dark = DarkDetector(DarkParams(k=3.0, min_gap_s=180.0))
    window = AccessWindowDetector(AccessWindowParams(dark_s=180.0, dark_k=3.0))
    expected = silence_limit(median_interval(intervals), 3.0, 180.0)
    assert dark.limit(DeviceKind.CONTAINER, intervals) == expected
    assert window.dark_limit(intervals) == expected


# ---------------------------------------------------------------- alongside


def position(**kw: object) -> Position:
    base: dict[str, object] = {"device_id": "T2", "kind": DeviceKind.TRUCK, "ts": at(0), "lon": LON, "lat": LAT}
    base.update(kw)
    return Position(**base)  # type: ignore[arg-type]


def test_a_neighbour_stands_since_its_stop_left_authorised_zones() -> None:
    assert standing_since(position(stationary_since=at(-300), outside_since=at(-120))) == at(-120)
    # standing, but inside a yard (its motion keeps no outside time), or its latest fix in one
    assert standing_since(position(stationary_since=at(-300))) is None
    assert standing_since(position(stationary_since=at(-300), outside_since=at(-120), authorized=True)) is None
    assert standing_since(position()) is None  # moving (or one fix only) for the rendezvous rule


def test_a_single_slow_fix_counts_as_standing_only_where_asked() -> None:
    slow = position(speed=0.3)
    assert standing_since(slow) is None
    assert standing_since(slow, still_speed_ms=0.5) == at(0)
    assert standing_since(position(speed=0.8), still_speed_ms=0.5) is None
    assert standing_since(position(), still_speed_ms=0.5) is None  # no speed reported: nothing to go on
    assert standing_since(position(speed=0.3, authorized=True), still_speed_ms=0.5) is None


def test_a_meeting_counts_from_the_later_start_and_is_strictly_longer_than_the_minimum() -> None:
    assert together_since(at(-400), at(-100)) == at(-100)
    assert together_since(at(-400), at(-500), not_before=at(-200)) == at(-200)  # never before the clearance
    assert not met(at(0), at(60), 60.0)
    assert met(at(0), at(60) + US, 60.0)
