"""Segment crossings through the cell walk give exactly what the STRtree path gave, on random segments.

The reference below is the lookup as it was before the walk: a LineString per segment, an STRtree query,
the exact test on the prepared segment, the intersection and its position along the segment.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry.base import BaseGeometry

from geofences import Fence, FenceIndex, FenceKind, LocalProjection, load_port
from geofences.segments import SegmentGrid
from tracker.core import geofence
from tracker.core.fix import Fix
from tracker.core.geofence import GeofenceParams
from tracker.core.model import Ping

INDEXES = {port: FenceIndex(load_port(port).fences) for port in ("santos", "callao")}
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def reference(
    index: FenceIndex, lon0: float, lat0: float, lon1: float, lat1: float, exclude: frozenset[str]
) -> tuple[tuple[str, BaseGeometry], ...]:
    if lon0 == lon1 and lat0 == lat1:
        return ()
    geoms = np.array([f.geometry for f in index.fences], dtype=object)
    ids = [f.id for f in index.fences]
    seg = shapely.LineString([(lon0, lat0), (lon1, lat1)])
    near = [f for f in shapely.STRtree(geoms).query(seg).tolist() if ids[f] not in exclude]
    if not near:
        return ()
    shapely.prepare(seg)
    hits = np.asarray(near)[shapely.intersects(seg, geoms[near])]
    found = []
    for f in hits.tolist():
        inter = shapely.intersection(seg, geoms[f])
        first = min((seg.project(shapely.Point(c)) for c in shapely.get_coordinates(inter)), default=0.0)
        found.append((first, ids[f], inter))
    found.sort(key=lambda t: (t[0], t[1]))
    return tuple((fid, inter) for _, fid, inter in found)


def reference_crossed(
    index: FenceIndex, last: Fix, ping: Ping, exclude: frozenset[str], p: GeofenceParams
) -> tuple[str, ...]:
    if (ping.ts - last.ts).total_seconds() > p.max_cross_gap_s or (last.lon, last.lat) == (ping.lon, ping.lat):
        return ()
    proj = LocalProjection(last.lon, last.lat)
    out = []
    for f, inside in reference(index, last.lon, last.lat, ping.lon, ping.lat, exclude):
        needed = p.min_cross_gate_m if index.get(f).kind is FenceKind.GATE else p.min_cross_m
        if proj.project(inside).length >= needed:
            out.append(f)
    return tuple(out)


def _same(a: tuple[tuple[str, BaseGeometry], ...], b: tuple[tuple[str, BaseGeometry], ...]) -> bool:
    return [f for f, _ in a] == [f for f, _ in b] and all(
        shapely.equals_exact(x, y, tolerance=0.0) for (_, x), (_, y) in zip(a, b, strict=True)
    )


def _place(index: FenceIndex, k: int) -> tuple[float, float]:
    """A point on (or near) fence ``k``'s outline, where crossings happen."""
    g = index.fences[k % len(index)].geometry
    ring = g.exterior if hasattr(g, "exterior") else g.boundary
    pt = ring.interpolate((k * 0.618) % 1.0, normalized=True)
    return float(pt.x), float(pt.y)


segments = st.tuples(
    st.sampled_from(sorted(INDEXES)),
    st.integers(0, 10_000),
    st.floats(-400.0, 400.0),
    st.floats(-400.0, 400.0),
    st.floats(-400.0, 400.0),
    st.floats(-400.0, 400.0),
    st.integers(0, 3),
)


@settings(max_examples=500, deadline=None)
@given(segments)
def test_crossings_are_the_strtree_paths(case: tuple[str, int, float, float, float, float, int]) -> None:
    port, k, e0, n0, e1, n1, how = case
    index = INDEXES[port]
    lon, lat = _place(index, k)
    proj = LocalProjection(lon, lat)
    (lon0, lon1), (lat0, lat1) = (v.tolist() for v in proj.to_lonlat([e0, e1], [n0, n1]))
    if how == 1:
        lon1 = lon0  # due north-south: the steep case the walk takes by its bounding box
    elif how == 2:
        lat1 = lat0
    own = index.fences_at([lon0, lon1], [lat0, lat1])
    exclude = own[0] | own[1] if how == 3 else frozenset()
    got = index.crossings(lon0, lat0, lon1, lat1, exclude)
    want = reference(index, lon0, lat0, lon1, lat1, exclude)
    assert _same(got, want)
    assert {f for f, _ in want} <= set(index.near_segment(lon0, lat0, lon1, lat1))
    # the candidates by bounding box (what a hop not computed ahead is looked up with) give the same crossings
    by_box = index.near_box(lon0, lat0, lon1, lat1)
    assert {f for f, _ in want} <= by_box
    assert _same(index.crossings(lon0, lat0, lon1, lat1, exclude, by_box), want)


