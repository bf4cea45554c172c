"""Circle fences (centre + radius) and the loader's totality on whatever JSON it is handed."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Geod

from geofences import (
    MAX_RADIUS_M,
    Circle,
    CircleError,
    FenceError,
    FenceIndex,
    FenceKind,
    circle_polygon,
    load_fence_set,
)
from geofences.circle import MAX_EDGE_ERROR_M

GEOD = Geod(ellps="WGS84")


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "port": "testport", "features": list(features)}


def point_circle(lon: float, lat: float, radius: object, **props: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"id": "c1", "kind": "restricted", "radius_m": radius, **props},
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


@pytest.mark.parametrize(("lat", "radius"), [(0.0, 50.0), (-23.98, 200.0), (51.9, 1500.0), (70.0, 50_000.0)])
def test_every_vertex_is_the_radius_from_the_centre_on_the_ellipsoid(lat: float, radius: float) -> None:
    poly = circle_polygon(4.0, lat, radius)
    coords = shapely.get_coordinates(poly)
    n = len(coords)
    _, _, dist = GEOD.inv([4.0] * n, [lat] * n, coords[:, 0], coords[:, 1])
    assert max(abs(d - radius) for d in dist) < 1e-3
    assert poly.is_valid and poly.exterior.is_ccw
    # inscribed: each edge's midpoint lies inside the circle by at most the allowed sagitta
    mids = (coords[:-1] + coords[1:]) / 2.0
    _, _, mid_dist = GEOD.inv([4.0] * len(mids), [lat] * len(mids), mids[:, 0], mids[:, 1])
    assert max(radius - d for d in mid_dist) <= MAX_EDGE_ERROR_M * 1.05
    # an ellipse (buffered in degrees) at 70 degrees north would be 3x too wide east-west: this is round
    area, _ = GEOD.geometry_area_perimeter(poly)
    assert abs(area) == pytest.approx(math.pi * radius**2, rel=2 * MAX_EDGE_ERROR_M / radius + 1e-3)


def test_a_point_with_radius_loads_as_a_circle_and_round_trips_through_geojson() -> None:
    fs = load_fence_set(collection(point_circle(-46.3, -23.98, 200, name="scanner", operator="x")))
    fence = fs.fences[0]
    assert fence.circle == Circle(-46.3, -23.98, 200.0)
    assert fence.kind is FenceKind.RESTRICTED
    assert dict(fence.properties) == {"operator": "x"}  # radius_m is the circle's, not an extra
    feature = fence.to_feature()
    assert feature["geometry"]["type"] == "Polygon"
    assert feature["properties"]["circle"] == {"center": [-46.3, -23.98], "radius_m": 200.0}
    again = load_fence_set(json.loads(json.dumps(fs.to_geojson())))
    assert again.fences == fs.fences
    assert again.fences[0].circle == fence.circle


def test_circle_properties_without_geometry_build_the_polygon() -> None:
    feature = {
        "type": "Feature",
        "properties": {"id": "c2", "kind": "restricted", "circle": {"center": [-46.3, -23.98], "radius_m": 100}},
        "geometry": None,
    }
    fence = load_fence_set(collection(feature)).fences[0]
    assert fence.geometry == circle_polygon(-46.3, -23.98, 100.0)


def test_a_polygon_edited_after_export_is_not_silently_replaced_by_its_circle() -> None:
    fs = load_fence_set(collection(point_circle(-46.3, -23.98, 200)))
    doc = fs.to_geojson()
    ring = doc["features"][0]["geometry"]["coordinates"][0]
    ring[3] = [ring[3][0] + 0.01, ring[3][1]]  # a vertex dragged about 1 km out
    with pytest.raises(FenceError, match="does not match its 'circle'"):
        load_fence_set(doc)


def test_a_circle_index_sees_inside_and_outside_at_the_radius() -> None:
    fence = load_fence_set(collection(point_circle(-46.3, -23.98, 200))).fences[0]
    index = FenceIndex([fence], hysteresis_m=0.0)
    # due north of the centre: 190 m is in, 210 m is out
    for dist, inside in ((190.0, True), (210.0, False)):
        lon, lat, _ = GEOD.fwd(-46.3, -23.98, 0.0, dist)
        assert (fence.id in index.fences_at([lon], [lat])[0]) is inside


@pytest.mark.parametrize(
    ("lon", "lat", "radius", "message"),
    [
        (-46.3, -23.98, 0, "radius_m must be between"),
        (-46.3, -23.98, -5, "radius_m must be between"),
        (-46.3, -23.98, MAX_RADIUS_M + 1, "radius_m must be between"),
        (-46.3, -23.98, "200", "radius_m must be a number"),
        (-46.3, -23.98, True, "radius_m must be a number"),
        (-46.3, -23.98, float("nan"), "finite"),
        (-46.3, -23.98, 10**400, "out of range"),
        (190.0, -23.98, 100, "longitude"),
        (-46.3, 95.0, 100, "latitude"),
        (-46.3, 89.5, 100, "latitude"),
        (179.9999, 0.0, 1000, "antimeridian"),
    ],
)
def test_bad_circles_are_refused_with_the_reason(lon: float, lat: float, radius: object, message: str) -> None:
    with pytest.raises(FenceError, match=message):
        load_fence_set(collection(point_circle(lon, lat, radius)))


def test_circle_constructor_validates() -> None:
    with pytest.raises(CircleError):
        Circle(0.0, 0.0, 0.0)
    with pytest.raises(CircleError):
        Circle.from_json({"center": [1.0], "radius_m": 5})


def test_a_severity_the_core_does_not_know_is_refused_at_load() -> None:
    with pytest.raises(FenceError, match="severity must be one of"):
        load_fence_set(collection(point_circle(-46.3, -23.98, 100, severity="urgent")))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
GEOMETRY = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["Point", "Polygon", "MultiPolygon", "LineString", "GeometryCollection"]),
            "coordinates": JSON,
        }
    ),
)
PROPS = st.fixed_dictionaries(
    {"id": JSON, "kind": st.sampled_from([*(k.value for k in FenceKind), "bogus"])},
    optional={
        "radius_m": JSON,
        "circle": JSON | st.fixed_dictionaries({"center": JSON, "radius_m": JSON}),
        "windows": JSON,
        "severity": JSON,
        "width_m": JSON,
    },
)
FEATURE = st.one_of(
    JSON, st.fixed_dictionaries({"type": st.just("Feature"), "properties": PROPS, "geometry": GEOMETRY})
)
DOC = st.fixed_dictionaries(
    {"type": st.just("FeatureCollection"), "port": st.just("p"), "features": st.lists(FEATURE, max_size=3)},
    optional={"crs": JSON, "bbox": JSON, "name": JSON},
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOC)
def test_the_loader_is_total_a_fence_set_or_a_fence_error(doc: dict[str, Any]) -> None:
    """Uploads reach the loader through the API: anything but FenceError would be a 500."""
    try:
        fs = load_fence_set(doc)
    except FenceError:
        return
    FenceIndex(fs.fences)  # what loaded must also index
