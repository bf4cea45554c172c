"""The grid-based membership answers exactly what a plain STRtree evaluation answers.

``Reference`` is how FenceIndex worked before the cell grid: one STRtree per geometry set, a shapely
Point per fix, ``query(point, predicate="intersects")``, then the hysteresis and entry-margin rules.
Every public membership path of FenceIndex (one fix, batch, with and without hysteresis) must give
the same sets on random points around the real Santos fences and on the points where a grid is most
likely to go wrong: fence vertices (of the fence, its grown exit geometry and its shrunk entry
geometry), points on edges, on cell lines, in holes, between the parts of a multipolygon, NaN.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences import DEFAULT_CELL_DEG, Fence, FenceIndex, FenceKind, LocalProjection, buffer_m, load_port
from geofences.cells import CellGrid

SANTOS = load_port("santos")
CALLAO = load_port("callao")
RESTRICTED_KINDS = frozenset({FenceKind.RESTRICTED})


class Reference:
    """The STRtree evaluation the grid replaced, kept here as the oracle."""

    def __init__(self, fences: Sequence[Fence], *, hysteresis_m: float = 25.0, entry_margin_m: float = 0.0) -> None:
        self.ids = [f.id for f in fences]
        self.by_id = {f.id: i for i, f in enumerate(fences)}
        geoms = np.array([f.geometry for f in fences], dtype=object)
        outer = np.array(
            [buffer_m(f.geometry, hysteresis_m) if hysteresis_m > 0 else f.geometry for f in fences], dtype=object
        )
        inner = []
        for f in fences:
            margin = entry_margin_m if f.kind in RESTRICTED_KINDS else 0.0
            shrunk = buffer_m(f.geometry, -margin) if margin > 0 else f.geometry
            inner.append(f.geometry if shrunk.is_empty else shrunk)
        self.inner = inner
        self.entry_margin_m = entry_margin_m
        self.tree = shapely.STRtree(geoms)
        self.outer_tree = shapely.STRtree(outer)

    def _hits(self, tree: shapely.STRtree, x: float, y: float) -> set[str]:
        _, idx = tree.query([shapely.Point(x, y)], predicate="intersects")
        return {self.ids[i] for i in idx.tolist()}

    def raw(self, x: float, y: float) -> frozenset[str]:
        return frozenset(self._hits(self.tree, x, y))

    def membership(self, x: float, y: float, prev: frozenset[str]) -> frozenset[str]:
        r = self._hits(self.tree, x, y)
        new = r - prev
        if new and self.entry_margin_m > 0:
            r = (r & prev) | {f for f in new if shapely.intersects_xy(self.inner[self.by_id[f]], x, y)}
        if prev:
            r |= prev & self._hits(self.outer_tree, x, y)
        return frozenset(r)


def check(
    index: FenceIndex, ref: Reference, points: Sequence[tuple[float, float]], prevs: Sequence[frozenset[str]]
) -> None:
    """Every path of ``index`` against ``ref``, point by point and as one batch."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    want_raw = [ref.raw(x, y) for x, y in points]
    want = [ref.membership(x, y, q) for (x, y), q in zip(points, prevs, strict=True)]
    assert index.fences_at(np.array(xs), np.array(ys)) == want_raw
    assert [index.fences_at([x], [y])[0] for x, y in points] == want_raw
    # both batch lookups of the grid, whichever fences_at picks for this many points
    p, f = index.grid.hits(np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64))
    vectorised: list[list[int]] = [[] for _ in points]
    for a, b in zip(p.tolist(), f.tolist(), strict=True):
        vectorised[a].append(b)
    few = index.grid.hits_few([float(x) for x in xs], [float(y) for y in ys])
    assert [sorted(h) for h in few] == [sorted(h) for h in vectorised]
    assert [frozenset(index.fences[i].id for i in h) for h in few] == want_raw
    assert index.membership_batch(xs, ys, prevs) == want
    assert [index.membership(x, y, q) for (x, y), q in zip(points, prevs, strict=True)] == want
    got_with_raw = [index.membership(x, y, q, raw=r) for (x, y), q, r in zip(points, prevs, want_raw, strict=True)]
    assert got_with_raw == want


def vertices(geom: shapely.geometry.base.BaseGeometry) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in shapely.get_coordinates(geom).tolist()]


