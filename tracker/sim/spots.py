"""Where to put a device so that it stands inside a restricted fence: a grid of points in each one.

The fault scenarios (tests/faults/streams.py) and the end-to-end benchmark (bench/e2e.py) both walk
"intruders" into restricted fences and must know in advance which fence each one enters; both place
them with this one function, so the two cannot drift apart on what "well inside" means.
"""

from __future__ import annotations

from collections.abc import Iterable

from shapely.geometry import Point

from geofences import Fence, FenceKind, LocalProjection

LonLat = tuple[float, float]


def restricted_spots(
    fences: Iterable[Fence], inset_m: float = 20.0, spacing_m: float = 40.0
) -> list[tuple[str, LonLat]]:
    """Points ``inset_m`` inside each restricted fence, ``spacing_m`` apart, as (fence id, (lon, lat)).

    Round-robin over the fences (sorted by id), so that the first few points already cover several
    fences. ``spacing_m`` above the 30 m at which two standing devices meet keeps neighbours from
    raising a rendezvous.
    """
    by_fence: dict[str, list[LonLat]] = {}
    for fence in fences:
        if fence.kind is not FenceKind.RESTRICTED:
            continue
        proj = LocalProjection.around(fence.geometry)
        inner = proj.project(fence.geometry).buffer(-inset_m)
        if inner.is_empty:
            continue
        minx, miny, maxx, maxy = inner.bounds
        y = miny + spacing_m / 2
        while y <= maxy:
            x = minx + spacing_m / 2
            while x <= maxx:
                if inner.contains(Point(x, y)):
                    lon, lat = proj.to_lonlat(x, y)
                    by_fence.setdefault(fence.id, []).append((float(lon), float(lat)))
                x += spacing_m
            y += spacing_m
    out: list[tuple[str, LonLat]] = []
    while any(by_fence.values()):
        for fid in sorted(by_fence):
            if by_fence[fid]:
                out.append((fid, by_fence[fid].pop(0)))
    return out
