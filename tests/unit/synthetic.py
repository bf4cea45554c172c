"""Synthetic fences laid out in metres around a reference point, for detector tests."""

from __future__ import annotations

from geofences import FenceIndex, LocalProjection, load_fence_set


def square(proj: LocalProjection, x0: float, y0: float, x1: float, y1: float) -> list[list[list[float]]]:
    """GeoJSON polygon coordinates of an axis-aligned box given in metres east/north of ``proj``'s origin."""
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return [[[float(v) for v in proj.to_lonlat(x, y)] for x, y in corners]]


def index(
    proj: LocalProjection, port: str, boxes: list[tuple[str, str, str, tuple[float, float, float, float]]]
) -> FenceIndex:
    """A fence index from (id, name, kind, (x0, y0, x1, y1) in metres) boxes, loaded through validation."""
    doc = {
        "type": "FeatureCollection",
        "port": port,
        "name": "test",
        "features": [
            {
                "type": "Feature",
                "properties": {"id": fid, "name": name, "kind": kind},
                "geometry": {"type": "Polygon", "coordinates": square(proj, *box)},
            }
            for fid, name, kind, box in boxes
        ],
    }
    return FenceIndex(load_fence_set(doc).fences, hysteresis_m=25.0)
