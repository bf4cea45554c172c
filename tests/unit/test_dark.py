"""Going dark as timestamped sequences: silences that must raise, and those that must not."""

from __future__ import annotations

import pytest

from tests.unit.detector_helpers import OPEN, OUTSIDE, TERMINAL, Runner, at, offset
from tracker.core import motion
from tracker.core.dark import DarkDetector
from tracker.core.detector import TickContext
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Event, Inspection, InspectionResult, Severity

TICK = 5  # the service's default tick period


def alerts(events: list[Event], kind: str | None = None) -> list[Alert]:
    return [e for e in events if isinstance(e, Alert) and (kind is None or e.kind == kind)]


def updates(events: list[Event]) -> list[AlertUpdate]:
    return [e for e in events if isinstance(e, AlertUpdate)]


def reporting(place: tuple[float, float], times: range) -> list[tuple[float, float, float]]:
    return [(t, *place) for t in times]


def ticks(r: Runner, start: float, stop: float) -> list[Event]:
    out: list[Event] = []
    t = start
    while t <= stop:
        out.extend(r.tick(t))
        t += TICK
    return out


def test_silence_in_port_raises_signal_lost_on_a_tick() -> None:
    r = Runner(DarkDetector())
    r.run(reporting(OPEN, range(0, 300, 10)))  # learned interval 10 s -> limit is the 120 s floor
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
    r.run(reporting(TERMINAL, range(0, 300, 10)))
    [lost] = ticks(r, 295, 600)
    assert isinstance(lost, Alert)
    assert lost.fence_id is not None and lost.fence_id.startswith("santos-")
    out = r.fix(900, *offset(TERMINAL, 50, 0))
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
    r.run(reporting(OPEN, range(0, 300, 10)))
    ticks(r, 295, 600)
    [restored] = alerts(r.fix(900, *offset(OPEN, 0, 450)), "signal_restored")
    assert restored.severity is Severity.MEDIUM and restored.evidence["distance_m"] > 200


def test_one_loss_per_silence_however_many_ticks() -> None:
    r = Runner(DarkDetector())
    r.run(reporting(OPEN, range(0, 300, 10)))
    assert len(ticks(r, 295, 5000)) == 1


def test_replay_without_ticks_detects_the_gap_with_the_same_alert() -> None:
    live = Runner(DarkDetector())
    seq = [*reporting(OPEN, range(0, 300, 10)), (700, *OPEN)]
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
    assert DarkDetector().limit(DeviceKind.TRUCK, tuple(r.state["intervals"])) == 120  # type: ignore[index]
    r.run([(119 + 60, *OPEN)], tick_every=TICK)
    assert r.events == []


def test_learned_slow_rhythm_raises_the_limit() -> None:
    # a truck tracker configured to report every 5 min: its first gaps exceed the truck default
    # (limit 120 s), but after ``min_samples`` intervals the rhythm is learned and the limit is 15 min
    r = Runner(DarkDetector(), kind=DeviceKind.TRUCK)
    r.run(reporting(OPEN, range(0, 1500, 300)))
    assert len(alerts(r.events, "signal_lost")) == 4
    r.events.clear()
    r.run(reporting(OPEN, range(1500, 3000, 300)))
    assert r.events == []
    assert ticks(r, 2700 + 5, 2700 + 900) == []
    [lost] = ticks(r, 2700 + 905, 2700 + 1000)
    assert isinstance(lost, Alert) and lost.evidence["limit_s"] == 900


def test_one_long_gap_does_not_shift_the_learned_interval() -> None:
    r = Runner(DarkDetector())
    r.run(reporting(OPEN, range(0, 100, 10)))
    r.fix(2000, *OPEN)
    assert DarkDetector().expected(DeviceKind.TRUCK, tuple(r.state["intervals"]))[0] == 10  # type: ignore[index]
    assert max(r.state["intervals"]) == 600  # type: ignore[index]


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
