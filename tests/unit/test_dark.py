"""Going dark as timestamped sequences: silences that must raise, and those that must not."""

from __future__ import annotations

import math
import statistics

import pytest

from geofences import FenceKind
from tests.unit.detector_helpers import OPEN, OUTSIDE, SANTOS, TERMINAL, Runner, at, offset
from tracker.core import motion
from tracker.core.dark import DarkDetector
from tracker.core.detector import TickContext
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Event, Inspection, InspectionResult, Severity

TICK = 5  # the service's default tick period
ROAD = offset(OPEN, 0, -200)  # open port ground to drive round: a 200 m ring about it touches no fence but the port's


def alerts(events: list[Event], kind: str | None = None) -> list[Alert]:
    return [e for e in events if isinstance(e, Alert) and (kind is None or e.kind == kind)]


def updates(events: list[Event]) -> list[AlertUpdate]:
    return [e for e in events if isinstance(e, AlertUpdate)]


def reporting(place: tuple[float, float], times: range) -> list[tuple[float, float, float]]:
    """A device standing still at ``place``: stationary from its second fix on."""
    return [(t, *place) for t in times]


def circling(place: tuple[float, float], i: int) -> tuple[float, float]:
    """The ``i``-th fix of a device driving round ``place`` on a 60 m circle, 100 degrees per fix.

    Consecutive fixes are over 90 m apart, so the motion model never calls the device stationary,
    and the circle stays well inside the fence ``place`` was chosen in.
    """
    a = math.radians(100 * i)
    return offset(place, 60 * math.sin(a), 60 * math.cos(a))


def driving(place: tuple[float, float], times: range) -> list[tuple[float, float, float]]:
    """A device on the move around ``place``, one fix at each of ``times``."""
    return [(t, *circling(place, i)) for i, t in enumerate(times)]


def ticks(r: Runner, start: float, stop: float) -> list[Event]:
    out: list[Event] = []
    t = start
    while t <= stop:
        out.extend(r.tick(t))
        t += TICK
    return out


def test_silence_in_port_raises_signal_lost_on_a_tick() -> None:
    r = Runner(DarkDetector())
    r.run(driving(ROAD, range(0, 300, 10)))  # learned interval 10 s -> limit is the 120 s floor
    last = 290
    assert ticks(r, last + TICK, last + 120) == []
    [lost] = ticks(r, last + 125, last + 600)
    assert isinstance(lost, Alert)
    assert lost.kind == "signal_lost" and lost.severity is Severity.MEDIUM
    assert lost.ts == at(last + 120) and lost.key == at(last).isoformat()
    assert lost.evidence["limit_s"] == 120 and lost.evidence["expected_interval_s"] == 10
    assert lost.evidence["last_fix"]["ts"] == at(last).isoformat()
    assert lost.port == "santos"


def test_short_tunnel_does_not_raise() -> None:
    r = Runner(DarkDetector())
    r.run([*reporting(OPEN, range(0, 300, 1)), *reporting(OPEN, range(415, 500, 1))], tick_every=TICK)
    assert r.events == []


def test_silence_outside_the_port_raises_nothing() -> None:
    r = Runner(DarkDetector())
    r.run(reporting(OUTSIDE, range(0, 300, 10)))
    assert r.fences == frozenset()
    assert ticks(r, 300, 7200) == []
    assert r.fix(7200, *OUTSIDE) == []


def test_leaving_the_port_then_going_silent_raises_nothing() -> None:
    r = Runner(DarkDetector())
    r.run([*reporting(OPEN, range(0, 300, 10)), (300, *OUTSIDE)])
    assert ticks(r, 305, 3600) == []