@settings(max_examples=300, deadline=None)
@given(segments, st.floats(0.5, 90.0))
def test_crossed_is_the_strtree_paths(case: tuple[str, int, float, float, float, float, int], gap: float) -> None:
    port, k, e0, n0, e1, n1, _ = case
    index = INDEXES[port]
    lon, lat = _place(index, k)
    proj = LocalProjection(lon, lat)
    (lon0, lon1), (lat0, lat1) = (v.tolist() for v in proj.to_lonlat([e0 / 4, e1 / 4], [n0 / 4, n1 / 4]))
    last = Fix(ts=T0, lon=lon0, lat=lat0)
    ping = Ping(device_id="TRK-1", ts=T0 + timedelta(seconds=gap), lon=lon1, lat=lat1)
    own = index.fences_at([lon0, lon1], [lat0, lat1])
    p = GeofenceParams()
    exclude = own[0] | own[1]
    assert geofence.crossed(index, last, ping, exclude, p) == reference_crossed(index, last, ping, exclude, p)


def test_a_long_jump_is_asked_of_the_tree_and_answers_the_same() -> None:
    index = INDEXES["santos"]
    a, b = (-46.36, -23.93), (-46.29, -23.97)
    grid = index.segments
    assert grid.near(*a, *b) is None  # too many cells for the walk
    assert _same(index.crossings(*a, *b), reference(index, *a, *b, frozenset()))
    assert len(index.crossings(*a, *b)) > 5


def test_segments_along_cell_edges_and_corners_find_what_they_touch() -> None:
    # a fence whose corner sits exactly on a cell corner, and segments running along cell lines to it
    s = 0.0002
    box = shapely.box(-46.3 + 3 * s, -23.9 + 3 * s, -46.3 + 5 * s, -23.9 + 5 * s)
    index = FenceIndex([Fence("b", "b", FenceKind.GATE, "t", box)])
    x, y = -46.3 + 3 * s, -23.9 + 3 * s
    for seg in [(x - 4 * s, y, x, y), (x, y - 4 * s, x, y), (x - 2 * s, y - 2 * s, x, y), (x - s, y + s, x + s, y - s)]:
        assert index.near_segment(*seg) == {"b"}, seg
        assert [f for f, _ in index.crossings(*seg)] == ["b"]
    assert index.near_segment(x - 4 * s, y - 2 * s, x - 2 * s, y - 2 * s) == set()
    assert len(SegmentGrid(index._geoms, ["b"])) > 0


def test_the_walk_widens_steep_segments_to_their_box() -> None:
    index = INDEXES["callao"]
    gate = index.get("callao-gate-dpw-2")
    c = gate.geometry.centroid
    near = index.near_segment(c.x, c.y - 0.002, c.x + 1e-9, c.y + 0.002)
    assert gate.id in near


def test_a_sweep_of_hops_along_every_outline_matches_and_crosses_often() -> None:
    crossing = 0
    for port, index in INDEXES.items():
        for k in range(0, 3 * len(index), 3):
            lon, lat = _place(index, k)
            proj = LocalProjection(lon, lat)
            e, n = 150.0 * math.cos(k), 150.0 * math.sin(k)
            (lon0, lon1), (lat0, lat1) = (v.tolist() for v in proj.to_lonlat([-e, e], [-n, n]))
            own = index.fences_at([lon0, lon1], [lat0, lat1])
            exclude = own[0] | own[1]
            want = reference(index, lon0, lat0, lon1, lat1, exclude)
            assert _same(index.crossings(lon0, lat0, lon1, lat1, exclude), want), (port, k)
            crossing += bool(want)
    assert crossing >= 100


@settings(max_examples=200, deadline=None)
@given(st.lists(segments, min_size=1, max_size=12))
def test_a_batch_of_segments_gets_each_ones_crossings(
    cases: list[tuple[str, int, float, float, float, float, int]],
) -> None:
    index = INDEXES["santos"]
    rows = []
    for _, k, e0, n0, e1, n1, how in cases:
        lon, lat = _place(index, k)
        (lon0, lon1), (lat0, lat1) = (v.tolist() for v in LocalProjection(lon, lat).to_lonlat([e0, e1], [n0, n1]))
        rows.append((lon0, lat0, lon0 if how == 1 else lon1, lat1))
    lo0, la0, lo1, la1 = ([r[i] for r in rows] for i in range(4))
    got = index.crossings_batch(lo0, la0, lo1, la1)
    for row, answer in zip(rows, got, strict=True):
        assert _same(answer, reference(index, *row, frozenset()))
    assert index.crossings_batch(lo0, la0, lo1, la1, min_inside_m={k: 0.0 for k in FenceKind}) == got
    assert index.crossings_batch(lo0, la0, lo1, la1, [frozenset({"prism:not-a-fence"})] * len(rows)) == got
    assert all(a == () for a in index.crossings_batch(lo0, la0, lo1, la1, min_inside_m={k: 1e7 for k in FenceKind}))
    index.prefetch_crossings(lo0, la0, lo1, la1)
    for row, answer in zip(rows, got, strict=True):
        met = index.met(*row)
        assert met is not None and _same(met, answer)
    own = [frozenset(index.fences_at([r[0], r[2]], [r[1], r[3]])[0]) for r in rows]
    index.prefetch_crossings(lo0, la0, lo1, la1, own)
    for row, answer, mine in zip(rows, got, own, strict=True):
        assert index.met(*row) is None or not mine  # the assumed exclusion is not covered: no answer
        met = index.met(*row, mine)
        assert met is not None and _same(met, tuple(c for c in answer if c[0] not in mine))
        assert _same(index.crossings(*row, mine), met)
    index.prefetch_crossings([], [], [], [])
    assert index.met(*rows[0]) is None
