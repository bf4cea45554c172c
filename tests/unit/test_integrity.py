"""Plausibility pre-filter: spoofed and jammed fixes, and the honest fixes that must pass."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.detector_helpers import OPEN, SANTOS, at, offset
from tracker.core.integrity import IntegrityCheck, IntegrityParams, accepted
from tracker.core.model import Alert, DeviceKind, Event, Inspection, InspectionResult, Ping, Severity
from tracker.core.pipeline import Pipeline
from tracker.core.state import DeviceState, Fix


@dataclass
class Feed:
    """The pipeline's side of the contract: ``previous`` is the last ACCEPTED fix."""

    check: IntegrityCheck = field(default_factory=IntegrityCheck)
    state: Any = None
    last: Fix | None = None
    flags: list[tuple[str, ...]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def fix(self, seconds: float, lon: float, lat: float, accuracy: float | None = None) -> tuple[str, ...]:
        ping = Ping("TRK-1", at(seconds), lon, lat, accuracy=accuracy)
        self.state, flags, events = self.check.check(self.state, ping, self.last)
        if accepted(flags):
            self.last = Fix.of(ping)
        self.flags.append(flags)
        self.events.extend(events)
        return flags

    def alerts(self) -> list[Alert]:
        return [e for e in self.events if isinstance(e, Alert)]


def driving(seconds: range, speed_ms: float, noise_m: float = 0.0, seed: int = 3) -> list[tuple[float, float, float]]:
    rnd = random.Random(seed)
    return [
        (t, *offset(OPEN, speed_ms * t + rnd.uniform(-noise_m, noise_m), rnd.uniform(-noise_m, noise_m)))
        for t in seconds
    ]


def test_honest_driving_at_1hz_with_noise_passes() -> None:
    f = Feed()
    for t, lon, lat in driving(range(0, 600), speed_ms=25, noise_m=15):
        assert f.fix(t, lon, lat) == ()
    assert f.events == []


def test_a_single_spoofed_fix_is_flagged_and_does_not_poison_the_next() -> None:
    f = Feed()
    for t, lon, lat in driving(range(0, 60, 5), speed_ms=10):
        f.fix(t, lon, lat)
    flags = f.fix(61, *offset(OPEN, 10_000, 0))
    assert set(flags) == {"implausible_speed", "teleport"}
    assert f.last is not None and f.last.ts == at(55)  # the spoofed fix is not the reference
    assert f.fix(65, *offset(OPEN, 650, 0)) == ()  # the genuine next fix is no "jump back"
    [alert] = f.alerts()  # 10 km in 6 s is a teleport: reported on its own, once
    assert alert.evidence["trigger"] == "teleport" and alert.ts == at(61) and alert.key == at(61).isoformat()


def test_implausible_speed() -> None:
    f = Feed()
    f.fix(0, *OPEN)
    assert f.fix(3, *offset(OPEN, 300, 0)) == ("implausible_speed",)  # ~90 m/s after the noise allowance


def test_fast_but_possible_is_not_flagged() -> None:
    f = Feed()
    f.fix(0, *OPEN)
    assert f.fix(10, *offset(OPEN, 500, 0)) == ()  # 180 km/h (nearly 170 after the noise allowance)


def test_teleport_regardless_of_speed() -> None:
    f = Feed()
    f.fix(0, *OPEN)
    assert f.fix(500, *offset(OPEN, 6000, 0)) == ("teleport",)  # 43 km/h, but 6 km inside the window


def test_teleport_near_miss() -> None:
    f = Feed()
    f.fix(0, *OPEN)
    assert f.fix(600, *offset(OPEN, 6000, 0)) == ()
    g = Feed()
    g.fix(0, *OPEN)
    assert g.fix(500, *offset(OPEN, 4900, 0)) == ()


def test_reappearing_far_away_after_a_long_gap_is_plausible() -> None:
    f = Feed()
    f.fix(0, *OPEN)
    assert f.fix(2 * 3600, *offset(OPEN, 0, 60_000)) == ()  # tracker off 2 h, truck drove 60 km
    assert f.events == []


def test_duplicate_timestamp_with_a_different_position() -> None:
    f = Feed()
    f.fix(0, *OPEN)
    assert f.fix(0, *offset(OPEN, 40, 0)) == ("duplicate_ts_moved",)
    g = Feed()
    g.fix(0, *OPEN)
    assert g.fix(0, *offset(OPEN, 2, 0)) == ()


def test_outside_accuracy_only_when_accuracy_is_given() -> None:
    f = Feed()
    f.fix(0, *OPEN, accuracy=5)
    assert "outside_accuracy" in f.fix(10, *offset(OPEN, 2000, 0), accuracy=5)
    g = Feed()
    g.fix(0, *OPEN)
    assert "outside_accuracy" not in g.fix(10, *offset(OPEN, 2000, 0))
    h = Feed()  # a receiver that says it is lost by a kilometre explains the jump
    h.fix(0, *OPEN, accuracy=5)
    assert "outside_accuracy" not in h.fix(10, *offset(OPEN, 2000, 0), accuracy=1000)


def test_outside_accuracy_catches_jumps_the_noise_allowance_hides() -> None:
    # 80 m in 1 s: 50 m/s after the fixed 30 m allowance is under 200 km/h, yet both fixes claim 3 m
    f = Feed()
    f.fix(0, *OPEN, accuracy=3)
    assert f.fix(1, *offset(OPEN, 80, 0), accuracy=3) == ("outside_accuracy",)


def test_burst_of_three_raises_one_alert() -> None:
    f = Feed()
    f.fix(0, *OPEN)
    # 3 km in 5-10 s: impossible speed, but under the teleport distance, so only the repeat count raises
    spoofs = [offset(OPEN, 3_000, 0), offset(OPEN, -3_000, 0), offset(OPEN, 0, 3_000), offset(OPEN, 0, -3_000)]
    for i, (lon, lat) in enumerate(spoofs):
        f.fix(10 + i * 10, lon, lat)
        f.fix(15 + i * 10, *OPEN)
    [alert] = f.alerts()
    assert alert.kind == "gps_integrity" and alert.severity is Severity.HIGH
    assert alert.key == at(10).isoformat() and alert.ts == at(30)
    fixes = alert.evidence["flagged_fixes"]
    assert len(fixes) == 3 and all(x["speed_kmh"] > 1000 for x in fixes)
    assert fixes[0]["ts"] == at(10).isoformat()


def test_two_implausible_fixes_are_no_burst() -> None:
    f = Feed()
    f.fix(0, *OPEN)
    f.fix(10, *offset(OPEN, 3_000, 0))
    f.fix(20, *offset(OPEN, -3_000, 0))
    assert f.alerts() == []


def test_implausible_fixes_spread_over_more_than_the_window_are_no_burst() -> None:
    f = Feed()
    for t in range(0, 1300, 10):  # a tracker reporting every 10 s: the window stays 10 min
        f.fix(t, *OPEN)
        if t in (10, 620, 1230):
            f.fix(t + 5, *offset(OPEN, 3_000 if t % 20 else -3_000, 0))
    assert f.alerts() == []


def test_a_new_burst_after_a_quiet_window_gets_a_new_alert() -> None:
    f = Feed()
    f.fix(0, *OPEN)
    for start in (10, 2000):
        f.fix(start - 5, *OPEN)
        for i in range(3):
            f.fix(start + 10 * i, *offset(OPEN, 20_000 * (-1) ** i, 0))
        f.fix(start + 40, *OPEN)
    first, second = f.alerts()
    assert first.key == at(10).isoformat() and second.key == at(2000).isoformat()


def test_reanchors_when_the_reference_was_the_bad_fix() -> None:
    f = Feed()
    f.fix(0, *offset(OPEN, 0, 30_000))  # a cold-start fix 30 km off
    genuine = driving(range(10, 120, 10), speed_ms=10)
    results = [f.fix(t, lon, lat) for t, lon, lat in genuine]
    assert results[0] and results[1] and accepted(()) and not accepted(results[0])
    assert results[2] == ("reanchored",)
    assert all(r == () for r in results[3:])
    assert f.last is not None and f.last.ts == at(120 - 10)
    # the first genuine fix is a 30 km teleport from the cold-start fix and is reported at once; moving the
    # trusted position two fixes later is reported on its own
    teleport, moved = f.alerts()
    assert teleport.evidence["trigger"] == "teleport" and teleport.evidence["reanchored"] is False
    assert moved.evidence["trigger"] == "reanchored" and moved.evidence["reanchored"] is True
    assert moved.ts == at(30) and moved.key != teleport.key


def test_no_reanchor_on_inconsistent_spoofs() -> None:
    f = Feed()
    f.fix(0, *OPEN)
    for i in range(6):
        flags = f.fix(10 + i, *offset(OPEN, 20_000 * (-1) ** i, 0))
        assert "reanchored" not in flags and not accepted(flags)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 900), st.floats(-3000, 3000), st.floats(-3000, 3000)), max_size=60))