def test_signal_restored_nearby_closes_the_loss_with_low_severity() -> None:
    r = Runner(DarkDetector())
    r.run(driving(TERMINAL, range(0, 300, 10)))
    [lost] = ticks(r, 295, 600)
    assert isinstance(lost, Alert)
    assert lost.fence_id is not None and lost.fence_id.startswith("santos-")
    assert r.last is not None
    out = r.fix(900, *offset((r.last.lon, r.last.lat), 50, 0))
    [upd] = updates(out)
    [restored] = alerts(out)
    assert upd.closes and upd.alert == lost and upd.fields["gap_s"] == 610
    assert restored.kind == "signal_restored" and restored.severity is Severity.LOW
    assert restored.evidence["gap_s"] == 610
    assert 49 < restored.evidence["distance_m"] < 51
    assert restored.evidence["lost_alert_id"] == str(lost.id)
    assert ticks(r, 905, 950) == []


def test_signal_restored_far_away_is_medium() -> None:
    r = Runner(DarkDetector())
    r.run(driving(ROAD, range(0, 300, 10)))
    ticks(r, 295, 600)
    [restored] = alerts(r.fix(900, *offset(OPEN, 0, 450)), "signal_restored")
    assert restored.severity is Severity.MEDIUM and restored.evidence["distance_m"] > 200


def test_one_loss_per_silence_however_many_ticks() -> None:
    r = Runner(DarkDetector())
    r.run(reporting(OPEN, range(0, 300, 10)))
    assert len(ticks(r, 295, 5000)) == 1


def test_replay_without_ticks_detects_the_gap_with_the_same_alert() -> None:
    live = Runner(DarkDetector())
    seq = [*driving(ROAD, range(0, 300, 10)), (700, *OPEN)]
    live.run(seq, tick_every=TICK)
    replay = Runner(DarkDetector())
    replay.run(seq)
    assert [type(e) for e in replay.events] == [Alert, AlertUpdate, Alert]
    assert replay.events == live.events
    lost = replay.events[0]
    assert isinstance(lost, Alert) and lost.ts == at(290 + 120)


@pytest.mark.parametrize(
    ("kind", "limit"), [(DeviceKind.TRUCK, 120), (DeviceKind.CONTAINER, 180), (DeviceKind.SEAL, 900)]
)
def test_smallest_detected_gap_with_defaults_before_learning(kind: DeviceKind, limit: int) -> None:
    miss = Runner(DarkDetector(), kind=kind)
    miss.run([(0, *OPEN), (limit, *OPEN)])
    assert miss.events == []
    hit = Runner(DarkDetector(), kind=kind)
    hit.run([(0, *OPEN), (limit + 1, *OPEN)])
    assert [e.kind for e in alerts(hit.events)] == ["signal_lost", "signal_restored"]


def test_1hz_tracker_is_held_to_the_floor_not_to_three_seconds() -> None:
    r = Runner(DarkDetector())
    r.run(reporting(OPEN, range(0, 120)))
    assert DarkDetector().limit(DeviceKind.TRUCK, tuple(r.state.intervals)) == 120
    r.run([(119 + 60, *OPEN)], tick_every=TICK)
    assert r.events == []


def test_learned_slow_rhythm_raises_the_limit() -> None:
    # a truck tracker configured to report every 5 min: its first gap exceeds the truck default
    # (limit 120 s); from then on the slower rhythm it showed is trusted and the limit is 15 min
    r = Runner(DarkDetector(), kind=DeviceKind.TRUCK)
    seq = driving(ROAD, range(0, 3000, 300))
    r.run(seq[:5])
    assert len(alerts(r.events, "signal_lost")) == 1
    r.events.clear()
    r.run(seq[5:])
    assert r.events == []
    assert ticks(r, 2700 + 5, 2700 + 900) == []
    [lost] = ticks(r, 2700 + 905, 2700 + 1000)
    assert isinstance(lost, Alert) and lost.evidence["limit_s"] == 900


def test_one_long_gap_does_not_shift_the_learned_interval() -> None:
    r = Runner(DarkDetector())
    r.run(driving(ROAD, range(0, 100, 10)))
    r.fix(2000, *OPEN)
    assert DarkDetector().expected(DeviceKind.TRUCK, tuple(r.state.intervals))[0] == 10
    assert max(r.state.intervals) == 600


