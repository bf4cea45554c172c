"""Metric helpers: the margins the product promises (hysteresis, corridor width) are only as good as these."""

from __future__ import annotations

import math

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences import EARTH_RADIUS_M, LocalProjection, buffer_m, distance_m, haversine_m, within_m

SANTOS = (-46.30, -23.95)


def test_haversine_one_degree_of_latitude() -> None:
    assert haversine_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(111_195.08, abs=0.5)


def test_haversine_shrinks_with_latitude_for_longitude() -> None:
    d = haversine_m(-46.30, -23.95, -46.29, -23.95)
    assert d == pytest.approx(111_195.08 * 0.01 * math.cos(math.radians(23.95)), rel=1e-4)
    assert haversine_m(*SANTOS, *SANTOS) == 0.0


def test_local_projection_round_trip_and_agrees_with_haversine() -> None:
    proj = LocalProjection(*SANTOS)
    lon, lat = -46.31, -23.96
    x, y = proj.to_xy(lon, lat)
    back_lon, back_lat = proj.to_lonlat(x, y)
    assert float(back_lon) == pytest.approx(lon, abs=1e-12)
    assert float(back_lat) == pytest.approx(lat, abs=1e-12)
    planar = math.hypot(float(x), float(y))
    # documented bound: well under 0.1 % at ~1.5 km from the reference point
    assert planar == pytest.approx(haversine_m(*SANTOS, lon, lat), rel=1e-3)


def test_buffer_m_is_round_in_metres_not_in_degrees() -> None:
    circle = buffer_m(shapely.Point(*SANTOS), 100.0, quad_segs=32)
    proj = LocalProjection(*SANTOS)
    area = proj.project(circle).area
    assert area == pytest.approx(math.pi * 100.0**2, rel=0.01)
    minx, miny, maxx, maxy = circle.bounds
    ew = haversine_m(minx, SANTOS[1], maxx, SANTOS[1])
    ns = haversine_m(SANTOS[0], miny, SANTOS[0], maxy)
    assert ew == pytest.approx(200.0, rel=1e-3)
    assert ns == pytest.approx(200.0, rel=1e-3)


def test_negative_buffer_shrinks_and_empty_passes_through() -> None:
    square = buffer_m(shapely.Point(*SANTOS), 50.0, quad_segs=1)  # a 100 m diamond
    assert buffer_m(square, -10.0).area < square.area
    assert buffer_m(shapely.Polygon(), 10.0).is_empty


def test_distance_m() -> None:
    square = shapely.box(-46.301, -23.951, -46.299, -23.949)
    assert distance_m(square, *SANTOS) == 0.0
    lat_edge = -23.949
    north = lat_edge + 100.0 / 111_195.08
    assert distance_m(square, -46.300, north) == pytest.approx(100.0, rel=1e-3)


def _textbook_haversine(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """The formula as first written, with math.radians and min: the fast one must match it bit for bit."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


coord = st.tuples(st.floats(-180, 180), st.floats(-90, 90))
near_santos = st.tuples(st.floats(-46.4, -46.2), st.floats(-24.0, -23.8))


@settings(max_examples=2000, deadline=None)
@given(st.one_of(coord, near_santos), st.one_of(coord, near_santos), st.floats(0.0, 50_000.0))
def test_haversine_and_within_are_the_textbook_formula(
    a: tuple[float, float], b: tuple[float, float], r: float
) -> None:
    want = _textbook_haversine(*a, *b)
    assert haversine_m(*a, *b) == want
    assert within_m(*a, *b, r) == (want <= r)


def test_within_on_the_edge_and_with_nan() -> None:
    lon, lat = SANTOS
    north = (lon, lat + 30.0 / (EARTH_RADIUS_M * math.pi / 180.0))
    d = haversine_m(*SANTOS, *north)
    assert within_m(*SANTOS, *north, d) and not within_m(*SANTOS, *north, math.nextafter(d, 0.0))
    assert not within_m(math.nan, lat, lon, lat, 10.0)
    assert haversine_m(0.0, 0.0, 180.0, 0.0) == _textbook_haversine(0.0, 0.0, 180.0, 0.0)
