"""The pure core as timestamped sequences: what must fire, and what must not."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from geofences import FenceIndex, LocalProjection, load_fence_set
from tests.unit import synthetic
from tracker.core import codec
from tracker.core.geofence import GeofenceParams
from tracker.core.model import Alert, DeviceKind, Ping, Severity
from tracker.core.pipeline import Params, Pipeline
from tracker.core.state import DeviceState

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
# the fence mechanics on their own; confirming a restricted entry by a second fix has its own test
RAW = Params(geofence=GeofenceParams(confirm_entry_kinds=frozenset()))
# a local frame near Santos' Alemoa terminals; x east, y north, metres
PROJ = LocalProjection(-46.33, -23.92)


def square(x0: float, y0: float, x1: float, y1: float) -> list[list[list[float]]]:
    return synthetic.square(PROJ, x0, y0, x1, y1)


def fence_set(windows: list[dict[str, object]] | None = None) -> FenceIndex:
    restricted: dict[str, object] = {"id": "R1", "name": "Vacant lot", "kind": "restricted"}
    if windows is not None:
        restricted["windows"] = windows
    doc = {
        "type": "FeatureCollection",
        "port": "testport",
        "name": "test",
        "features": [
            {
                "type": "Feature",
                "properties": restricted,
                "geometry": {"type": "Polygon", "coordinates": square(0, 0, 200, 200)},
            },
            {
                "type": "Feature",
                "properties": {"id": "G1", "name": "Gate 1", "kind": "gate"},
                "geometry": {"type": "Polygon", "coordinates": square(500, -10, 520, 10)},
            },
            {
                "type": "Feature",
                "properties": {"id": "T1", "name": "Terminal", "kind": "terminal"},
                "geometry": {"type": "Polygon", "coordinates": square(1000, -300, 1600, 300)},
            },
        ],
    }
    return FenceIndex(load_fence_set(doc).fences, hysteresis_m=25.0)


def ping(device: str, seconds: float, x: float, y: float) -> Ping:
    lon, lat = PROJ.to_lonlat(x, y)
    return Ping(device_id=device, ts=T0 + timedelta(seconds=seconds), lon=float(lon), lat=float(lat))


def run(pipeline: Pipeline, pings: Iterable[Ping]) -> tuple[DeviceState, list[Alert], list[tuple[str, ...]]]:
    state = DeviceState("TRUCK-1")
    alerts: list[Alert] = []
    flags: list[tuple[str, ...]] = []
    for p in pings:
        result = pipeline.step(state, p)
        state = result.state
        alerts.extend(a for a in result.alerts if isinstance(a, Alert))
        flags.append(result.flags)
    return state, alerts, flags


def test_enter_and_exit_restricted_zone() -> None:
    pipeline = Pipeline(fence_set(), RAW)
    track = [ping("TRUCK-1", i * 10, -100 + i * 30, 100) for i in range(12)]  # west to east through R1
    state, alerts, _ = run(pipeline, track)
    kinds = [(a.kind, a.fence_id, a.severity) for a in alerts]
    assert kinds == [
        ("geofence_enter", "R1", Severity.HIGH),
        ("geofence_exit", "R1", Severity.MEDIUM),
    ]
    enter = alerts[0]
    assert enter.port == "testport"
    assert enter.evidence["fence"] == {"id": "R1", "name": "Vacant lot", "kind": "restricted"}
    assert enter.ts == track[4].ts  # first fix inside: x = 20
    assert state.fences == frozenset()


def test_a_restricted_entry_needs_a_second_fix_inside_so_one_multipath_fix_raises_nothing() -> None:
    pipeline = Pipeline(fence_set())
    outlier = [ping("TRUCK-1", 0, -60, 100), ping("TRUCK-1", 10, 100, 100), ping("TRUCK-1", 20, -40, 100)]
    _, alerts, _ = run(pipeline, outlier)
    assert alerts == []
    entry = [ping("TRUCK-1", 0, -60, 100), ping("TRUCK-1", 10, 30, 100), ping("TRUCK-1", 20, 60, 100)]
    _, alerts, _ = run(Pipeline(fence_set()), entry)
    assert [(a.kind, a.fence_id, a.ts) for a in alerts] == [("geofence_enter", "R1", T0 + timedelta(seconds=20))]
    assert alerts[0].evidence["previous_fix"]["ts"] == (T0 + timedelta(seconds=10)).isoformat()  # the first inside


def test_driving_past_outside_raises_nothing() -> None:
    pipeline = Pipeline(fence_set())
    track = [ping("TRUCK-1", i * 5, -300 + i * 20, 260) for i in range(40)]  # 60 m north of R1, gate far
    _, alerts, _ = run(pipeline, track)
    assert alerts == []


def test_parked_on_boundary_with_gps_noise_does_not_flap() -> None:
    rng = random.Random(7)
    pipeline = Pipeline(fence_set())
    track = [ping("TRUCK-1", i * 10, 200 + rng.uniform(-15, 15), 100 + rng.uniform(-15, 15)) for i in range(300)]
    _, alerts, _ = run(pipeline, track)
    assert [a.kind for a in alerts if a.kind.startswith("geofence")] == ["geofence_enter"]
    # 50 minutes parked on a restricted boundary is also an unexpected stop: exactly one
    assert [a.kind for a in alerts if a.kind == "unexpected_stop"] == ["unexpected_stop"]


def test_sparse_fixes_jumping_over_a_gate_raise_a_crossing() -> None:
    pipeline = Pipeline(fence_set())
    _, alerts, _ = run(pipeline, [ping("TRUCK-1", 0, 400, 0), ping("TRUCK-1", 30, 700, 0)])
    assert [(a.kind, a.fence_id) for a in alerts] == [("geofence_cross", "G1")]


def test_a_chord_clipping_a_corner_is_not_a_crossing_but_a_chord_through_is() -> None:
    pipeline = Pipeline(fence_set())
    _, alerts, _ = run(pipeline, [ping("TRUCK-1", 0, -10, 185), ping("TRUCK-1", 10, 25, 220)])
    assert alerts == []  # ~7 m inside R1's corner: a road bend cut short between two fixes
    _, alerts, _ = run(pipeline, [ping("TRUCK-1", 0, -50, 100), ping("TRUCK-1", 20, 250, 100)])
    # inferred from a straight line, so recorded and published but not queued for operators
    assert [(a.kind, a.fence_id, a.severity) for a in alerts] == [("geofence_cross", "R1", Severity.LOW)]


def test_parked_beside_a_restricted_fence_with_noise_never_enters_it_but_driving_in_does() -> None:
    base = fence_set()
    index = FenceIndex(base.fences, hysteresis_m=25.0, entry_margin_m=10.0)
    pipeline = Pipeline(index)
    rng = random.Random(11)
    # parked 3 m outside R1's west edge; fixes wander +-8 m, so some land a few metres inside
    parked = [ping("TRUCK-1", i * 30, -3 + rng.uniform(-8, 8), 100 + rng.uniform(-8, 8)) for i in range(200)]
    raw_inside = sum(1 for p in parked if "R1" in index.fences_at([p.lon], [p.lat])[0])
    assert raw_inside > 20  # without the entry margin each of these would be a high alarm
    _, alerts, _ = run(pipeline, parked)
    assert [a for a in alerts if a.fence_id == "R1"] == []
    _, alerts, _ = run(Pipeline(index), [ping("TRUCK-1", i * 10, -60 + i * 20, 100) for i in range(8)])
    assert [(a.kind, a.fence_id) for a in alerts if a.fence_id == "R1"] == [("geofence_enter", "R1")]


def test_long_gap_is_not_taken_as_a_straight_crossing() -> None:
    pipeline = Pipeline(fence_set())
    _, alerts, _ = run(pipeline, [ping("TRUCK-1", 0, 400, 0), ping("TRUCK-1", 3600, 700, 0)])
    assert alerts == []


def test_late_and_duplicate_fixes_are_flagged_not_detected() -> None:
    pipeline = Pipeline(fence_set(), RAW)
    track = [
        ping("TRUCK-1", 0, -50, 100),
        ping("TRUCK-1", 20, 100, 100),
        ping("TRUCK-1", 10, -50, 100),
        ping("TRUCK-1", 20, 100, 100),
    ]
    state, alerts, flags = run(pipeline, track)
    assert flags == [(), (), ("late",), ("duplicate_ts",)]
    assert [a.kind for a in alerts] == ["geofence_enter"]
    assert state.last is not None
    assert state.last.ts == T0 + timedelta(seconds=20)


def test_fence_outside_its_time_window_raises_nothing() -> None:
    # restricted only at night (22:00-06:00); T0 is 08:00
    pipeline = Pipeline(fence_set(windows=[{"start": "22:00", "end": "06:00"}]))
    _, alerts, _ = run(pipeline, [ping("TRUCK-1", 0, -50, 100), ping("TRUCK-1", 10, 100, 100)])
    assert alerts == []


def test_replay_gives_identical_alert_ids() -> None:
    pipeline = Pipeline(fence_set())
    track = [ping("TRUCK-1", i * 10, -100 + i * 30, 100) for i in range(12)]
    _, first, _ = run(pipeline, track)
    _, second, _ = run(pipeline, track)
    assert [a.id for a in first] == [a.id for a in second]
    assert len({a.id for a in first}) == len(first)


def test_spoofed_fix_is_flagged_and_kept_away_from_the_detectors() -> None:
    pipeline = Pipeline(fence_set(), RAW)
    # driving east at 10 m/s towards R1; one fix teleported 8 km north (inside nothing), then on track again
    track = [ping("TRUCK-1", i * 10, -600 + i * 100, 100) for i in range(5)]
    track.append(ping("TRUCK-1", 50, 6000, 9000))
    track += [ping("TRUCK-1", 50 + i * 10, -150 + i * 100, 100) for i in range(1, 4)]
    state, alerts, flags = run(pipeline, track)
    assert set(flags[5]) & {"teleport", "implausible_speed"}
    assert all(f == () for i, f in enumerate(flags) if i != 5)
    # an 8 km jump inside a port is never noise: reported at once, and filed under the port the truck is in;
    # the genuine entry into R1 (x = 50 at t = 70) is still seen, judged against the last accepted fix
    assert [(a.kind, a.fence_id) for a in alerts] == [("gps_integrity", None), ("geofence_enter", "R1")]
    assert alerts[0].ts == T0 + timedelta(seconds=50)
    assert alerts[1].ts == T0 + timedelta(seconds=70)
    assert state.last is not None
    assert state.last.ts == T0 + timedelta(seconds=80)


def test_state_round_trips_through_the_codec() -> None:
    pipeline = Pipeline(fence_set())
    state, _, _ = run(pipeline, [ping("TRUCK-1", 0, -50, 100), ping("TRUCK-1", 10, 100, 100)])
    again = codec.decode(codec.encode(state))
    assert again == state and again is not state


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-150, 350), st.floats(-150, 350)), min_size=1, max_size=60))
def test_enter_and_exit_alternate_per_fence(points: list[tuple[float, float]]) -> None:
    pipeline = Pipeline(fence_set())
    _, alerts, _ = run(pipeline, [ping("TRUCK-1", i * 5, x, y) for i, (x, y) in enumerate(points)])
    per_fence: dict[str, list[str]] = {}
    for a in alerts:
        if a.kind in ("geofence_enter", "geofence_exit"):
            assert a.fence_id is not None
            per_fence.setdefault(a.fence_id, []).append(a.kind)
    for seq in per_fence.values():
        assert all(k == ("geofence_enter" if i % 2 == 0 else "geofence_exit") for i, k in enumerate(seq)), seq


def _two_trucks(pipeline: Pipeline, legs: dict[str, list[tuple[float, float, float]]]) -> list[Alert]:
    """Interleave the fixes of several trucks by time through one pipeline (one shared world)."""
    states = {dev: DeviceState(dev) for dev in legs}
    timeline = sorted((t, dev, x, y) for dev, fixes in legs.items() for t, x, y in fixes)
    alerts: list[Alert] = []
    for t, dev, x, y in timeline:
        result = pipeline.step(states[dev], ping(dev, t, x, y))
        states[dev] = result.state
        alerts.extend(a for a in result.alerts if isinstance(a, Alert))
    return alerts


PORT = synthetic.index(
    PROJ,
    "testport",
    [
        ("P", "Port area", "port_boundary", (-3000, -3000, 3000, 3000)),
        ("T1", "Terminal", "terminal", (1000, -300, 1600, 300)),
    ],
)


def test_two_trucks_leaving_a_terminal_together_are_no_roadside_meeting() -> None:
    # parked 10 m inside the terminal's west edge (x = 1000) for ten minutes, side by side; they leave
    # together and their first fixes come from the road 30 m outside, still within the stop's 50 m cluster
    wait = [(float(t), 1010.0, 0.0) for t in range(0, 601, 30)]
    leaving = [(615.0, 970.0, 0.0), (625.0, 900.0, 0.0), (635.0, 800.0, 0.0)]
    alerts = _two_trucks(
        Pipeline(PORT, RAW),
        {
            "TRUCK-A": wait + leaving,
            "TRUCK-B": [(t + 2, x, y + 8) for t, x, y in wait + leaving],
        },
    )
    assert [a.kind for a in alerts if a.kind == "rendezvous"] == []


def test_two_trucks_standing_just_outside_a_terminal_are_a_meeting() -> None:
    # the near miss: the same place, 30 m outside the edge, but they never were inside
    stand = [(float(t), 970.0, 0.0) for t in range(0, 421, 30)]
    alerts = _two_trucks(
        Pipeline(PORT, RAW),
        {"TRUCK-A": stand, "TRUCK-B": [(t + 2, x, y + 8) for t, x, y in stand]},
    )
    # both sides notice it and reach the same alert (one key, stored once)
    assert len({a.key for a in alerts if a.kind == "rendezvous"}) == 1


def test_two_trucks_that_leave_a_terminal_and_stop_together_on_the_road_just_outside_are_a_meeting() -> None:
    # they waited inside, then pulled out 35 m and stopped on the road there: within their stops' 50 m
    # clusters, but the time outside the terminal counts from the first fix out there
    wait = [(float(t), 1010.0, 0.0) for t in range(0, 301, 30)]
    out = [(float(t), 965.0, 0.0) for t in range(330, 331 + 420, 30)]
    alerts = _two_trucks(
        Pipeline(PORT, RAW),
        {"TRUCK-A": wait + out, "TRUCK-B": [(t + 2, x, y + 8) for t, x, y in wait + out]},
    )
    assert len({a.key for a in alerts if a.kind == "rendezvous"}) == 1
    (first, *_) = [a for a in alerts if a.kind == "rendezvous"]
    assert first.evidence["together_since"] == (T0 + timedelta(seconds=332)).isoformat()


def test_a_parked_haul_survives_multipath_fixes_of_either_tracker() -> None:
    # a declared box and its truck parked together on open port ground; the box throws one fix 250 m off, and the
    # truck's next fix is thrown 250 m off the other way: two readings on four different fixes, both "apart". Each
    # outlier is one pending fix outside its stop's cluster, and the stops' centres stay together.
    pipeline = Pipeline(PORT, RAW)
    box = pipeline.pair(DeviceState("MSCU1234565", DeviceKind.CONTAINER), "TRUCK-A", T0).state
    states = {"TRUCK-A": DeviceState("TRUCK-A"), "MSCU1234565": box}
    fixes = [(float(t), "TRUCK-A", 0.0, 0.0) for t in range(0, 601, 30)]
    fixes += [(float(t), "MSCU1234565", 5.0, 0.0) for t in range(5, 601, 20) if t != 485]
    fixes.append((485.0, "MSCU1234565", 5.0, 250.0))  # the box's multipath fix: reading one
    fixes.append((500.0, "TRUCK-A", 0.0, -250.0))  # the truck's, compared with the box's next fix: reading two
    alerts: list[Alert] = []
    for t, dev, x, y in sorted(fixes):
        result = pipeline.step(states[dev], ping(dev, t, x, y))
        states[dev] = result.state
        alerts.extend(a for a in result.alerts if isinstance(a, Alert))
    assert [a.kind for a in alerts if a.kind == "container_separated"] == []


def test_a_silent_device_is_ticked_only_when_some_detector_has_a_timer_to_run() -> None:
    pipeline = Pipeline(PORT, RAW)
    inside = pipeline.step(DeviceState("TRUCK-A"), ping("TRUCK-A", 0, 0, 0)).state
    outside = pipeline.step(DeviceState("TRUCK-B"), ping("TRUCK-B", 0, 5000, 0)).state  # beyond the port fence
    later = T0 + timedelta(seconds=600)
    assert inside.fences and pipeline.needs_tick(inside, later)  # it may be going dark in the port
    assert not outside.fences and not pipeline.needs_tick(outside, later)  # gone home: nothing to time
    assert not pipeline.needs_tick(inside, T0 + timedelta(seconds=10))  # just heard from
