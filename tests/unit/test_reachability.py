"""Sparse fixes either side of a restricted fence: raised only when no road around it fits the time.

The cases sit on the shipped fence sets, so they exercise the real corridor graphs. Santos' unleased area DSP
07-09 is skirted by the port roads: two fixes on roads 1,091 m apart through it are 1,329 m apart round it.
Callao's Fortaleza Real Felipe lies outside the port, where the fence set maps only Avenida Agustin Gamarra
along its west side: fixes by that road on either side of a bastion are a short drive apart round it, and a fix
south of the fortress is on no mapped road at all, so the corridors cannot say how the device got there.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import msgspec
import numpy as np
import pytest
import shapely
from shapely.geometry.base import BaseGeometry

from geofences import FenceIndex, load_port
from geofences.fence import TimeWindow
from tracker.config import Settings
from tracker.core import codec, geofence
from tracker.core.model import Alert, Ping, Severity
from tracker.core.reachability import CorridorGraph, ReachParams, _misses_box, judge
from tracker.core.state import DeviceState, Fix

T0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
CALLAO = load_port("callao")
SANTOS = load_port("santos")
FORTRESS = CALLAO.by_id("callao-restricted-fortaleza-real-felipe")
DSP07 = SANTOS.by_id("santos-restricted-07")
DSP47 = SANTOS.by_id("santos-restricted-14")
CALLAO_GRAPH = CorridorGraph.build(CALLAO.fences)
SANTOS_GRAPH = CorridorGraph.build(SANTOS.fences)

FORT_NORTH = (-77.1501921, -12.0619247)  # by Avenida Agustin Gamarra, north-west of the fortress
FORT_SOUTH = (-77.1496857, -12.0645254)  # south of it: 184 m from any mapped road
GAMARRA_SW = (-77.1505486, -12.0634568)
GAMARRA_NE = (-77.1480651, -12.0600339)  # 467 m through the fortress' north-west bastion; 666 m round it by road
DSP_SOUTH = (-46.2934876, -23.975693)
DSP_NORTH = (-46.2984977, -23.9670165)  # 1,091 m through DSP 07-09; 1,329 m round it (by road and the gates)
DSP_A = (-46.2990406, -23.967329)
DSP_B = (-46.2992229, -23.9688334)  # 168 m across its corner; 384 m round it by road
PLACES = {
    "callao": geofence._places(FenceIndex(CALLAO.fences), "callao"),
    "santos": geofence._places(FenceIndex(SANTOS.fences), "santos"),
}


def fix(lonlat: tuple[float, float], seconds: float) -> tuple[float, float, float]:
    return lonlat[0], lonlat[1], (T0 + timedelta(seconds=seconds)).timestamp()


def test_callao_fortress_fixes_120_s_apart_by_the_road_on_either_side_raise_nothing() -> None:
    v = judge(CALLAO_GRAPH, FORTRESS, fix(GAMARRA_SW, 0), fix(GAMARRA_NE, 120), None, PLACES["callao"])
    assert not v.crossed and v.reason == "corridor_path_avoids"
    # round it along Gamarra (666 m), or shorter through the unmapped streets outside the port between two road ends
    assert v.straight_m == pytest.approx(467, abs=5) and v.avoiding_m is not None and v.avoiding_m <= 666
    assert v.budget_m == pytest.approx(120 * ReachParams().max_speed_ms + ReachParams().gps_slack_m)
    assert (v.through_m or 0) > 0  # the straight line does cut through the fortress


def test_callao_fortress_a_fix_off_every_mapped_road_claims_nothing() -> None:
    # south of the fortress the fence set maps no road: the device came by a street the corridors do not know
    v = judge(CALLAO_GRAPH, FORTRESS, fix(FORT_NORTH, 0), fix(FORT_SOUTH, 120), None, PLACES["callao"])
    assert not v.crossed and v.reason == "off_network"
    # with every off-road fix allowed to join the roads from 200 m, no road goes round it: the prism would say
    # crossed, which is exactly the claim an unmapped street makes unsafe
    loose = ReachParams(access_m=200.0)
    assert judge(CALLAO_GRAPH, FORTRESS, fix(FORT_NORTH, 0), fix(FORT_SOUTH, 120), loose).crossed


@pytest.mark.parametrize(("gap_s", "crossed"), [(60, True), (120, False), (300, False)])
def test_santos_dsp07_at_60_s_2_min_and_5_min(gap_s: float, crossed: bool) -> None:
    v = judge(SANTOS_GRAPH, DSP07, fix(DSP_SOUTH, 0), fix(DSP_NORTH, gap_s), None, PLACES["santos"])
    assert v.crossed is crossed, v
    assert v.straight_m == pytest.approx(1091, abs=5)
    if crossed:  # 60 s at 20 m/s (+30 m) is 1,230 m: not enough for the 1,329 m round it
        assert v.reason == "every_path_enters" and v.budget_m < 1329 and v.avoiding_m is None
    else:  # two minutes and more are enough to drive round it
        assert v.reason == "corridor_path_avoids"
        assert v.avoiding_m == pytest.approx(1329, rel=0.02)


def test_santos_a_road_round_the_fence_that_fits_60_s_raises_nothing() -> None:
    v = judge(SANTOS_GRAPH, DSP07, fix(DSP_A, 0), fix(DSP_B, 60), None, PLACES["santos"])
    assert not v.crossed and v.reason == "corridor_path_avoids"
    assert v.avoiding_m is not None and v.avoiding_m <= v.budget_m


def test_fixes_too_far_apart_for_the_gap_claim_no_crossing() -> None:
    far = (-77.1467192 + 0.05, -12.0624943)  # 5.4 km east in 60 s: a teleport, the integrity check's business
    v = judge(CALLAO_GRAPH, FORTRESS, fix(far, 0), fix(GAMARRA_SW, 60))
    assert not v.crossed and v.reason == "implausible"


def test_a_straight_line_clear_of_the_fence_and_a_port_without_roads_prove_nothing() -> None:
    north = (-77.1490, -12.0590)
    v = judge(CALLAO_GRAPH, FORTRESS, fix(FORT_NORTH, 0), fix(north, 120))
    assert not v.crossed and v.reason == "straight_line_avoids"
    v = judge(None, FORTRESS, fix(GAMARRA_SW, 0), fix(GAMARRA_NE, 120))
    assert not v.crossed and v.reason == "no_corridors"


def test_gaps_outside_the_judged_range_are_left_to_the_chord_rule() -> None:
    assert judge(SANTOS_GRAPH, DSP07, fix(DSP_SOUTH, 0), fix(DSP_NORTH, 20)).reason == "gap_out_of_range"
    assert judge(SANTOS_GRAPH, DSP07, fix(DSP_SOUTH, 0), fix(DSP_NORTH, 3600)).reason == "gap_out_of_range"


# the benchmark's false crossings (500 trucks x 24 h, seed 1): a device parked in the inspection area beside DSP
# 47, one multipath fix 150 m off in the yard behind it (terminal 40, which no mapped road reaches but across the
# fence), then back
PARKED = (-46.362785, -23.9239638)
JUMPED = (-46.3642319, -23.9242914)
BACK = (-46.3629024, -23.9240219)


def test_a_fix_whose_every_road_lies_across_the_fence_claims_nothing() -> None:
    v = judge(SANTOS_GRAPH, DSP47, fix(JUMPED, 0), fix(BACK, 60.3), None, PLACES["santos"])
    assert not v.crossed and v.reason == "cut_off" and (v.through_m or 0) > 0
    # it is the roads on the fix's side that are missing: joined from anywhere, the prism would call it crossed
    no_places = judge(SANTOS_GRAPH, DSP47, fix(JUMPED, 0), fix(BACK, 60.3), ReachParams(access_m=200.0))
    assert no_places.reason == "cut_off"


def test_a_60_s_trackers_gap_a_little_under_a_minute_is_judged_too() -> None:
    v = judge(SANTOS_GRAPH, DSP07, fix(DSP_SOUTH, 0), fix(DSP_NORTH, 59.3), None, PLACES["santos"])
    assert v.crossed and v.reason == "every_path_enters"


def _steps(index: FenceIndex, *fixes: tuple[tuple[float, float], float]) -> list[Alert]:
    """Run fixes ((lon, lat), seconds) through the geofence step as the pipeline does (pending carried over)."""
    params = geofence.GeofenceParams()
    members: frozenset[str] = frozenset()
    pending: geofence.Pending = frozenset()
    last: Fix | None = None
    out: list[Alert] = []
    for (lon, lat), seconds in fixes:
        ping = Ping(device_id="BOX-1", ts=T0 + timedelta(seconds=seconds), lon=lon, lat=lat)
        members, alerts, pending = geofence.step(index, members, last, ping, params, pending)
        out += [a for a in alerts if a.kind == "geofence_cross" and a.fence_id in (FORTRESS.id, DSP07.id, DSP47.id)]
        last = Fix.of(ping)
    return out


def test_the_geofence_step_raises_a_proven_crossing_at_the_entry_severity_once_the_next_fix_confirms_it() -> None:
    index = FenceIndex(SANTOS.fences, entry_margin_m=Settings().entry_margin_m)
    held = _steps(index, (DSP_SOUTH, 0), (DSP_NORTH, 60))
    assert [a.severity for a in held] == [Severity.LOW]  # the chord crossing (60 s <= 90 s); the proof is held
    alerts = _steps(index, (DSP_SOUTH, 0), (DSP_NORTH, 60), (DSP_NORTH, 120))
    (alert,) = [a for a in alerts if a.severity is Severity.HIGH]
    assert alert.ts == T0 + timedelta(seconds=60) and alert.id != held[0].id
    ev = alert.evidence["reachability"]
    assert ev["reason"] == "every_path_enters" and ev["gap_s"] == 60.0 and ev["avoiding_path_m"] is None
    assert alert.evidence["previous_fix"]["lon"] == DSP_SOUTH[0]
    # before this rule a gap over 90 s raised nothing at all
    off = geofence.GeofenceParams(reach=None)
    last = Fix(ts=T0, lon=DSP_SOUTH[0], lat=DSP_SOUTH[1])
    ping = Ping(device_id="BOX-1", ts=T0 + timedelta(seconds=95), lon=DSP_NORTH[0], lat=DSP_NORTH[1])
    assert [a for a in geofence.step(index, frozenset(), last, ping, off)[1] if a.kind == "geofence_cross"] == []


def test_a_far_side_fix_the_next_fix_contradicts_is_an_outlier_not_two_crossings() -> None:
    index = FenceIndex(SANTOS.fences, entry_margin_m=Settings().entry_margin_m)
    alerts = _steps(index, (DSP_SOUTH, 0), (DSP_NORTH, 60), (DSP_SOUTH, 120), (DSP_SOUTH, 180))
    assert [a for a in alerts if a.severity is not Severity.LOW] == []


def test_the_geofence_step_is_quiet_when_the_roads_round_the_fence_fit_the_gap() -> None:
    index = FenceIndex(SANTOS.fences, entry_margin_m=Settings().entry_margin_m)
    assert _steps(index, (DSP_SOUTH, 0), (DSP_NORTH, 120), (DSP_NORTH, 240)) == []
    index = FenceIndex(CALLAO.fences, entry_margin_m=Settings().entry_margin_m)
    assert _steps(index, (GAMARRA_SW, 0), (GAMARRA_NE, 120), (GAMARRA_NE, 240)) == []


def test_a_fix_before_the_gap_that_jumped_across_the_fence_is_the_odd_one_out() -> None:
    """Both chords of a jump go through the fence; the one into it was too short a gap for the prism (a 30 s
    truck), the one out of it is proven: the mark the first chord left cancels the proof, whatever the gaps."""
    index = FenceIndex(SANTOS.fences, entry_margin_m=Settings().entry_margin_m)
    jump = _steps(index, (DSP_SOUTH, 0), (DSP_NORTH, 30), (DSP_SOUTH, 90), (DSP_SOUTH, 150), (DSP_SOUTH, 210))
    assert [a for a in jump if a.severity is not Severity.LOW] == []
    # the same proof without the jump before it is raised
    real = _steps(index, (DSP_NORTH, 0), (DSP_NORTH, 30), (DSP_SOUTH, 90), (DSP_SOUTH, 150))
    assert [a.ts for a in real if a.severity is Severity.HIGH] == [T0 + timedelta(seconds=90)]


def test_the_benchmarks_parked_device_with_one_jumped_fix_raises_no_high_crossing() -> None:
    index = FenceIndex(SANTOS.fences, entry_margin_m=Settings().entry_margin_m)
    alerts = _steps(index, (PARKED, 0), (PARKED, 60.6), (JUMPED, 119.9), (BACK, 180.2), (BACK, 240.8))
    assert [a for a in alerts if a.severity is not Severity.LOW] == []


def test_a_held_crossing_survives_the_store_in_the_typed_and_the_old_string_form() -> None:
    index = FenceIndex(SANTOS.fences, entry_margin_m=Settings().entry_margin_m)
    params = geofence.GeofenceParams()
    first = Ping(device_id="BOX-1", ts=T0, lon=DSP_SOUTH[0], lat=DSP_SOUTH[1])
    far = Ping(device_id="BOX-1", ts=T0 + timedelta(seconds=60), lon=DSP_NORTH[0], lat=DSP_NORTH[1])
    after = Ping(device_id="BOX-1", ts=T0 + timedelta(seconds=120), lon=DSP_NORTH[0], lat=DSP_NORTH[1])
    members, _, _ = geofence.step(index, frozenset(), None, first, params)
    members, _, pending = geofence.step(index, members, Fix.of(first), far, params)
    assert isinstance(pending, geofence.GeofencePending)
    (mark,) = pending.marks
    assert mark == geofence.PrismMark(DSP07.id, Fix.of(first), proven=True)
    state = DeviceState("BOX-1", last=Fix.of(far), fences=members, geofence_pending=pending)
    assert codec.decode(codec.encode(state)) == state
    # a state stored before the marks were typed: the pending set held the mark as a string
    legacy = frozenset({f"prism:{DSP07.id}|{first.ts.isoformat()}|{first.lon}|{first.lat}"})
    old = msgspec.msgpack.encode([["BOX-1", "truck", None, sorted(members), None, None, sorted(legacy)]])
    restored = codec.decode(old)
    assert restored.geofence_pending == legacy
    for kept in (pending, restored.geofence_pending):
        _, alerts, left = geofence.step(index, members, Fix.of(far), after, params, kept)
        assert [a.severity for a in alerts if a.kind == "geofence_cross"] == [Severity.HIGH] and left == frozenset()


def _with_dsp07_windows(windows: tuple[TimeWindow, ...]) -> FenceIndex:
    fences = [replace(f, windows=windows) if f.id == DSP07.id else f for f in SANTOS.fences]
    return FenceIndex(fences, entry_margin_m=Settings().entry_margin_m)


@pytest.mark.parametrize("windows", [(), (TimeWindow(time(2, 0), time(3, 1, 30)),)], ids=["always", "closes"])
def test_a_jump_back_across_a_fence_is_no_crossing_even_when_its_window_closes(
    windows: tuple[TimeWindow, ...],
) -> None:
    """A multipath jump to the far side of DSP 07-09 and straight back: the proven chord into the jump is held,
    and the chord back out cancels it. With the fence enforced until 03:01:30 (fixes from 03:00), the jump
    falls inside the window and the way back after it: the way back must still cancel the held crossing, or a
    window boundary turns one bad fix into a high-severity crossing."""
    alerts = _steps(_with_dsp07_windows(windows), (DSP_SOUTH, 0), (DSP_NORTH, 60), (DSP_SOUTH, 120), (DSP_SOUTH, 180))
    assert [a for a in alerts if a.severity is not Severity.LOW] == []


def _city_every_pair(
    pa: tuple[np.ndarray, list[float]], pb: tuple[np.ndarray, list[float]], core: BaseGeometry, budget: float
) -> float | None:
    """The least cost of a clear drive between two exits, every pair looked at (what ``_city`` must equal)."""
    best = None
    for xa, da in zip(pa[0], pa[1], strict=True):
        for xb, db in zip(pb[0], pb[1], strict=True):
            cost = float(np.float64(da) + np.hypot(xa[0] - xb[0], xa[1] - xb[1]) + np.float64(db))
            if cost > budget or (best is not None and cost >= best):
                continue
            if not shapely.intersects(shapely.linestrings([xa, xb]), core):
                best = cost
    return best


@pytest.mark.parametrize("seed", range(12))
def test_the_city_drive_leaves_out_only_exits_no_pair_within_budget_can_use(seed: int) -> None:
    """``_city`` skips exits whose distance plus the straight line to the other fix is over budget: the answer is
    still the least-cost clear pair of all, to the float (distances driven are never shorter than the straight
    line from their fix, as on the graph)."""
    rng = np.random.default_rng(seed)
    a, b = np.array([0.0, 0.0]), np.array([rng.uniform(500, 2000), rng.uniform(-300, 300)])
    core = shapely.buffer(shapely.points((a + b) / 2), rng.uniform(50, 200))
    shapely.prepare(core)

    def side(fix: np.ndarray) -> tuple[np.ndarray, list[float]]:
        pts = np.vstack([rng.uniform(-800, 2800, size=(40, 2)), fix])
        driven = [float(np.hypot(*(p - fix)) * rng.uniform(1.0, 1.6)) for p in pts[:-1]]
        return pts, [*driven, 0.0]

    pa, pb = side(a), side(b)
    straight = float(np.hypot(*(b - a)))
    for budget in (straight * 1.01, straight * 1.2, straight * 2.0, straight * 0.5):
        assert CorridorGraph._city(pa, pb, core, budget) == _city_every_pair(pa, pb, core, budget)


@pytest.mark.parametrize("seed", range(4))
def test_a_chord_ruled_out_beside_a_box_never_touches_it(seed: int) -> None:
    """``_misses_box`` (which spares the geometry for chords passing a fence's core beside it) only ever rules out a
    segment that does not touch the box, not even at a corner; chords grazing a corner or an edge within the
    rounding are left to the geometry."""
    rng = np.random.default_rng(seed)
    box = (1000.0, -400.0, 1800.0, 300.0)
    poly = shapely.box(*box)
    corners = [(box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])]
    ruled_out = 0
    for _ in range(4000):
        ax, ay = rng.uniform(-500, 3500), rng.uniform(-2000, 2000)
        if rng.random() < 0.3:  # aimed at a corner, to within a few rounding steps either side
            cx, cy = corners[int(rng.integers(4))]
            t = rng.uniform(1.5, 3.0)
            bx, by = ax + t * (cx - ax), ay + t * (cy - ay)
            bx += float(rng.choice([-1, 0, 1])) * 1e-9
        else:
            bx, by = rng.uniform(-500, 3500), rng.uniform(-2000, 2000)
        if not (min(ax, bx) <= box[2] and max(ax, bx) >= box[0] and min(ay, by) <= box[3] and max(ay, by) >= box[1]):
            continue
        if _misses_box(ax, ay, bx, by, *box):
            ruled_out += 1
            assert not shapely.intersects(shapely.linestrings([[ax, ay], [bx, by]]), poly)
    assert ruled_out > 100  # the test looks at segments the rule does rule out