# ---- real fences -------------------------------------------------------------------------------

FENCES = [*SANTOS.fences, *CALLAO.fences]
INDEX = FenceIndex(FENCES, hysteresis_m=25.0, entry_margin_m=10.0)
REF = Reference(FENCES, hysteresis_m=25.0, entry_margin_m=10.0)
OUTER = [INDEX.outer_geometry(f.id) for f in FENCES]
INNER = REF.inner
SMALL = [i for i, f in enumerate(FENCES) if f.kind is not FenceKind.PORT_BOUNDARY]


@st.composite
def near_fence(draw: st.DrawFn) -> tuple[float, float]:
    """A point on or around one real fence: a vertex of it, of its exit or entry geometry, a point on
    one of its edges, on a cell line, or anywhere within 80 m of its bounding box."""
    i = draw(st.sampled_from(SMALL))
    fence = FENCES[i]
    mode = draw(st.sampled_from(["vertex", "outer", "inner", "edge", "cell", "box"]))
    if mode in ("vertex", "outer", "inner"):
        geom = {"vertex": fence.geometry, "outer": OUTER[i], "inner": INNER[i]}[mode]
        pts = vertices(geom)
        return pts[draw(st.integers(0, len(pts) - 1))]
    if mode == "edge":
        pts = vertices(fence.geometry)
        k = draw(st.integers(0, len(pts) - 2))
        t = draw(st.sampled_from([0.5, 0.25, 1 / 3])) if draw(st.booleans()) else draw(st.floats(0, 1))
        (x0, y0), (x1, y1) = pts[k], pts[k + 1]
        return x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    minx, miny, maxx, maxy = buffer_m(shapely.box(*fence.geometry.bounds), 80.0).bounds
    x = draw(st.floats(minx, maxx))
    y = draw(st.floats(miny, maxy))
    if mode == "cell":  # snapped to the grid's cell lines, where a point's cell is decided by rounding
        s = DEFAULT_CELL_DEG
        x = math.floor(x / s) * s if draw(st.booleans()) else x
        y = math.floor(y / s) * s
    return x, y


@st.composite
def previous_for(draw: st.DrawFn, point: tuple[float, float]) -> frozenset[str]:
    """A plausible previous membership: some of the fences at or within ~50 m of the point, now and
    then an id the index does not know (a fence removed since)."""
    proj = LocalProjection(*point)
    around = set(REF.raw(*point))
    for dx, dy in ((40.0, 0.0), (-40.0, 0.0), (0.0, 40.0), (0.0, -40.0), (30.0, 30.0)):
        lon, lat = proj.to_lonlat(dx, dy)
        around |= REF.raw(float(lon), float(lat))
    chosen = draw(st.sets(st.sampled_from(sorted(around)), max_size=len(around))) if around else set()
    if draw(st.integers(0, 9)) == 0:
        chosen.add("fence-removed-since")
    return frozenset(chosen)


@st.composite
def fixes(draw: st.DrawFn) -> tuple[list[tuple[float, float]], list[frozenset[str]]]:
    points = draw(st.lists(near_fence(), min_size=1, max_size=40))
    prevs = [draw(previous_for(p)) for p in points]
    return points, prevs


@settings(max_examples=120, deadline=None)
@given(fixes())
def test_real_fences_match_the_reference(case: tuple[list[tuple[float, float]], list[frozenset[str]]]) -> None:
    check(INDEX, REF, *case)


def test_many_random_points_match_the_reference_in_one_batch() -> None:
    """A few thousand points around the Santos and Callao fences, previous = membership 30 m away."""
    rng = np.random.default_rng(20240304)
    boxes = shapely.bounds(np.array([buffer_m(FENCES[i].geometry, 50.0) for i in SMALL], dtype=object))
    pick = rng.integers(len(SMALL), size=3000)
    xs = rng.uniform(boxes[pick, 0], boxes[pick, 2])
    ys = rng.uniform(boxes[pick, 1], boxes[pick, 3])
    points = list(zip(xs.tolist(), ys.tolist(), strict=True))
    prevs = []
    for x, y in points:
        lon, lat = LocalProjection(x, y).to_lonlat(*rng.normal(0.0, 30.0, 2))
        prevs.append(REF.membership(float(lon), float(lat), frozenset()))
    want = [REF.membership(x, y, q) for (x, y), q in zip(points, prevs, strict=True)]
    got = INDEX.membership_batch([p[0] for p in points], [p[1] for p in points], prevs)
    assert got == want
    assert sum(1 for a, b in zip(prevs, want, strict=True) if a != b) > 100  # the hysteresis rules were exercised
    assert sum(1 for w in want if w) > 1000


