"""Circle fences: a centre and a radius in metres, turned into a polygon the index treats like any other.

Security desks often describe an area as "200 m around the scanner" rather than drawing it. A circle
buffered in degrees would be an ellipse (east-west degrees shrink with cos(lat)), and even the local
plane of :mod:`geofences.geo` drifts at tens of kilometres; the vertices here are instead solved on the
WGS84 ellipsoid (pyproj's ``Geod.fwd``, the direct geodesic problem), so every vertex lies exactly
``radius_m`` from the centre. The polygon is inscribed: between two vertices its edge runs at most
``MAX_EDGE_ERROR_M`` inside the true circle, far below GPS noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from pyproj import Geod
from shapely.geometry import Polygon

__all__ = [
    "MAX_EDGE_ERROR_M",
    "MAX_LATITUDE",
    "MAX_RADIUS_M",
    "MIN_RADIUS_M",
    "Circle",
    "CircleError",
    "circle_polygon",
]

MIN_RADIUS_M = 1.0
"""Below GPS accuracy a circle cannot be told from a point: a radius under a metre is a unit mistake."""
MAX_RADIUS_M = 50_000.0
"""A port's whole anchorage fits in 50 km; a larger "fence" is a typo (km for m) that would put every
device of the region inside it."""
MAX_LATITUDE = 89.0
"""A circle must not contain a pole: its polygon in lon/lat would wrap around the globe."""
MAX_EDGE_ERROR_M = 0.25
"""How far an edge of the polygon may run inside the true circle (the sagitta of one edge)."""
_MIN_VERTICES = 32
_MAX_VERTICES = 1024
_GEOD = Geod(ellps="WGS84")
_MATCH_TOLERANCE = 0.01
"""A polygon handed in next to circle properties must have its vertices within 1 % (+1 m) of the radius."""


class CircleError(ValueError):
    """A centre or radius that cannot make a fence; the message says which and why."""


def _vertices(radius_m: float) -> int:
    """Enough vertices that no edge cuts more than MAX_EDGE_ERROR_M off the circle."""
    ratio = 1.0 - MAX_EDGE_ERROR_M / radius_m
    if ratio <= -1.0:
        return _MIN_VERTICES
    n = math.ceil(math.pi / math.acos(max(-1.0, ratio)))
    return max(_MIN_VERTICES, min(_MAX_VERTICES, n))


@dataclass(frozen=True, slots=True)
class Circle:
    """Centre in WGS84 lon/lat and radius in metres; validated on construction."""

    lon: float
    lat: float
    radius_m: float

    def __post_init__(self) -> None:
        for name, value in (("longitude", self.lon), ("latitude", self.lat), ("radius_m", self.radius_m)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise CircleError(f"circle {name} must be a finite number, got {value!r}")
        if not -180.0 <= self.lon <= 180.0:
            raise CircleError(f"circle centre longitude {self.lon} is outside ±180")
        if not -MAX_LATITUDE <= self.lat <= MAX_LATITUDE:
            raise CircleError(f"circle centre latitude {self.lat} is outside ±{MAX_LATITUDE:g}")
        if not MIN_RADIUS_M <= self.radius_m <= MAX_RADIUS_M:
            raise CircleError(
                f"circle radius_m must be between {MIN_RADIUS_M:g} and {MAX_RADIUS_M:g} metres, got {self.radius_m:g}"
            )

    @classmethod
    def from_json(cls, raw: object) -> Circle:
        """``{"center": [lon, lat], "radius_m": r}`` (``centre`` is accepted too)."""
        if not isinstance(raw, Mapping):
            raise CircleError("circle must be an object {center: [lon, lat], radius_m}")
        center = raw.get("center", raw.get("centre"))
        if not isinstance(center, list | tuple) or len(center) != 2:
            raise CircleError("circle center must be [lon, lat]")
        lon, lat = _number(center[0], "longitude"), _number(center[1], "latitude")
        return cls(lon, lat, _number(raw.get("radius_m"), "radius_m"))

    def to_json(self) -> dict[str, Any]:
        return {"center": [self.lon, self.lat], "radius_m": self.radius_m}

    def polygon(self) -> Polygon:
        return circle_polygon(self.lon, self.lat, self.radius_m)

    def matches(self, geom: shapely.Geometry) -> bool:
        """Whether a polygon handed in with these properties is this circle (not one edited since)."""
        if not isinstance(geom, Polygon) or len(geom.interiors):
            return False
        coords = shapely.get_coordinates(geom)
        n = len(coords)
        _, _, dist = _GEOD.inv(np.full(n, self.lon), np.full(n, self.lat), coords[:, 0], coords[:, 1])
        slack = self.radius_m * _MATCH_TOLERANCE + 1.0
        return bool(np.all(np.abs(np.asarray(dist) - self.radius_m) <= slack))


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CircleError(f"circle {name} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        raise CircleError(f"circle {name} is out of range") from None


def circle_polygon(lon: float, lat: float, radius_m: float) -> Polygon:
    """The inscribed polygon of the geodesic circle, counter-clockwise (RFC 7946's right-hand rule).

    A circle crossing the antimeridian is refused: its lon/lat polygon would span the other way round
    the globe, and no port needs one.
    """
    circle = Circle(lon, lat, radius_m)
    n = _vertices(circle.radius_m)
    # azimuths clockwise from north, walked backwards so the ring is counter-clockwise
    az = np.linspace(360.0, 0.0, n, endpoint=False)
    lons, lats, _ = _GEOD.fwd(np.full(n, circle.lon), np.full(n, circle.lat), az, np.full(n, circle.radius_m))
    lons = np.asarray(lons, dtype=np.float64)
    lats = np.asarray(lats, dtype=np.float64)
    if np.any(np.abs(lons - circle.lon) > 180.0):
        raise CircleError(f"circle around ({circle.lon}, {circle.lat}) crosses the antimeridian")
    ring = np.column_stack([lons, lats])
    return Polygon(np.vstack([ring, ring[:1]]))
