"""Loader validation: each bad drawing must be rejected with the feature named."""

from __future__ import annotations

import copy
import json
from datetime import datetime, time
from pathlib import Path
from typing import Any

import pytest
import shapely

from geofences import (
    FenceError,
    FenceKind,
    TimeWindow,
    haversine_m,
    load_fence_set,
)

FIXTURES = Path(__file__).resolve().parent.parent / "payloads" / "fences"


def _doc(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def test_valid_set_loads_with_all_members() -> None:
    fs = load_fence_set(FIXTURES / "valid_small.geojson")
    assert fs.port == "testport"
    assert fs.source == "hand-drawn test fixture"
    assert fs.licence == "CC0-1.0"
    assert [f.id for f in fs.fences] == ["yard", "gate-a", "road", "no-go"]
    assert fs.kinds() == {FenceKind.CUSTOMS_YARD, FenceKind.GATE, FenceKind.CORRIDOR, FenceKind.RESTRICTED}
    gate = fs.by_id("gate-a")
    assert gate.severity == "high"
    assert gate.windows == (TimeWindow(time(6), time(22), frozenset({0, 1, 2, 3, 4})),)
    assert gate.port == "testport"
    with pytest.raises(KeyError):
        fs.by_id("nope")


def test_corridor_line_is_buffered_to_its_width_and_keeps_centerline() -> None:
    road = load_fence_set(str(FIXTURES / "valid_small.geojson")).by_id("road")
    assert road.geometry.geom_type == "Polygon"
    assert road.centerline is not None
    assert road.centerline.geom_type == "LineString"
    assert road.width_m == 20.0
    minx, miny, maxx, maxy = road.geometry.bounds
    mid = (minx + maxx) / 2
    assert haversine_m(mid, miny, mid, maxy) == pytest.approx(20.0, rel=0.01)


def test_default_corridor_width_is_30m() -> None:
    doc = _doc("valid_small.geojson")
    del doc["features"][2]["properties"]["width_m"]
    road = load_fence_set(doc).by_id("road")
    minx, miny, _, maxy = road.geometry.bounds
    assert haversine_m(minx, miny, minx, maxy) == pytest.approx(30.0, rel=0.01)


def test_round_trip_through_to_geojson() -> None:
    fs = load_fence_set(FIXTURES / "valid_small.geojson")
    again = load_fence_set(fs.to_geojson())
    assert again == fs
    assert again.by_id("road").centerline is not None
    json.dumps(fs.to_geojson())


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("bowtie.geojson", r"feature #1 id='bow-tie'.*invalid polygon: Self-intersection"),
        ("swapped.geojson", r"feature #0 id='swapped-yard'.*look swapped"),
        ("bbox_swapped.geojson", r"feature #0 id='callao-swapped'.*look swapped"),
        ("out_of_range.geojson", r"feature #0 id='utm-yard'.*out of range"),
        ("bad_crs.geojson", r"fixture'.*crs 'urn:ogc:def:crs:EPSG::31983' is not WGS84"),
        ("duplicate_id.geojson", r"feature #1 id='yard'.*duplicate id 'yard' \(first used by feature #0\)"),
        ("unknown_kind.geojson", r"feature #0 id='lounge'.*unknown kind 'vip_lounge'"),
        ("missing_kind.geojson", r"feature #0 id='kindless' name='No kind'.*missing 'kind'"),
        ("point_fence.geojson", r"feature #0 id='pole'.*Point cannot be a fence"),
        ("line_not_corridor.geojson", r"feature #0 id='fence-line'.*only allowed for kind 'corridor'"),
        ("empty_geometry.geojson", r"feature #0 id='nothing'.*empty geometry"),
    ],
)
def test_rejections_name_the_feature_and_problem(fixture: str, expected: str) -> None:
    with pytest.raises(FenceError, match=expected):
        load_fence_set(FIXTURES / fixture)


def test_fence_error_is_a_value_error() -> None:
    assert issubclass(FenceError, ValueError)


def test_not_a_feature_collection_and_missing_port() -> None:
    with pytest.raises(FenceError, match="not a GeoJSON FeatureCollection"):
        load_fence_set({"type": "Feature", "properties": {}, "geometry": None})
    doc = _doc("valid_small.geojson")
    del doc["port"]
    with pytest.raises(FenceError, match="missing top-level 'port'"):
        load_fence_set(doc)


@pytest.mark.parametrize("crs", [None, "urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:4326", "urn:ogc:def:crs:EPSG::4326"])
def test_accepted_crs_names(crs: str | None) -> None:
    doc = _doc("valid_small.geojson")
    if crs is None:
        del doc["crs"]
    else:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    assert len(load_fence_set(doc).fences) == 4


def test_missing_id_and_bad_windows_are_named() -> None:
    doc = _doc("valid_small.geojson")
    no_id = copy.deepcopy(doc)
    del no_id["features"][0]["properties"]["id"]
    with pytest.raises(FenceError, match=r"feature #0 name='Yard'.*missing 'id'"):
        load_fence_set(no_id)
    bad_window = copy.deepcopy(doc)
    bad_window["features"][1]["properties"]["windows"] = [{"start": "25:00", "end": "06:00"}]
    with pytest.raises(FenceError, match=r"feature #1 id='gate-a'.*window #0"):
        load_fence_set(bad_window)


def test_feature_level_id_is_used_when_properties_have_none() -> None:
    doc = _doc("valid_small.geojson")
    del doc["features"][0]["properties"]["id"]
    doc["features"][0]["id"] = 7
    assert load_fence_set(doc).fences[0].id == "7"


def test_time_window_plain_and_across_midnight() -> None:
    day = TimeWindow(time(6), time(22), frozenset({0, 1, 2, 3, 4}))
    monday = datetime(2024, 1, 1)  # a Monday
    assert day.active(monday.replace(hour=6))
    assert not day.active(monday.replace(hour=22))
    assert not day.active(monday.replace(hour=5, minute=59))
    assert not day.active(datetime(2024, 1, 6, 12))  # Saturday

    night = TimeWindow(time(22), time(6), frozenset({4}))  # Friday night shift
    friday = datetime(2024, 1, 5)
    assert night.active(friday.replace(hour=23))
    assert night.active(datetime(2024, 1, 6, 3))  # Saturday 03:00 belongs to Friday's window
    assert not night.active(friday.replace(hour=3))  # Friday 03:00 belongs to Thursday's
    assert not night.active(friday.replace(hour=12))

    all_day = TimeWindow(time(0), time(0), frozenset({6}))
    assert all_day.active(datetime(2024, 1, 7, 13))
    with pytest.raises(ValueError, match=r"0\.\.6"):
        TimeWindow(time(0), time(1), frozenset({7}))


def test_fence_without_windows_is_always_active() -> None:
    fs = load_fence_set(FIXTURES / "valid_small.geojson")
    assert fs.by_id("yard").active(datetime(2024, 1, 6, 3))
    gate = fs.by_id("gate-a")
    assert gate.active(datetime(2024, 1, 1, 12))
    assert not gate.active(datetime(2024, 1, 6, 12))


def test_z_coordinates_are_dropped() -> None:
    doc = _doc("valid_small.geojson")
    ring = doc["features"][0]["geometry"]["coordinates"][0]
    doc["features"][0]["geometry"]["coordinates"][0] = [[*c, 5.0] for c in ring]
    assert not shapely.has_z(load_fence_set(doc).fences[0].geometry)