# ---- synthetic edge cases --------------------------------------------------------------------------

S = DEFAULT_CELL_DEG
# a box whose edges lie exactly on cell lines, one with a hole, a two-part multipolygon, a fence smaller
# than a cell, a long thin diagonal road, a fence across lon 0 / lat 0 (negative cell indices), and a
# restricted area with an entry margin
EDGE_FENCES = [
    Fence(
        "aligned",
        "aligned box",
        FenceKind.TERMINAL,
        "t",
        shapely.box(-46.3 + 0 * S, -23.9, -46.3 + 4 * S, -23.9 + 4 * S),
    ),
    Fence(
        "holed",
        "yard with a hole",
        FenceKind.CUSTOMS_YARD,
        "t",
        shapely.Polygon(
            [(-46.31, -23.91), (-46.30, -23.91), (-46.30, -23.90), (-46.31, -23.90)],
            holes=[[(-46.307, -23.907), (-46.303, -23.907), (-46.303, -23.903), (-46.307, -23.903)]],
        ),
    ),
    Fence(
        "multi",
        "two quays",
        FenceKind.QUAY,
        "t",
        shapely.MultiPolygon(
            [shapely.box(-46.32, -23.92, -46.318, -23.918), shapely.box(-46.316, -23.92, -46.314, -23.918)]
        ),
    ),
    Fence("tiny", "tiny lot", FenceKind.AUTHORIZED_PARKING, "t", shapely.box(-46.3011, -23.9011, -46.30105, -23.90105)),
    Fence(
        "road",
        "diagonal road",
        FenceKind.CORRIDOR,
        "t",
        shapely.LineString([(-46.33, -23.93), (-46.29, -23.89)]).buffer(0.0002, cap_style="flat"),
    ),
    Fence("origin", "across the origin", FenceKind.TERMINAL, "t", shapely.box(-0.001, -0.001, 0.0013, 0.0007)),
    Fence(
        "restricted",
        "restricted lot",
        FenceKind.RESTRICTED,
        "t",
        shapely.Polygon([(-46.3095, -23.9095), (-46.3075, -23.9095), (-46.3075, -23.9075), (-46.3095, -23.9075)]),
    ),
]


def edge_points() -> list[tuple[float, float]]:
    pts: list[tuple[float, float]] = []
    for f in EDGE_FENCES:
        for geom in (f.geometry, buffer_m(f.geometry, 25.0), buffer_m(f.geometry, -10.0)):
            pts += vertices(geom)
        coords = vertices(f.geometry)
        for (x0, y0), (x1, y1) in itertools.pairwise(coords):
            pts.append(((x0 + x1) / 2, (y0 + y1) / 2))
        c = f.geometry.centroid
        pts.append((c.x, c.y))
    pts += [(-46.305, -23.905), (-46.307, -23.905), (-46.31 + 0.5 * S, -23.9), (0.0, 0.0), (-0.0, 0.0)]
    pts += [(-46.317, -23.919), (-46.3 + 2 * S, -23.9 + 2 * S), (-46.3 + 4 * S, -23.9 + 1.5 * S)]
    pts += [(math.nan, math.nan), (math.inf, 0.0), (-46.3, math.nan), (179.99, 89.99), (-180.0, -90.0)]
    return pts