def _loaded(r: Runner, seconds: float) -> None:
    insp = Inspection(container_no=r.device_id, result=InspectionResult.LOADED, ts=at(seconds))
    ctx = TickContext(r.device_id, r.kind, r.last, r.fences, motion.current(r.motion_state), r.index, r.world)
    r.state, out = DarkDetector().on_inspection(r.state, insp, ctx)
    assert out == []


def test_a_container_loaded_on_board_may_go_quiet_on_the_quay() -> None:
    r = Runner(DarkDetector(), kind=DeviceKind.CONTAINER, device_id="MSCU1234565")
    r.run(reporting(OPEN, range(0, 600, 60)))
    _loaded(r, 560)
    assert ticks(r, 545, 7200) == []


def test_a_container_not_reported_loaded_going_quiet_raises() -> None:
    r = Runner(DarkDetector(), kind=DeviceKind.CONTAINER, device_id="MSCU1234565")
    r.run(reporting(OPEN, range(0, 600, 60)))
    _loaded(r, 100)  # an older loading report (before its last fix) forgives nothing
    assert len(ticks(r, 545, 7200)) == 1


# ---- parked trackers report slowly; moving ones must not get that slack ----------------------------


@pytest.mark.parametrize("interval", [10, 30])
def test_a_moving_truck_going_silent_raises_within_a_tick_of_the_limit(interval: int) -> None:
    r = Runner(DarkDetector())
    r.run(driving(ROAD, range(0, 600, interval)), tick_every=TICK)
    last = 600 - interval
    limit = max(120, 3 * interval)
    assert r.state is not None and r.state.stationary is False
    assert ticks(r, last + TICK, last + limit) == []
    [lost] = ticks(r, last + limit + TICK, last + 300)
    assert isinstance(lost, Alert) and lost.evidence["limit_s"] == limit
    assert lost.ts == at(last + limit)


def test_a_parked_truck_may_fall_back_to_five_minute_reports() -> None:
    r = Runner(DarkDetector())
    r.run([*reporting(OPEN, range(0, 120, 10)), *reporting(OPEN, range(410, 4000, 300))], tick_every=TICK)
    assert r.events == []  # the first 5-min gap came after a stationary fix: 900 s allowed, 300 s used


def test_a_parked_truck_silent_beyond_the_parked_allowance_still_raises() -> None:
    r = Runner(DarkDetector())
    r.run(reporting(OPEN, range(0, 120, 10)))
    assert ticks(r, 115, 110 + 900) == []
    [lost] = ticks(r, 110 + 905, 110 + 1000)
    assert isinstance(lost, Alert)
    assert lost.evidence["limit_s"] == 900 and lost.evidence["stationary_at_last_fix"] is True
    assert lost.evidence["expected_interval_basis"] == "parked allowance"


BESIDE_RESTRICTED = (-46.34165, -23.925069)  # santos-terminal-26, 40 m from santos-restricted-08
NEAR_RESTRICTED = (-46.2925247, -23.9725003)  # open port ground, 200 m from santos-restricted-06


def _halting(r: Runner, place: tuple[float, float], step_m: float = 1.0, speed: float | None = 1.0) -> float:
    """Drive about ``place`` reporting every 10 s, then brake: three fixes a second apart ``step_m`` apart, as a
    tracker that logs on motion sends just before it goes quiet, the last one at ``place``. Returns its time."""
    r.run(driving(place, range(0, 300, 10)), tick_every=TICK)
    for k in range(1, 4):
        r.fix(300 + k, *offset(place, 0, step_m * (k - 3)), speed=speed)
    return 303


