"""Sparse fixes either side of a restricted fence: raised only when no road around it fits the time.

The cases sit on the shipped fence sets, so they exercise the real corridor graphs: Callao's Fortaleza Real
Felipe (military land; no mapped corridor goes round it from its north side to its south side) and Santos'
unleased area DSP 07-09, which the port roads skirt at a distance: 3.6 km round for two fixes 940 m apart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from geofences import FenceIndex, load_port
from tracker.config import Settings
from tracker.core import geofence
from tracker.core.model import Alert, Ping, Severity
from tracker.core.reachability import CorridorGraph, ReachParams, judge
from tracker.core.state import Fix

T0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
CALLAO = load_port("callao")
SANTOS = load_port("santos")
FORTRESS = CALLAO.by_id("callao-restricted-fortaleza-real-felipe")
DSP07 = SANTOS.by_id("santos-restricted-07")
CALLAO_GRAPH = CorridorGraph.build(CALLAO.fences)
SANTOS_GRAPH = CorridorGraph.build(SANTOS.fences)

FORT_NORTH = (-77.1501921, -12.0619247)
FORT_SOUTH = (-77.1496857, -12.0645254)  # 294 m apart, the straight line through the fortress; both near a corridor
FORT_EAST = (-77.1467192, -12.0624943)  # 360 m from any corridor Callao's fence set maps
FORT_WEST = (-77.1510485, -12.0631402)
DSP_NORTH = (-46.298826, -23.9672159)
DSP_SOUTH = (-46.2945262, -23.9747053)  # 940 m through DSP 07-09; the roads round it: 3,562 m
DSP_NW = (-46.2997388, -23.9669531)
DSP_SE = (-46.2935991, -23.9748908)  # 1,081 m through it; a road round it of 1,161 m


def fix(lonlat: tuple[float, float], seconds: float) -> tuple[float, float, float]:
    return lonlat[0], lonlat[1], (T0 + timedelta(seconds=seconds)).timestamp()


def test_callao_fortress_two_fixes_120_s_apart_must_have_crossed_it() -> None:
    v = judge(CALLAO_GRAPH, FORTRESS, fix(FORT_NORTH, 0), fix(FORT_SOUTH, 120))
    assert v.crossed and v.reason == "every_path_enters"
    assert v.straight_m == pytest.approx(294, abs=5)
    assert v.budget_m == pytest.approx(120 * ReachParams().max_speed_ms + ReachParams().gps_slack_m)
    assert v.avoiding_m is None and (v.through_m or 0) > 150  # the fortress' core, 10 m inside its walls


def test_a_fix_off_every_mapped_road_claims_nothing() -> None:
    # east of the fortress the fence set maps no road: the device came by some street the corridors do not know
    # (outside the port, or a multipath fix thrown off the roads), so the corridors cannot say where it drove
    v = judge(CALLAO_GRAPH, FORTRESS, fix(FORT_EAST, 0), fix(FORT_WEST, 120))
    assert not v.crossed and v.reason == "off_network"


@pytest.mark.parametrize(("gap_s", "crossed"), [(60, True), (120, True), (300, False)])
def test_santos_dsp07_at_60_s_2_min_and_5_min(gap_s: float, crossed: bool) -> None:
    v = judge(SANTOS_GRAPH, DSP07, fix(DSP_NORTH, 0), fix(DSP_SOUTH, gap_s))
    assert v.crossed is crossed, v
    if crossed:
        assert v.reason == "every_path_enters" and v.budget_m < 3562
    else:  # five minutes are enough to drive the 3.6 km of roads round it
        assert v.reason == "corridor_path_avoids"
        assert v.avoiding_m == pytest.approx(3562, rel=0.02)


def test_santos_a_road_round_the_fence_that_fits_60_s_raises_nothing() -> None:
    v = judge(SANTOS_GRAPH, DSP07, fix(DSP_NW, 0), fix(DSP_SE, 60))
    assert not v.crossed and v.reason == "corridor_path_avoids"
    assert v.avoiding_m is not None and v.avoiding_m <= v.budget_m


def test_fixes_too_far_apart_for_the_gap_claim_no_crossing() -> None:
    far = (-77.1467192 + 0.05, -12.0624943)  # 5.4 km east in 60 s: a teleport, the integrity check's business
    v = judge(CALLAO_GRAPH, FORTRESS, fix(far, 0), fix(FORT_WEST, 60))
    assert not v.crossed and v.reason == "implausible"


def test_a_straight_line_clear_of_the_fence_and_a_port_without_roads_prove_nothing() -> None:
    north = (-77.1490, -12.0590)
    v = judge(CALLAO_GRAPH, FORTRESS, fix(FORT_NORTH, 0), fix(north, 120))
    assert not v.crossed and v.reason == "straight_line_avoids"
    v = judge(None, FORTRESS, fix(FORT_NORTH, 0), fix(FORT_SOUTH, 120))
    assert not v.crossed and v.reason == "no_corridors"


def test_gaps_outside_the_judged_range_are_left_to_the_chord_rule() -> None:
    assert judge(CALLAO_GRAPH, FORTRESS, fix(FORT_NORTH, 0), fix(FORT_SOUTH, 20)).reason == "gap_out_of_range"
    assert judge(CALLAO_GRAPH, FORTRESS, fix(FORT_NORTH, 0), fix(FORT_SOUTH, 3600)).reason == "gap_out_of_range"


def _step(index: FenceIndex, a: tuple[float, float], b: tuple[float, float], gap_s: float) -> list[Alert]:
    last = Fix(ts=T0, lon=a[0], lat=a[1])
    ping = Ping(device_id="BOX-1", ts=T0 + timedelta(seconds=gap_s), lon=b[0], lat=b[1])
    previous = index.membership(a[0], a[1], frozenset())
    _, alerts, _ = geofence.step(index, previous, last, ping, geofence.GeofenceParams())
    return [x for x in alerts if x.kind == "geofence_cross" and x.fence_id in (FORTRESS.id, DSP07.id)]


def test_the_geofence_step_raises_a_proven_crossing_at_the_entry_severity_with_its_evidence() -> None:
    index = FenceIndex(CALLAO.fences, entry_margin_m=Settings().entry_margin_m)
    (alert,) = _step(index, FORT_NORTH, FORT_SOUTH, 120)
    assert alert.severity is Severity.HIGH
    ev = alert.evidence["reachability"]
    assert ev["reason"] == "every_path_enters" and ev["gap_s"] == 120.0 and ev["avoiding_path_m"] is None
    # before this rule a gap over 90 s raised nothing at all; a chord crossing within 90 s stays low
    off = geofence.GeofenceParams(reach=None)
    last = Fix(ts=T0, lon=FORT_NORTH[0], lat=FORT_NORTH[1])
    ping = Ping(device_id="BOX-1", ts=T0 + timedelta(seconds=120), lon=FORT_SOUTH[0], lat=FORT_SOUTH[1])
    assert [a for a in geofence.step(index, frozenset(), last, ping, off)[1] if a.kind == "geofence_cross"] == []


def test_the_geofence_step_is_quiet_when_the_roads_round_the_fence_fit_the_gap() -> None:
    index = FenceIndex(SANTOS.fences, entry_margin_m=Settings().entry_margin_m)
    assert _step(index, DSP_NORTH, DSP_SOUTH, 300) == []
    (alert,) = _step(index, DSP_NORTH, DSP_SOUTH, 120)
    assert alert.severity is Severity.HIGH