def test_one_alert_per_burst_and_the_reference_is_always_accepted(steps: list[tuple[int, float, float]]) -> None:
    f = Feed(IntegrityCheck(IntegrityParams()))
    t = 0
    for dt, x, y in steps:
        t += dt
        f.fix(t, *offset(OPEN, x, y))
    keys = [a.key for a in f.alerts()]
    assert len(keys) == len(set(keys))
    if f.last is not None:
        assert any(accepted(fl) for fl in f.flags)


# ---- slow trackers --------------------------------------------------------------------------------


def test_a_slow_tracker_teleported_is_reported_on_the_first_spoofed_fix() -> None:
    # a tracker reporting every 5 min, spoofed 20 km away for five fixes: it never puts three implausible
    # fixes in 10 min, yet the first jump is no receiver error and is raised at once, once for the burst
    f = Feed()
    for t in range(0, 1500, 300):
        assert f.fix(t, *offset(OPEN, t, 0)) == ()
    for t in range(1500, 3000, 300):
        f.fix(t, *offset(OPEN, 20_000, 500))
    teleports = [a for a in f.alerts() if a.evidence["trigger"] == "teleport"]
    assert [a.ts for a in teleports] == [at(1500)]
    assert teleports[0].severity is Severity.HIGH and teleports[0].evidence["flagged_fixes"][0]["distance_m"] > 18_000