@pytest.mark.parametrize(
    ("step_m", "speed", "raised"),
    [
        (1.0, None, False),  # 1 m/s by the chord: coming to a halt
        (8.0, None, True),  # 8 m/s by the chord: driving
        (30.0, 1.0, False),  # the reported speed wins over a jittery chord
        (1.0, 8.0, True),
    ],
)
def test_a_truck_coming_to_a_halt_in_a_terminal_and_falling_silent_gets_the_parked_allowance(
    step_m: float, speed: float | None, raised: bool
) -> None:
    # a tracker that logs on motion goes quiet within seconds of stopping, before the stationary model (two fixes
    # 20 s apart in one spot) has seen the stop: a GeoLife trace replayed into Santos did, silent for 12 minutes
    r = Runner(DarkDetector())
    last = _halting(r, TERMINAL, step_m, speed)
    assert any(SANTOS.get(f).kind is FenceKind.TERMINAL for f in r.fences)
    lost = alerts(ticks(r, last + 2, last + 700), "signal_lost")
    assert len(lost) == (1 if raised else 0)
    if raised:
        assert lost[0].evidence["limit_s"] == 120


def test_a_truck_parking_in_a_terminal_is_held_to_the_parked_allowance_not_less() -> None:
    r = Runner(DarkDetector())
    last = _halting(r, TERMINAL)
    assert alerts(ticks(r, last + 2, last + 900), "signal_lost") == []
    [lost] = alerts(ticks(r, last + 905, last + 1000), "signal_lost")
    assert lost.ts == at(last + 900) and lost.evidence["stationary_at_last_fix"] is True


@pytest.mark.parametrize(
    ("place", "where"),
    [
        (NEAR_RESTRICTED, "on open port ground, 200 m from a restricted lot"),
        (BESIDE_RESTRICTED, "in a terminal, 40 m from a restricted lot"),
    ],
)
def test_slowing_once_then_jamming_near_a_restricted_lot_raises_at_the_moving_limit(
    place: tuple[float, float], where: str
) -> None:
    # the insider's trick: one slow fix, then the jammer. Slowing down is no stop near a restricted lot (300 m on
    # open ground, 50 m in an authorised zone): the tracker keeps the limit of a moving one, 3 x 10 s floored at
    # 120 s, not 15 min
    r = Runner(DarkDetector())
    last = _halting(r, place)
    assert r.fences, where
    assert alerts(ticks(r, last + 2, last + 120), "signal_lost") == []
    [lost] = alerts(ticks(r, last + 122, last + 300), "signal_lost")
    assert lost.ts == at(last + 120), where
    assert lost.evidence["limit_s"] == 120 and lost.evidence["stationary_at_last_fix"] is False


def test_slowing_on_open_ground_far_from_restricted_lots_gets_the_parked_allowance() -> None:
    # honest trackers that log on motion go quiet as they stop, wherever that is: two GeoLife traces replayed into
    # Santos did on open ground, 2 km from any restricted lot
    r = Runner(DarkDetector())
    last = _halting(r, ROAD)
    assert alerts(ticks(r, last + 2, last + 800), "signal_lost") == []


def test_a_truck_seen_standing_on_the_road_still_gets_the_parked_allowance() -> None:
    # standing still (two fixes in one spot), not merely slowing: a queue on the road, the tracker in its stop mode
    r = Runner(DarkDetector())
    r.run([*driving(ROAD, range(0, 300, 10)), *reporting(offset(ROAD, 0, 300), range(300, 340, 10))], tick_every=TICK)
    assert r.state is not None and r.state.stationary
    assert alerts(ticks(r, 335, 330 + 900), "signal_lost") == []


def test_an_hour_parked_in_town_is_not_learned_as_the_trucks_parked_rhythm() -> None:
    # parked outside the port between two jobs, silent for an hour; then in the port, watched parked for 6 minutes
    # (its rhythm proven), then silent: held to three parked allowances, not to three of the hour in town (clipped
    # to 10 min, that made 30 minutes of silence in every later stop: edge-style benchmark, four blackouts missed)
    r = Runner(DarkDetector())
    r.run(reporting(OUTSIDE, range(0, 120, 10)))
    r.run(driving(ROAD, range(3720, 4000, 10)))
    r.run(reporting(OPEN, range(4000, 4400, 10)))
    assert r.state is not None and r.state.slowest_parked_s <= 300
    last = 4390
    assert alerts(ticks(r, last + TICK, last + 900), "signal_lost") == []
    [lost] = alerts(ticks(r, last + 905, last + 1000), "signal_lost")
    assert lost.evidence["limit_s"] == 900


