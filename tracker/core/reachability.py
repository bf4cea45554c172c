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

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import LineString, MultiLineString, Point
from shapely.geometry.base import BaseGeometry

from geofences import Fence, FenceKind, LocalProjection

__all__ = ["CorridorGraph", "ReachParams", "Verdict", "judge"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class ReachParams:
    """Bounds of the prism. Every figure errs towards "could have avoided it": a false crossing pages an officer."""

    max_speed_ms: float = 20.0
    """Fastest plausible speed between two fixes (72 km/h): port roads are driven at 25-45 km/h, a truck racing
    between two fixes might do 60; above that the fixes are more likely wrong than the driving."""
    min_gap_s: float = 60.0
    """Gaps shorter than this are judged by the straight chord alone (the geofence step's crossing rule)."""
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
    densify_m: float = 25.0
    """Corridor lines are cut into pieces at most this long, so every point of a road is near a graph node."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one judgement: ``crossed`` only when every plausible path enters the fence."""

    crossed: bool
    reason: str  # "straight_line_avoids" | "corridor_path_avoids" | "every_path_enters" | "implausible" | ...
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

    def __init__(self, proj: LocalProjection, xy: FloatArray, adj: list[list[tuple[int, float]]]) -> None:
        self.proj = proj
        self.xy = xy
        self.adj = adj

    @classmethod
    def build(cls, corridors: Iterable[Fence], params: ReachParams | None = None) -> CorridorGraph | None:
        """None when there is no centre line to build on."""
        p = params or ReachParams()
        centre = [f.centerline for f in corridors if f.kind is FenceKind.CORRIDOR and f.centerline is not None]
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
        return cls(proj, np.array(coords, dtype=np.float64).reshape(-1, 2), adj)

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

    def near(self, xy: tuple[float, float], metres: float) -> bool:
        """Whether a graph node lies within ``metres`` of ``xy``."""
        return bool(len(self.xy)) and float(np.min(np.hypot(self.xy[:, 0] - xy[0], self.xy[:, 1] - xy[1]))) <= metres

    def shortest_avoiding(
        self, a: tuple[float, float], b: tuple[float, float], core: BaseGeometry, budget: float, access_m: float
    ) -> float | None:
        """Length of the shortest path a -> b along the graph (plus access drives) that stays out of ``core``
        and fits ``budget``; None when none does."""
        if len(self.xy) == 0:
            return None
        da = np.hypot(self.xy[:, 0] - a[0], self.xy[:, 1] - a[1])
        db = np.hypot(self.xy[:, 0] - b[0], self.xy[:, 1] - b[1])
        room = da + db <= budget  # outside the ellipse no path through the node fits the time
        blocked = np.asarray(shapely.contains_xy(core, self.xy[:, 0], self.xy[:, 1])) if not core.is_empty else None
        if blocked is not None:
            room &= ~blocked
        starts = self._access(a, core, room, access_m)
        ends = dict(self._access(b, core, room, access_m))
        if not starts or not ends:
            return None
        dist: dict[int, float] = {}
        heap = [(w, n) for n, w in starts]
        heapq.heapify(heap)
        best: float | None = None
        prepared = core
        shapely.prepare(prepared)
        while heap:
            d, u = heapq.heappop(heap)
            if u in dist:
                continue
            dist[u] = d
            if best is not None and d >= best:
                break
            if u in ends:
                total = d + ends[u]
                if total <= budget and (best is None or total < best):
                    best = total
            for v, w in self.adj[u]:
                if v in dist or not room[v]:
                    continue
                nd = d + w
                if nd + db[v] > budget:
                    continue
                if shapely.intersects(LineString([self.xy[u], self.xy[v]]), prepared):
                    continue
                heapq.heappush(heap, (nd, v))
        return best


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
    ax, ay = (float(v) for v in proj.to_xy(a[0], a[1]))
    bx, by = (float(v) for v in proj.to_xy(b[0], b[1]))
    straight = math.dist((ax, ay), (bx, by))
    budget = p.max_speed_ms * max(gap, 0.0) + p.gps_slack_m
    if gap < p.min_gap_s or gap > p.max_gap_s:
        return Verdict(False, "gap_out_of_range", gap, budget, straight)
    if straight > budget:
        return Verdict(False, "implausible", gap, budget, straight)
    core = shapely.make_valid(proj.project(fence.geometry)).buffer(-p.edge_tolerance_m)
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
    reach = []
    for (lon, lat), xy in (((a[0], a[1]), (ax, ay)), ((b[0], b[1]), (bx, by))):
        in_place = places is not None and bool(shapely.contains_xy(places, lon, lat))
        limit = p.yard_access_m if in_place else p.access_m
        if not graph.near(xy, limit):
            return Verdict(False, "off_network", gap, budget, straight, None, inside.length)
        reach.append(limit)
    avoiding = graph.shortest_avoiding((ax, ay), (bx, by), core, budget, max(reach))
    if avoiding is not None:
        return Verdict(False, "corridor_path_avoids", gap, budget, straight, avoiding, inside.length)
    return Verdict(True, "every_path_enters", gap, budget, straight, None, inside.length)
