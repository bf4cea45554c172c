"""Metric helpers for WGS84 geometry at port scale.

Fences are stored in lon/lat because that is what devices report and what GIS teams hand over, but
hysteresis margins, corridor widths and GPS noise are specified in metres. Rather than pulling in a
projection library for the hot path, geometry is projected into a local equirectangular plane around a
reference point. At port scale (a few kilometres) that is far more accurate than the GPS fixes it is
compared with; see :class:`LocalProjection` for the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

EARTH_RADIUS_M = 6_371_008.8
"""IUGG mean Earth radius; the same sphere is used by :func:`haversine_m` and :class:`LocalProjection`
so that distances computed either way agree with each other."""

FloatArray = npt.NDArray[np.float64]
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
_sin, _cos, _asin, _sqrt = math.sin, math.cos, math.asin, math.sqrt

__all__ = ["EARTH_RADIUS_M", "LocalProjection", "buffer_m", "distance_m", "haversine_m", "within_m"]


_RAD = math.pi / 180.0
"""What ``math.radians`` multiplies by (CPython's ``degToRad``): the same product without the call."""


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance on the mean sphere.

    The sphere differs from the WGS84 ellipsoid by at most ~0.5 %, i.e. centimetres over the distances a
    truck covers between two pings, which is well below GPS noise. Called for nearly every fix by several
    detectors, so it avoids attribute lookups and ``math.radians`` calls; the arithmetic is the textbook
    formula's, operation for operation (tests/unit/test_geo.py compares it bit for bit).
    """
    p1 = lat1 * _RAD
    p2 = lat2 * _RAD
    s = _sin((p2 - p1) / 2)
    t = _sin((lon2 - lon1) * _RAD / 2)
    r = _sqrt(s**2 + _cos(p1) * _cos(p2) * t**2)
    return 2 * EARTH_RADIUS_M * _asin(r if r < 1.0 else 1.0)  # min(1.0, r), NaN included


def within_m(lon1: float, lat1: float, lon2: float, lat2: float, metres: float) -> bool:
    """``haversine_m(...) <= metres``, deciding from latitude alone when it can.

    A great circle between two points is at least as long as their difference in latitude along a meridian
    (``R * |dlat|``); when that alone exceeds ``metres`` by more than any rounding (one part in 1e9, and a
    micrometre below which the formula's squares underflow), so does the distance, and no trigonometry is
    needed. Otherwise the exact distance decides.
    """
    if abs(lat2 - lat1) * _M_PER_DEG > metres * (1 + 1e-9) + 1e-6:
        return False
    return haversine_m(lon1, lat1, lon2, lat2) <= metres


@dataclass(frozen=True, slots=True)
class LocalProjection:
    """Equirectangular plane tangent at (``lon0``, ``lat0``), in metres east/north of that point.

    Error bound: east-west scale is exact only on the reference parallel; at a north-south offset of
    ``d`` metres the relative scale error is about ``tan(lat0) * d / R``. Near Santos (lat -24°) that is
    0.07 % at 10 km (7 m), and below 1 cm for the tens of metres used for buffers and hysteresis when the
    reference point is the geometry's own centre. Add the ~0.5 % sphere-vs-ellipsoid difference, which
    scales lengths uniformly and is irrelevant for margins of tens of metres. Do not use it across
    hundreds of kilometres or near the poles.
    """

    lon0: float
    lat0: float

    @property
    def _kx(self) -> float:
        return math.radians(1.0) * EARTH_RADIUS_M * math.cos(math.radians(self.lat0))

    @property
    def _ky(self) -> float:
        return math.radians(1.0) * EARTH_RADIUS_M

    def to_xy(self, lon: Any, lat: Any) -> tuple[FloatArray, FloatArray]:
        """Scalars or arrays in, arrays out, so the same call serves one fix or a whole batch."""
        lon_a = np.asarray(lon, dtype=np.float64)
        lat_a = np.asarray(lat, dtype=np.float64)
        return (lon_a - self.lon0) * self._kx, (lat_a - self.lat0) * self._ky

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        """:meth:`to_xy` of one point, as floats: the same arithmetic (IEEE doubles either way, so the very same
        numbers) without building arrays, for callers placing a fix or two at every fix."""
        return (lon - self.lon0) * self._kx, (lat - self.lat0) * self._ky

    def to_lonlat(self, x: Any, y: Any) -> tuple[FloatArray, FloatArray]:
        x_a = np.asarray(x, dtype=np.float64)
        y_a = np.asarray(y, dtype=np.float64)
        return x_a / self._kx + self.lon0, y_a / self._ky + self.lat0

    def coords_to_xy(self, coords: FloatArray) -> FloatArray:
        """(N, 2) lon/lat → (N, 2) metres; the shape shapely.transform hands to its callback."""
        x, y = self.to_xy(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    def coords_to_lonlat(self, coords: FloatArray) -> FloatArray:
        lon, lat = self.to_lonlat(coords[:, 0], coords[:, 1])
        return np.column_stack([lon, lat])

    def project(self, geom: BaseGeometry) -> BaseGeometry:
        return shapely.transform(geom, self.coords_to_xy)

    def unproject(self, geom: BaseGeometry) -> BaseGeometry:
        return shapely.transform(geom, self.coords_to_lonlat)

    @classmethod
    def around(cls, geom: BaseGeometry) -> LocalProjection:
        """Centre on the geometry's bounding box, which keeps the scale error symmetric and smallest."""
        minx, miny, maxx, maxy = geom.bounds
        return cls((minx + maxx) / 2.0, (miny + maxy) / 2.0)


def buffer_m(geom: BaseGeometry, metres: float, *, quad_segs: int = 8) -> BaseGeometry:
    """Buffer a lon/lat geometry by a distance in metres (negative shrinks it).

    Buffering in degrees would give an ellipse whose east-west radius shrinks with cos(lat); going through
    the local plane keeps the margin the same in every direction.
    """
    if geom.is_empty:
        return geom
    proj = LocalProjection.around(geom)
    return proj.unproject(shapely.buffer(proj.project(geom), metres, quad_segs=quad_segs))


def distance_m(geom: BaseGeometry, lon: float, lat: float) -> float:
    """Shortest distance in metres from a fix to a geometry (0 inside a polygon).

    The plane is centred on the fix, so the error is the projection bound at the distance returned, i.e.
    negligible for anything near enough to matter.
    """
    proj = LocalProjection(lon, lat)
    return float(shapely.distance(proj.project(geom), shapely.Point(0.0, 0.0)))