def test_the_same_silence_after_a_moving_fix_raises() -> None:
    # near miss of the parked case: 290 s of silence is fine after a stationary fix, not after a moving one
    parked = Runner(DarkDetector())
    parked.run([*reporting(OPEN, range(0, 120, 10)), (400, *OPEN)])
    assert parked.events == []
    moving = Runner(DarkDetector())
    moving.run([*driving(ROAD, range(0, 120, 10)), (400, *ROAD)])
    assert [e.kind for e in alerts(moving.events)] == ["signal_lost", "signal_restored"]


def test_a_yard_spell_does_not_slow_down_the_moving_limit() -> None:
    # a box hauled with fixes every 20 s, set down for an hour at 5-min fixes, then hauled again
    r = Runner(DarkDetector(), kind=DeviceKind.CONTAINER, device_id="MSCU1234565")
    r.run(
        [
            *driving(ROAD, range(0, 600, 20)),
            *reporting(OPEN, range(600, 660, 20)),
            *reporting(OPEN, range(940, 4600, 300)),
            *driving(ROAD, range(4600, 4800, 20)),
        ],
        tick_every=TICK,
    )
    assert r.events == []
    assert r.state is not None and r.state.parked.count(300.0) >= 8
    assert statistics.median(r.state.intervals) == 20  # the yard's 5-min fixes went to the parked rhythm
    [lost] = ticks(r, 4780 + TICK, 4780 + 300)
    assert isinstance(lost, Alert) and lost.evidence["limit_s"] == 120


def test_a_container_first_heard_in_a_terminal_is_taken_as_parked() -> None:
    box = Runner(DarkDetector(), kind=DeviceKind.CONTAINER, device_id="MSCU1234565")
    box.run(reporting(TERMINAL, range(0, 3000, 300)), tick_every=TICK)
    assert box.events == []
    # near miss: a truck first heard there is not (it may be about to drive off), and its first 5-min gap raises
    truck = Runner(DarkDetector())
    truck.run(reporting(TERMINAL, range(0, 600, 300)))
    assert [e.kind for e in alerts(truck.events)] == ["signal_lost", "signal_restored"]


# ---- a parked rhythm that the device has proven ------------------------------------------------------


def _proven_then_parked_again(first_stop_s: int, silence_s: int, second_stop_before_s: int = 120) -> Runner:
    """Parked at OPEN for ``first_stop_s`` reporting every 10 s, a drive, then parked at TERMINAL and silent."""
    r = Runner(DarkDetector())
    first = reporting(OPEN, range(0, first_stop_s + 1, 10))
    t = first_stop_s + 10
    drive = driving(ROAD, range(t, t + 300, 10))
    t += 300
    second = reporting(TERMINAL, range(t, t + second_stop_before_s + 1, 10))
    r.run([*first, *drive, *second], tick_every=TICK)
    last = t + second_stop_before_s
    ticks(r, last + TICK, last + silence_s)
    return r


def test_a_truck_proven_to_keep_its_rhythm_while_parked_is_lost_after_three_of_its_parked_intervals() -> None:
    r = _proven_then_parked_again(first_stop_s=900, silence_s=480)
    [lost] = alerts(r.events, "signal_lost")
    assert lost.evidence["limit_s"] == 120  # 3 x 10 s, floored at 120 s, instead of the 15-min allowance
    assert "proven" in lost.evidence["expected_interval_basis"]


def test_a_truck_never_watched_parked_for_long_keeps_the_parked_allowance() -> None:
    # near miss: the same silence after a first stop of only 5 minutes (not proven) raises nothing
    r = _proven_then_parked_again(first_stop_s=200, silence_s=480)
    assert alerts(r.events, "signal_lost") == []


def test_a_stop_watched_for_five_minutes_proves_itself() -> None:
    # no earlier stop, but this one has been watched for 10 min at 10-s fixes: 8 min of silence is a loss
    r = _proven_then_parked_again(first_stop_s=60, silence_s=480, second_stop_before_s=600)
    [lost] = alerts(r.events, "signal_lost")
    assert lost.evidence["limit_s"] == 120