@pytest.mark.parametrize("cell_deg", [DEFAULT_CELL_DEG, 0.0001, 0.003, 1.0])
def test_edge_cases_match_the_reference(cell_deg: float) -> None:
    index = FenceIndex(EDGE_FENCES, hysteresis_m=25.0, entry_margin_m=10.0, cell_deg=cell_deg)
    ref = Reference(EDGE_FENCES, hysteresis_m=25.0, entry_margin_m=10.0)
    pts = edge_points()
    everything = frozenset(f.id for f in EDGE_FENCES)
    cases: list[list[frozenset[str]]] = [[frozenset()] * len(pts), [everything] * len(pts)]
    cases.append([ref.raw(x, y) for x, y in pts])
    for prevs in cases:
        check(index, ref, pts, prevs)
    # the cases the points were chosen for do occur
    raw = [ref.raw(x, y) for x, y in pts]
    assert any("holed" in r for r in raw)
    assert any(r == frozenset() for r in raw)
    assert {"aligned", "holed", "road"} <= ref.raw(-46.3, -23.9)  # a vertex of two fences, on the road's axis
    assert ref.raw(-46.305, -23.905) == {"road"}  # in the hole
    assert "holed" in ref.raw(-46.307, -23.905)  # on the hole's edge
    assert "multi" not in ref.raw(-46.317, -23.919)  # between the two quays
    assert ref.raw(0.0, 0.0) == {"origin"}
    assert "restricted" in ref.raw(-46.3095, -23.9095)
    assert "restricted" not in ref.membership(-46.3095, -23.9095, frozenset())  # at the edge: not entered


def test_zero_hysteresis_and_no_margin_match_the_reference() -> None:
    index = FenceIndex(EDGE_FENCES, hysteresis_m=0.0)
    ref = Reference(EDGE_FENCES, hysteresis_m=0.0)
    pts = edge_points()
    check(index, ref, pts, [frozenset(f.id for f in EDGE_FENCES)] * len(pts))


def test_empty_index() -> None:
    index = FenceIndex([])
    assert index.fences_at([0.0] * 10, [0.0] * 10) == [frozenset()] * 10
    assert index.membership_batch([0.0] * 6, [0.0] * 6, [frozenset({"gone"})] * 6) == [frozenset()] * 6
    assert index.membership(0.0, 0.0, frozenset({"gone"})) == frozenset()


def test_batch_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="previous memberships"):
        INDEX.membership_batch([0.0] * 10, [0.0] * 10, [frozenset()] * 9)


# ---- the grid on its own ----------------------------------------------------------------------------


def tree_pairs(
    geoms: Iterable[shapely.geometry.base.BaseGeometry], x: np.ndarray, y: np.ndarray
) -> list[tuple[int, int]]:
    tree = shapely.STRtree(np.array(list(geoms), dtype=object))
    p, f = tree.query(shapely.points(x, y), predicate="intersects")
    return sorted(zip(p.tolist(), f.tolist(), strict=True))


@pytest.mark.parametrize("max_cells", [1, 64, 1 << 20])
def test_fences_too_big_for_the_grid_are_tested_directly(max_cells: int) -> None:
    """With a small ``max_cells`` the port boundary and the large terminals leave the grid; answers
    must not change."""
    geoms = np.array([f.geometry for f in SANTOS.fences], dtype=object)
    grid = CellGrid(geoms, cell_deg=DEFAULT_CELL_DEG, max_cells=max_cells)
    rng = np.random.default_rng(5)
    ops = shapely.total_bounds([f.geometry for f in SANTOS.fences if f.kind is not FenceKind.PORT_BOUNDARY])
    x = rng.uniform(ops[0], ops[2], 4000)
    y = rng.uniform(ops[1], ops[3], 4000)
    p, f = grid.hits(x, y)
    want = tree_pairs(geoms, x, y)
    assert sorted(zip(p.tolist(), f.tolist(), strict=True)) == want
    one = sorted(
        (i, j) for i, (a, b) in enumerate(zip(x.tolist(), y.tolist(), strict=True)) for j in grid.hits_one(a, b)
    )
    assert one == want
    assert len(want) > 800
    assert grid.direct == sum(1 for g in geoms if grid_span(g) > max_cells)
    assert grid.direct > 0 if max_cells < 1 << 20 else grid.direct == 0


def grid_span(geom: shapely.geometry.base.BaseGeometry) -> int:
    minx, miny, maxx, maxy = (float(v) for v in geom.bounds)
    s = DEFAULT_CELL_DEG
    return (math.floor(maxx / s) - math.floor(minx / s) + 1) * (math.floor(maxy / s) - math.floor(miny / s) + 1)


def test_grid_rejects_unusable_cell_sizes() -> None:
    geoms = np.array([shapely.box(0, 0, 1, 1)], dtype=object)
    for bad in (0.0, -1.0, math.nan, 1e-9):
        with pytest.raises(ValueError, match="cell_deg"):
            CellGrid(geoms, cell_deg=bad)