def test_a_jump_under_the_teleport_distance_is_not_reported_alone() -> None:
    f = Feed()
    for t in range(0, 1500, 300):
        f.fix(t, *OPEN)
    assert f.fix(1205, *offset(OPEN, 4_000, 0)) == ("implausible_speed",)
    assert f.alerts() == []


def _spoofed_every_other_report(interval: int) -> Feed:
    """Genuine fixes every ``interval`` s; three 3-km spoofs (impossible speed, no teleport) 600 s apart."""
    f = Feed()
    spoofs = {300: 3_000, 900: -3_000, 1500: 3_000}
    for t in range(0, 1800, interval):
        f.fix(t, *OPEN)
        if t in spoofs:
            assert "implausible_speed" in f.fix(t + 5, *offset(OPEN, spoofs[t], 0))
    return f


def test_repeat_window_stretches_to_a_slow_trackers_rhythm() -> None:
    [alert] = _spoofed_every_other_report(300).alerts()
    assert alert.evidence["trigger"] == "repeat" and alert.ts == at(1505)
    assert alert.evidence["repeat_window_s"] == 3 * 300 * 1.5
    assert len(alert.evidence["flagged_fixes"]) == 3


def test_the_same_spread_on_a_fast_tracker_is_no_burst() -> None:
    assert _spoofed_every_other_report(10).alerts() == []


# -- a rejected fix's sensor events (through the pipeline) ---------------------------------------------------


def _cleared_box_with_a_jammed_fix(events: tuple[str, ...]) -> tuple[list[Event], DeviceState, DeviceState]:
    """A cleared box standing in the port, then one fix 20 km off (a teleport the check rejects) carrying ``events``.

    Returns the events of the rejected fix's step, and the states before and after it."""
    pipeline = Pipeline(SANTOS)
    state = DeviceState("MSCU1234565", kind=DeviceKind.CONTAINER)
    for t in (0, 60, 120):
        state = pipeline.step(state, Ping("MSCU1234565", at(t), *OPEN)).state
    state = pipeline.inspect(
        state, Inspection("MSCU1234565", InspectionResult.CLEARED, at(130), "santos-inspection-41", "S1", "C-1")
    ).state
    for t in (180, 240):
        state = pipeline.step(state, Ping("MSCU1234565", at(t), *OPEN)).state
    before = state
    result = pipeline.step(before, Ping("MSCU1234565", at(300), *offset(OPEN, 20_000, 0), events=events))
    assert not accepted(result.flags) and "teleport" in result.flags
    return list(result.alerts), before, result.state


def test_a_door_opening_on_a_fix_rejected_as_a_teleport_still_reaches_the_access_window() -> None:
    events, before, after = _cleared_box_with_a_jammed_fix(("door_open",))
    sensor = [e for e in events if isinstance(e, Alert) and e.evidence.get("reason") == "sensor"]
    assert len(sensor) == 1
    alert = sensor[0]
    assert alert.kind == "post_inspection_access" and alert.ts == at(300)
    assert alert.evidence["events"] == ["door_open"]
    # judged where the box last plausibly was, not at the spoofed position
    assert (alert.evidence["fix"]["lon"], alert.evidence["fix"]["lat"]) == OPEN
    assert any(isinstance(e, Alert) and e.kind == "gps_integrity" for e in events)
    # the rejected position moved nothing: the last accepted fix, the fences and the motion are those before it
    assert after.last == before.last and after.fences == before.fences and after.motion == before.motion


def test_a_rejected_fix_without_sensor_events_raises_no_access_alert() -> None:
    events, before, after = _cleared_box_with_a_jammed_fix(())
    assert [e for e in events if isinstance(e, Alert) and e.kind == "post_inspection_access"] == []
    assert after.post_inspection_access == before.post_inspection_access