def test_a_tracker_switching_to_a_stop_mode_late_raises_once_then_is_held_to_its_slow_pace() -> None:
    # 10-s fixes for the first 10 min of every stop, then five-minute fixes: the first switch is raised (nothing
    # could tell it from a blackout), later ones are not
    r = Runner(DarkDetector())
    fixes: list[tuple[float, float, float]] = []
    t = 0
    for place in (OPEN, OPEN, OPEN):  # three stops, with a drive round the block between them
        fixes += reporting(place, range(t, t + 601, 10))
        fixes += reporting(place, range(t + 900, t + 2700, 300))
        t += 2700
        fixes += driving(ROAD, range(t, t + 300, 10))
        t += 300
    r.run(fixes, tick_every=TICK)
    assert len(alerts(r.events, "signal_lost")) == 1


def test_a_box_lifted_from_its_yard_is_not_expected_faster_than_it_reported_there() -> None:
    # five-minute fixes in the yard, then hauled at the same rhythm: its first moving gap is no loss
    box = Runner(DarkDetector(), kind=DeviceKind.CONTAINER, device_id="MSCU1234565")
    box.run(
        [*reporting(TERMINAL, range(0, 3001, 300)), *driving(ROAD, range(3300, 4500, 300))],
        tick_every=TICK,
    )
    assert alerts(box.events) == []


def test_a_box_set_down_drops_to_its_yard_rhythm_whatever_it_proved_before() -> None:
    # a container tracker kept 10-s fixes through a 15-min stop, then is set down and falls to 5-min fixes
    box = Runner(DarkDetector(), kind=DeviceKind.CONTAINER, device_id="MSCU1234565")
    box.run(
        [
            *reporting(OPEN, range(0, 901, 10)),
            *driving(ROAD, range(910, 1210, 10)),
            *reporting(TERMINAL, range(1210, 1271, 10)),
            *reporting(TERMINAL, range(1570, 3400, 300)),
        ],
        tick_every=TICK,
    )
    assert alerts(box.events) == []


def test_a_parked_truck_that_reappears_far_away_drove_while_silent() -> None:
    # parked two minutes at a gate queue (not proven), silent for 12 min, then heard 3 km away: it was moving
    far = Runner(DarkDetector())
    far.run([*reporting(OPEN, range(0, 121, 60)), (840, *offset(OPEN, 0, -3000))], tick_every=TICK)
    lost, restored = alerts(far.events)
    # judged as moving: 3 x its 60-s rhythm
    assert lost.kind == "signal_lost" and lost.ts == at(120 + 180)
    assert "moved" in lost.evidence["expected_interval_basis"]
    assert restored.kind == "signal_restored" and restored.severity is Severity.MEDIUM
    # near miss: the same silence ending 1 km away is a tracker that woke when its truck drove off
    near = Runner(DarkDetector())
    near.run([*reporting(OPEN, range(0, 121, 60)), (840, *offset(OPEN, 0, -1000))], tick_every=TICK)
    assert alerts(near.events) == []


def test_a_box_crawling_to_its_slot_in_a_yard_then_asleep_is_not_lost() -> None:
    # hauled at 60-s fixes, the last one at 3 m/s inside the terminal, then the yard rhythm of 5 min
    def run(speed: float) -> list[Alert]:
        box = Runner(DarkDetector(), kind=DeviceKind.CONTAINER, device_id="MSCU1234565")
        box.run([*driving(ROAD, range(0, 600, 60))], tick_every=TICK)
        box.fix(660, *TERMINAL, speed=speed)
        ticks(box, 665, 955)
        box.run(reporting(offset(TERMINAL, 5, 0), range(960, 2500, 300)), tick_every=TICK)
        return alerts(box.events, "signal_lost")

    assert run(3.0) == []
    assert len(run(12.0)) == 1  # near miss: driving through the terminal at 12 m/s and then silent is a loss
