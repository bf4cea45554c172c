"""Could the device have avoided a restricted fence between two fixes? A space-time prism along corridors.

A segment crossing is inferred only between fixes close in time (the straight line between two fixes a few
seconds apart is the path). A container tracker reporting every two to five minutes gives no such line: it can
drive through a restricted area between two fixes and leave no fix inside it. Yet the two fixes and the time
between them bound where it can have been: at no more than ``max_speed_ms`` every point it passed lies inside
the ellipse whose foci are the two fixes and whose string is ``max_speed_ms × gap`` (the space-time prism,
projected on the ground). Vehicles move on roads, so the places it could have passed are the port's corridors
inside that ellipse, reached from each fix by a short access drive (a fix in a yard or at a gate lies off the
centre line).

The decision is one-sided, as a security rule must be:

* some path along the corridors (or the straight line itself) from one fix to the other stays out of the
  fence's core and fits the time at a plausible speed: the device could have avoided the fence, nothing is
  raised;
* every path that fits the time enters the core, and the straight line through it fits the time too: the
  device went through, and the crossing is raised with the evidence (gap, budget, straight and shortest
  avoiding distances);
* even the straight line does not fit the time: the fixes are not a plausible trip at all (a teleport, which
  the integrity check judges), so no crossing is claimed;
* a fix lies further than ``access_m`` from every corridor and in no place vehicles use off the road (a street
  the fence set does not map, outside the port, or a multipath fix thrown off the roads): the corridors say
  nothing about where it drove, so nothing is claimed either.

"Core" is the fence shrunk by ``edge_tolerance_m``: a road drawn along the fence's edge, or a fix whose noise
grazes it, does not count as entering.

The module is pure (geometry and a small Dijkstra on the corridor graph); :class:`CorridorGraph` is built once
per fence index and cached by the caller.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import LineString, MultiLineString, Point
from shapely.geometry.base import BaseGeometry

from geofences import Fence, FenceKind, LocalProjection

__all__ = ["CorridorGraph", "ReachParams", "Verdict", "chord_enters", "chord_through", "judge"]


class _LonLat(Protocol):
    @property
    def lon(self) -> float: ...
    @property
    def lat(self) -> float: ...


FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class ReachParams:
    """Bounds of the prism. Every figure errs towards "could have avoided it": a false crossing pages an officer."""

    max_speed_ms: float = 20.0
    """Fastest plausible speed between two fixes (72 km/h): port roads are driven at 25-45 km/h, a truck racing
    between two fixes might do 60; above that the fixes are more likely wrong than the driving."""
    min_gap_s: float = 50.0
    """Gaps shorter than this are judged by the straight chord alone (the geofence step's crossing rule). Below the
    60 s reporting interval of container trackers: their gaps jitter by a second either way, and a limit at 60 s
    judged half of them and not the other half (so a multipath fix arriving 59.4 s after the one before was never
    recognised as the odd one out, and the proof of its way back raised a false crossing)."""
    max_gap_s: float = 900.0
    """Beyond fifteen minutes the prism covers most of a port: it proves nothing, so it is not computed."""
    edge_tolerance_m: float = 10.0
    """A path must go this far inside the fence to enter it (the index's entry margin)."""
    gps_slack_m: float = 30.0
    """Added to the distance budget: each fix may be off by about this much between them."""
    access_m: float = 60.0
    """A fix this close to a corridor is on the road network (the band's half width plus GPS noise) and joins the
    graph by a straight drive of at most this length."""
    yard_access_m: float = 200.0
    """A fix inside a place vehicles use off the road (terminal, yard, gate, quay, inspection area, car park) joins
    the graph by a straight drive of at most this length: places hang off the roads by such access drives."""
    snap_m: float = 15.0
    """Corridor lines ending this close to another line are joined to it (digitising slack)."""
    exit_m: float = 150.0
    """Road nodes this close to a gate are where the roads leave the port for the unmapped city."""
    densify_m: float = 25.0
    """Corridor lines are cut into pieces at most this long, so every point of a road is near a graph node."""
    outlier_chord_m: float = 30.0
    """A straight line into a fix that runs at least this far through a fence's core marks the fix: when the next
    gap is then proven to go back through the same fence, the fix is a multipath jump across it (both chords
    through the fence, the fixes either side of it together), not two crossings. Shorter runs are a road bend cut
    short (the geofence step's ``min_cross_m``)."""

    def __post_init__(self) -> None:
        if self.max_speed_ms <= 0 or self.densify_m <= 0:
            raise ValueError("max_speed_ms and densify_m must be above 0")
        if self.min_gap_s > self.max_gap_s:
            raise ValueError(f"min_gap_s ({self.min_gap_s}) is above max_gap_s ({self.max_gap_s})")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one judgement: ``crossed`` only when every plausible path enters the fence."""

    crossed: bool
    reason: str  # "straight_line_avoids" | "corridor_path_avoids" | "every_path_enters" | "implausible" | "cut_off" ...
    gap_s: float
    budget_m: float
    straight_m: float
    avoiding_m: float | None = None  # shortest corridor path that avoids the fence, when one fits the budget
    through_m: float | None = None  # the straight line's length inside the fence

    def evidence(self) -> dict[str, object]:
        return {
            "rule": "space-time prism along corridors",
            "reason": self.reason,
            "gap_s": round(self.gap_s, 1),
            "budget_m": round(self.budget_m, 1),
            "straight_m": round(self.straight_m, 1),
            "avoiding_path_m": None if self.avoiding_m is None else round(self.avoiding_m, 1),
            "inside_fence_m": None if self.through_m is None else round(self.through_m, 1),
        }


def _lines(geom: BaseGeometry) -> list[LineString]:
    if isinstance(geom, LineString):
        return [geom] if geom.length > 0 else []
    if isinstance(geom, MultiLineString):
        return [g for g in geom.geoms if g.length > 0]
    return [g for part in getattr(geom, "geoms", []) for g in _lines(part)]


class CorridorGraph:
    """The corridor centre lines of one port as a graph in a local metric plane."""

    def __init__(
        self,
        proj: LocalProjection,
        xy: FloatArray,
        adj: list[list[tuple[int, float]]],
        exits: BoolArray | None = None,
        inside: BaseGeometry | None = None,
    ) -> None:
        self.proj = proj
        self.xy = xy
        self.adj = adj
        self.exits = np.zeros(len(xy), dtype=np.bool_) if exits is None else exits
        self.inside = inside  # the port (projected): outside it the public streets are not mapped
        self._cores: dict[tuple[str, float], tuple[BaseGeometry, BaseGeometry, tuple[float, float, float, float]]] = {}
        self._blocked: dict[int, tuple[BaseGeometry, list[list[bool]], list[list[tuple[int, float]]]]] = {}
        """Per core (by id, with the core itself to tell a reused id): see blocked_edges() and _open_edges()."""
        self._exits = self.exits.tolist()  # the same flags, read node by node without a numpy scalar each

    def blocked_edges(self, core: BaseGeometry) -> list[list[bool]]:
        """For every edge in ``adj`` order (``[u][k]`` for ``adj[u][k]``), whether the straight drive from ``u``
        to its neighbour enters ``core``: one vectorised test per core, kept while that core is, instead of a
        line built and tested for every edge each search relaxes (most of a proof's cost)."""
        return self._edges(core)[0]

    def _open_edges(self, core: BaseGeometry) -> list[list[tuple[int, float]]]:
        """For every node, its edges (neighbour, length) in ``adj`` order whose straight drive stays out of ``core``:
        what a search off ``core`` may relax, filtered once per core rather than tested edge by edge in every one."""
        return self._edges(core)[1]

    def _edges(self, core: BaseGeometry) -> tuple[list[list[bool]], list[list[tuple[int, float]]]]:
        hit = self._blocked.get(id(core))
        if hit is not None and hit[0] is core:
            return hit[1], hit[2]
        us = [u for u, nbrs in enumerate(self.adj) for _ in nbrs]
        vs = [v for nbrs in self.adj for v, _ in nbrs]
        if us:
            # the same lines the search built, one per directed edge (from ``u`` to ``v``)
            lines = shapely.linestrings(np.stack([self.xy[us], self.xy[vs]], axis=1))
            flat = np.asarray(shapely.intersects(lines, core)).tolist()
        else:
            flat = []
        out: list[list[bool]] = []
        k = 0
        for nbrs in self.adj:
            out.append(flat[k : k + len(nbrs)])
            k += len(nbrs)
        open_edges = [
            [edge for edge, cut in zip(nbrs, cuts, strict=True) if not cut]
            for nbrs, cuts in zip(self.adj, out, strict=True)
        ]
        if len(self._blocked) >= 64:
            self._blocked.clear()
        self._blocked[id(core)] = (core, out, open_edges)
        return out, open_edges

    def core(self, fence: Fence, edge_m: float) -> BaseGeometry:
        """The fence shrunk by ``edge_m`` in the graph's plane, prepared; kept per fence (every judgement of a fence
        needs it, and building it, a projection and a negative buffer, cost more than the rest of most judgements).
        """
        return self._core(fence, edge_m)[0]

    def core_bounds(self, fence: Fence, edge_m: float) -> tuple[float, float, float, float]:
        """The bounding box of :meth:`core` (x0, y0, x1, y1 in the graph's plane; NaN when the core is empty)."""
        return self._core(fence, edge_m)[1]

    def _core(self, fence: Fence, edge_m: float) -> tuple[BaseGeometry, tuple[float, float, float, float]]:
        key = (fence.id, edge_m)
        hit = self._cores.get(key)
        if hit is not None and hit[0] is fence.geometry:
            return hit[1], hit[2]
        core = shapely.make_valid(self.proj.project(fence.geometry)).buffer(-edge_m)
        shapely.prepare(core)
        b = core.bounds
        box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
        self._cores[key] = (fence.geometry, core, box)
        return core, box

    @classmethod
    def build(cls, fences: Iterable[Fence], params: ReachParams | None = None) -> CorridorGraph | None:
        """The graph of a port's corridors; None when there is no centre line to build on.

        Outside the port boundary the public streets are not mapped, so a vehicle is free to move there: the
        nodes outside the boundary, and those within ``exit_m`` of a gate (where the roads leave the port), are
        exits between which a path may run straight through the city.
        """
        p = params or ReachParams()
        fences = list(fences)
        centre = [f.centerline for f in fences if f.kind is FenceKind.CORRIDOR and f.centerline is not None]
        if not centre:
            return None
        proj = LocalProjection.around(shapely.union_all(centre))
        lines = [ln for g in centre for ln in _lines(proj.project(g))]
        tree = shapely.STRtree(lines)
        links: list[LineString] = []
        for i, ln in enumerate(lines):
            for end in (Point(ln.coords[0]), Point(ln.coords[-1])):
                for j in tree.query(end, predicate="dwithin", distance=p.snap_m):
                    other = lines[int(j)]
                    d = other.distance(end)
                    if int(j) != i and 0 < d <= p.snap_m:
                        links.append(LineString([end, other.interpolate(other.project(end))]))
        noded = shapely.union_all(lines + links)
        key: dict[tuple[float, float], int] = {}
        coords: list[tuple[float, float]] = []
        edges: dict[tuple[int, int], float] = {}

        def node(x: float, y: float) -> int:
            k = (round(x, 1), round(y, 1))
            idx = key.get(k)
            if idx is None:
                idx = key[k] = len(coords)
                coords.append((x, y))
            return idx

        for seg in _lines(noded):
            dense = shapely.segmentize(seg, p.densify_m)
            pts = list(dense.coords)
            for a, b in itertools.pairwise(pts):
                u, v = node(float(a[0]), float(a[1])), node(float(b[0]), float(b[1]))
                if u != v:
                    edges[(min(u, v), max(u, v))] = math.dist(a, b)
        adj: list[list[tuple[int, float]]] = [[] for _ in coords]
        for (u, v), w in edges.items():
            adj[u].append((v, w))
            adj[v].append((u, w))
        xy = np.array(coords, dtype=np.float64).reshape(-1, 2)
        bounds = [shapely.make_valid(proj.project(f.geometry)) for f in fences if f.kind is FenceKind.PORT_BOUNDARY]
        gates = [proj.project(f.geometry) for f in fences if f.kind is FenceKind.GATE]
        inside = shapely.union_all(bounds) if bounds else None
        exits = np.zeros(len(xy), dtype=np.bool_)
        if inside is not None:
            shapely.prepare(inside)
            exits |= ~np.asarray(shapely.contains_xy(inside, xy[:, 0], xy[:, 1]))
        if gates:
            exits |= np.asarray(shapely.dwithin(shapely.union_all(gates), shapely.points(xy), p.exit_m))
        return cls(proj, xy, adj, exits, inside)

    def _access(
        self, xy: tuple[float, float], core: BaseGeometry, budget_room: BoolArray, limit: float
    ) -> list[tuple[int, float]]:
        """Nodes reachable from ``xy`` by a straight drive of at most ``limit`` that stays out of ``core``."""
        d = np.hypot(self.xy[:, 0] - xy[0], self.xy[:, 1] - xy[1])
        near = np.flatnonzero((d <= limit) & budget_room)
        if len(near) == 0:
            return []
        spurs = shapely.linestrings(
            np.stack([np.tile(np.array(xy), (len(near), 1)), self.xy[near]], axis=1).reshape(len(near), 2, 2)
        )
        clear = ~np.asarray(shapely.intersects(spurs, core))
        return [(int(n), float(d[n])) for n in near[clear].tolist()]

    def reaches(self, xy: tuple[float, float], core: BaseGeometry, metres: float) -> bool:
        """Whether a straight drive of at most ``metres`` from ``xy`` reaches a graph node without entering
        ``core``: some mapped road can be joined on this side of the fence."""
        return bool(self._access(xy, core, np.ones(len(self.xy), dtype=np.bool_), metres))

    def near(self, xy: tuple[float, float], metres: float) -> bool:
        """Whether a graph node lies within ``metres`` of ``xy``."""
        return bool(len(self.xy)) and float(np.min(np.hypot(self.xy[:, 0] - xy[0], self.xy[:, 1] - xy[1]))) <= metres

    def outside(self, xy: tuple[float, float]) -> bool:
        """Whether a point lies outside the port, where the streets are not mapped."""
        return self.inside is not None and not bool(shapely.contains_xy(self.inside, xy[0], xy[1]))

    def _spread(
        self, starts: list[tuple[int, float]], room: BoolArray, core: BaseGeometry, bound: FloatArray, budget: float
    ) -> dict[int, float]:
        """Dijkstra from ``starts`` over the nodes in ``room``, off ``core``, pruned by ``d + bound > budget``."""
        dist: dict[int, float] = {}
        heap = [(w, n) for n, w in starts]
        heapq.heapify(heap)
        edges = self._open_edges(core)  # the edges a drive off ``core`` may take, filtered once per core
        # ``open_room[v]``: v is in ``room`` and not settled yet (a settled node is never relaxed into again), the two
        # tests of the textbook loop in one list read; the same pushes in the same order, so the same distances
        open_room = room.tolist()
        bounds = bound.tolist()
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            d, u = pop(heap)
            if u in dist:
                continue
            dist[u] = d
            open_room[u] = False
            for v, w in edges[u]:
                if not open_room[v]:
                    continue
                nd = d + w
                if nd + bounds[v] > budget:
                    continue
                push(heap, (nd, v))
        return dist

    def shortest_avoiding(
        self,
        a: tuple[float, float],
        b: tuple[float, float],
        core: BaseGeometry,
        budget: float,
        access_m: float | tuple[float, float],
    ) -> float | None:
        """Length of the shortest path a -> b that stays out of ``core`` and fits ``budget``, along the graph (plus
        access drives), or through the unmapped city between two exits (straight, a lower bound of any street
        path); None when none does. ``access_m``: one limit for both fixes, or (a's, b's)."""
        if len(self.xy) == 0:
            return None
        lim_a, lim_b = access_m if isinstance(access_m, tuple) else (access_m, access_m)
        shapely.prepare(core)
        da = np.hypot(self.xy[:, 0] - a[0], self.xy[:, 1] - a[1])
        db = np.hypot(self.xy[:, 0] - b[0], self.xy[:, 1] - b[1])
        room = da + db <= budget  # outside the ellipse no path through the node fits the time
        if not core.is_empty:
            room &= ~np.asarray(shapely.contains_xy(core, self.xy[:, 0], self.xy[:, 1]))
        from_a = self._spread(self._access(a, core, room, lim_a), room, core, db, budget)
        from_b = self._spread(self._access(b, core, room, lim_b), room, core, da, budget)
        # (the nodes both searches reached, in any order: a minimum does not depend on it)
        best = min((from_a[n] + from_b[n] for n in from_a.keys() & from_b.keys()), default=None)
        # through the city: from an exit reached from a (or a itself) to one reached from b (or b itself)
        exits = self._exits
        na = [n for n in from_a if exits[n]]
        nb = [n for n in from_b if exits[n]]
        # a fix off the corridors may be on a street the fence set does not map, which joins the city: the fix
        # itself is a point such a drive may start or end at (an exit to an exit straight through the port is not)
        pa = (np.vstack([self.xy[na], np.array(a, dtype=np.float64)]), [*(from_a[n] for n in na), 0.0])
        pb = (np.vstack([self.xy[nb], np.array(b, dtype=np.float64)]), [*(from_b[n] for n in nb), 0.0])
        city = self._city(pa, pb, core, budget if best is None else min(best, budget))
        if city is not None:
            best = city if best is None else min(best, city)
        return best if best is not None and best <= budget else None

    @staticmethod
    def _city(
        pa: tuple[FloatArray, list[float]], pb: tuple[FloatArray, list[float]], core: BaseGeometry, budget: float
    ) -> float | None:
        """Cheapest a-exit + straight drive + b-exit within ``budget`` whose straight drive does not cross ``core``
        (a street round the fence through the city is a chain of such drives between exits). ``pa``, ``pb``: the
        points (one row each, the fix itself last) and the distances driven to them from that fix."""
        xa, da_list = pa
        xb, db_list = pb
        da, db = np.array(da_list), np.array(db_list)
        # The last point of each side is its fix (driven 0 m), and every distance driven from a fix is the length of
        # a chain of straight drives, never shorter than the straight line from the fix: so a pair (i, j) costs at
        # least ``da[i]`` plus the straight line from point i to b's fix (triangle inequality), and ``db[j]`` plus the
        # one from a's fix to point j. A point whose bound exceeds the budget by more than any rounding (one part in
        # 1e9 and a micrometre, as ``geofences.within_m`` allows) is in no pair that fits: it is left out before the
        # matrix of every pair is built, which for a budget about the shortest corridor path (a few per cent above
        # the straight line) leaves the few exits near the line out of hundreds. The answer is the same: the least
        # cost among pairs within budget whose drive is clear, as the first clear one in order of cost.
        a, b = xa[-1], xb[-1]
        limit = budget * (1 + 1e-9) + 1e-6
        keep_a = np.flatnonzero(da + np.hypot(xa[:, 0] - b[0], xa[:, 1] - b[1]) <= limit)
        keep_b = np.flatnonzero(db + np.hypot(xb[:, 0] - a[0], xb[:, 1] - a[1]) <= limit)
        if len(keep_a) == 0 or len(keep_b) == 0:
            return None
        xa, da, xb, db = xa[keep_a], da[keep_a], xb[keep_b], db[keep_b]
        cost = da[:, None] + np.hypot(xa[:, None, 0] - xb[None, :, 0], xa[:, None, 1] - xb[None, :, 1]) + db[None, :]
        flat = np.flatnonzero(cost.ravel() <= budget)
        order = flat[np.argsort(cost.ravel()[flat], kind="stable")]
        for chunk in range(0, len(order), 256):
            idx = order[chunk : chunk + 256]
            i, j = np.divmod(idx, len(db))
            segs = shapely.linestrings(np.stack([xa[i], xb[j]], axis=1))
            clear = np.flatnonzero(~np.asarray(shapely.intersects(segs, core)))
            if len(clear):
                return float(cost.ravel()[idx[clear[0]]])
        return None


def _core(graph: CorridorGraph | None, fence: Fence, proj: LocalProjection, edge_m: float) -> BaseGeometry:
    if graph is not None:
        return graph.core(fence, edge_m)
    return shapely.make_valid(proj.project(fence.geometry)).buffer(-edge_m)


_BOX_MARGIN_M = 1e-3
"""How far :func:`_misses_box` grows the box before it rules a segment out: a millimetre, far beyond the rounding of
its products (about 1e-7 m for a segment over a metre long on a port's plane), so "misses" is never a rounding
artefact."""


def _misses_box(ax: float, ay: float, bx: float, by: float, x0: float, y0: float, x1: float, y1: float) -> bool:
    """Whether the segment from (ax, ay) to (bx, by), whose own box meets the box (x0, y0)-(x1, y1), passes beside it:
    all four corners of the box (grown by :data:`_BOX_MARGIN_M`) lie strictly on one side of the segment's line (the
    last separating axis of a segment and a box, once their boxes meet). A fence's core lies inside its box, so no
    geometry is needed to know the segment misses the core (one in ten of the chords that reach a core's box in the
    simulator's replay: most of those run along a road beside the fence, and only the geometry can tell). False
    (look at the geometry) for a segment under a metre, whose direction the rounding could turn."""
    dx, dy = bx - ax, by - ay
    if abs(dx) + abs(dy) < 1.0:
        return False
    m = _BOX_MARGIN_M
    lo_x, hi_x, lo_y, hi_y = x0 - m - ax, x1 + m - ax, y0 - m - ay, y1 + m - ay
    s1 = dx * lo_y - dy * lo_x
    s2 = dx * lo_y - dy * hi_x
    s3 = dx * hi_y - dy * lo_x
    s4 = dx * hi_y - dy * hi_x
    return (s1 > 0 and s2 > 0 and s3 > 0 and s4 > 0) or (s1 < 0 and s2 < 0 and s3 < 0 and s4 < 0)


def chord_through(
    graph: CorridorGraph | None, fence: Fence, a: _LonLat, b: _LonLat, params: ReachParams | None = None
) -> float:
    """Length (m) of the straight line between two fixes inside the fence's core, whatever the roads (0: none)."""
    p = params or ReachParams()
    proj = graph.proj if graph is not None else LocalProjection(a.lon, a.lat)
    ax, ay = proj.xy(a.lon, a.lat)
    bx, by = proj.xy(b.lon, b.lat)
    if graph is not None:
        # most chords that reach the fence's box miss its core's box (asked at every fix near a watched fence):
        # no geometry is needed for those; an empty core has a NaN box, which no comparison passes
        x0, y0, x1, y1 = graph.core_bounds(fence, p.edge_tolerance_m)
        if not (min(ax, bx) <= x1 and max(ax, bx) >= x0 and min(ay, by) <= y1 and max(ay, by) >= y0):
            return 0.0
        if _misses_box(ax, ay, bx, by, x0, y0, x1, y1):
            return 0.0
        core = graph.core(fence, p.edge_tolerance_m)  # (not empty: an empty core's NaN box passes no test above)
    else:
        core = _core(graph, fence, proj, p.edge_tolerance_m)
        if core.is_empty:
            return 0.0
    chord = LineString([(ax, ay), (bx, by)])
    if not chord.intersects(core):
        return 0.0
    return float(chord.intersection(core).length)


def chord_enters(
    fence: Fence, a: _LonLat, b: _LonLat, params: ReachParams | None = None, graph: CorridorGraph | None = None
) -> bool:
    """Whether the straight line between two fixes runs through the fence's core (whatever the roads)."""
    return chord_through(graph, fence, a, b, params) > 0.0


def judge(
    graph: CorridorGraph | None,
    fence: Fence,
    a: tuple[float, float, float],
    b: tuple[float, float, float],
    params: ReachParams | None = None,
    places: BaseGeometry | None = None,
) -> Verdict:
    """Whether a device at ``a`` then ``b`` ((lon, lat, epoch s) each) must have passed through ``fence``.

    ``places``: the union (lon/lat) of the port's fences a vehicle uses off the roads; a fix inside one joins the
    graph by a drive of up to ``yard_access_m``, any other fix must be within ``access_m`` of a corridor or the
    corridors say nothing about where it drove (an unmapped street, a multipath fix thrown off the roads).
    """
    p = params or ReachParams()
    gap = b[2] - a[2]
    proj = graph.proj if graph is not None else LocalProjection(a[0], a[1])
    ax, ay = proj.xy(a[0], a[1])
    bx, by = proj.xy(b[0], b[1])
    straight = math.dist((ax, ay), (bx, by))
    budget = p.max_speed_ms * max(gap, 0.0) + p.gps_slack_m
    if gap < p.min_gap_s or gap > p.max_gap_s:
        return Verdict(False, "gap_out_of_range", gap, budget, straight)
    if straight > budget:
        return Verdict(False, "implausible", gap, budget, straight)
    core = _core(graph, fence, proj, p.edge_tolerance_m)
    if core.is_empty:
        return Verdict(False, "fence_too_narrow", gap, budget, straight)
    if shapely.contains_xy(core, ax, ay) or shapely.contains_xy(core, bx, by):
        return Verdict(False, "fix_inside", gap, budget, straight)  # an entry or exit: the membership's business
    chord = LineString([(ax, ay), (bx, by)])
    inside = chord.intersection(core)
    if inside.is_empty:
        return Verdict(False, "straight_line_avoids", gap, budget, straight)
    if graph is None:  # no roads known: open ground around the fence cannot be ruled out
        return Verdict(False, "no_corridors", gap, budget, straight, None, inside.length)
    reach: list[float] = []
    for (lon, lat), xy in (((a[0], a[1]), (ax, ay)), ((b[0], b[1]), (bx, by))):
        in_place = places is not None and bool(shapely.contains_xy(places, lon, lat))
        limit = p.yard_access_m if in_place else p.access_m
        if not graph.near(xy, limit):
            return Verdict(False, "off_network", gap, budget, straight, None, inside.length)
        if not graph.outside(xy) and not graph.reaches(xy, core, limit):
            # every road within reach is across the fence: where the fix stands, the fence set maps no way out
            return Verdict(False, "cut_off", gap, budget, straight, None, inside.length)
        reach.append(limit)
    avoiding = graph.shortest_avoiding((ax, ay), (bx, by), core, budget, (reach[0], reach[1]))
    if avoiding is not None:
        return Verdict(False, "corridor_path_avoids", gap, budget, straight, avoiding, inside.length)
    return Verdict(True, "every_path_enters", gap, budget, straight, None, inside.length)
