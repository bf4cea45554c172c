"""Synthetic fences laid out in metres around a reference point, for detector tests."""

from __future__ import annotations

from geofences import LocalProjection


def square(proj: LocalProjection, x0: float, y0: float, x1: float, y1: float) -> list[list[list[float]]]:
    """GeoJSON polygon coordinates of an axis-aligned box given in metres east/north of ``proj``'s origin."""
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return [[[float(v) for v in proj.to_lonlat(x, y)] for x, y in corners]]
