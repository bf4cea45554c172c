"""A routable road graph built from a port's corridor centre lines, plus where trucks go.

Corridor fences are drawn by GIS teams as separate centre lines that rarely share exact end points, so
the graph snaps an end point to any other line passing within ``snap_m`` (a T-junction drawn a few
metres short is still a junction) and nodes crossing lines. Only the largest connected component is
kept: a truck routed onto an island road would teleport. Everything is in a local metric plane so
speeds, offsets and snapping distances are plain metres.

Places (gates, terminals, the inspection area, quays, parking) hang off their nearest road node by a
short access spur; places whose spur would be long are dropped, because a long spur is a truck driving
off the road network and that is exactly what the anomaly detectors look for.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import shapely
import shapely.ops
from shapely.geometry import LineString, MultiLineString, Point
from shapely.geometry.base import BaseGeometry

from geofences import Fence, FenceKind, FenceSet, LocalProjection
from tracker.core.detector import AUTHORIZED_STOP_KINDS

SNAP_M = 15.0
"""End points closer than this to another line are joined to it (typical digitising slack)."""

MAX_SPUR_M = 150.0
"""A place further than this from any road node is not used as a destination."""

Path = list[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Place:
    """A destination polygon and how a truck reaches it: ``node`` on the graph, ``anchor`` inside it."""

    fence_id: str
    kind: FenceKind
    node: int
    anchor: tuple[float, float]
    geometry: BaseGeometry  # projected (metres)
    axis: tuple[tuple[float, float], tuple[float, float]]  # long axis, for queues creeping through a gate
    authorized: bool  # standing still here raises nothing


@dataclass
class RoadGraph:
    proj: LocalProjection
    xy: np.ndarray  # (N, 2) node coordinates in metres
    adj: list[list[tuple[int, float]]]
    places: dict[FenceKind, list[Place]]
    boundary: BaseGeometry  # port boundary, projected
    authorized: BaseGeometry  # union of the zones where stopping is authorized, projected
    corridors: BaseGeometry  # union of the corridor bands, projected
    restricted: BaseGeometry = field(default_factory=shapely.GeometryCollection)  # union of restricted fences
    fences: BaseGeometry = field(default_factory=shapely.GeometryCollection)  # union of every fence of the port
    _trees: dict[int, tuple[list[float], list[int]]] = field(default_factory=dict, repr=False)

    def _tree(self, src: int) -> tuple[list[float], list[int]]:
        """Single-source Dijkstra, cached: a port has ~100 places, so trips reuse a few dozen trees."""
        hit = self._trees.get(src)
        if hit is not None:
            return hit
        n = len(self.adj)
        dist = [math.inf] * n
        prev = [-1] * n
        dist[src] = 0.0
        heap = [(0.0, src)]
        while heap:
            d, u = heapq.heappop(heap)
            if d > dist[u]:
                continue
            for v, w in self.adj[u]:
                nd = d + w
                if nd < dist[v]:
                    dist[v] = nd
                    prev[v] = u
                    heapq.heappush(heap, (nd, v))
        self._trees[src] = (dist, prev)
        return dist, prev

    def route(self, a: int, b: int) -> list[int]:
        """Node ids from ``a`` to ``b`` inclusive (the graph is connected, so a route always exists)."""
        _, prev = self._tree(a)
        out = [b]
        while out[-1] != a:
            out.append(prev[out[-1]])
        out.reverse()
        return out

    def distance(self, a: int, b: int) -> float:
        return self._tree(a)[0][b]

    def path(self, nodes: list[int]) -> Path:
        return [(float(self.xy[i, 0]), float(self.xy[i, 1])) for i in nodes]

    def nearest_node(self, x: float, y: float) -> int:
        d = (self.xy[:, 0] - x) ** 2 + (self.xy[:, 1] - y) ** 2
        return int(np.argmin(d))

    def is_authorized(self, x: float, y: float) -> bool:
        return bool(shapely.contains_xy(self.authorized, x, y))

    def in_boundary(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.asarray(shapely.contains_xy(self.boundary, x, y))


def _lines(geom: BaseGeometry) -> list[LineString]:
    if isinstance(geom, LineString):
        return [geom]
    if isinstance(geom, MultiLineString):
        return list(geom.geoms)
    return [g for part in getattr(geom, "geoms", []) for g in _lines(part)]


AXIS_INSET_M = (8.0, 5.0, 3.0, 1.0)
"""How far inside its polygon a place's axis is kept, most preferred first: GPS noise around a point on the
edge puts half the fixes outside, and a fence is entered only by a fix inside it."""


def _axis(poly: BaseGeometry) -> tuple[tuple[float, float], tuple[float, float]]:
    """The long axis of the polygon, clipped to lie well inside it.

    The axis of the minimum rotated rectangle ends on the rectangle's short edges, which for any polygon other
    than a rectangle lie on or outside its boundary; a gate queue starting there would stand outside the gate,
    an unauthorized stop on the road.
    """
    a, b = _rect_axis(poly)
    line = LineString([a, b])
    for inset in AXIS_INSET_M:
        inner = poly.buffer(-inset)
        if inner.is_empty:
            continue
        pieces = [ln for ln in _lines(line.intersection(inner)) if ln.length > 0]
        if not pieces:
            continue
        piece = max(pieces, key=lambda ln: ln.length)
        if piece.length < 0.25 * line.length:
            continue
        p, q = piece.coords[0], piece.coords[-1]
        # keep the orientation of the full axis, so callers' outer/inner ordering is unaffected
        if math.dist(p, a) > math.dist(q, a):
            p, q = q, p
        return (float(p[0]), float(p[1])), (float(q[0]), float(q[1]))
    return a, b


def _rect_axis(poly: BaseGeometry) -> tuple[tuple[float, float], tuple[float, float]]:
    rect = poly.minimum_rotated_rectangle
    c = list(rect.exterior.coords)[:4]
    e1 = math.dist(c[0], c[1])
    e2 = math.dist(c[1], c[2])
    if e1 >= e2:  # the long axis joins the midpoints of the two short edges
        a = ((c[1][0] + c[2][0]) / 2, (c[1][1] + c[2][1]) / 2)
        b = ((c[3][0] + c[0][0]) / 2, (c[3][1] + c[0][1]) / 2)
    else:
        a = ((c[0][0] + c[1][0]) / 2, (c[0][1] + c[1][1]) / 2)
        b = ((c[2][0] + c[3][0]) / 2, (c[2][1] + c[3][1]) / 2)
    return a, b


def _anchor(poly: BaseGeometry, node_xy: tuple[float, float]) -> tuple[float, float]:
    """A point well inside the polygon, on the side facing the road, so the spur is short."""
    node = Point(node_xy)
    for inset in (15.0, 8.0, 3.0):
        inner = poly.buffer(-inset)
        if not inner.is_empty:
            p = shapely.ops.nearest_points(inner, node)[0]
            return float(p.x), float(p.y)
    p = poly.representative_point()
    return float(p.x), float(p.y)


def build(fences: FenceSet, snap_m: float = SNAP_M, max_spur_m: float = MAX_SPUR_M) -> RoadGraph:
    corridors = [f for f in fences.fences if f.kind is FenceKind.CORRIDOR and f.centerline is not None]
    if not corridors:
        raise ValueError(f"port {fences.port!r} has no corridor centre lines to route on")
    proj = LocalProjection.around(shapely.union_all([f.centerline for f in corridors]))
    lines: list[LineString] = []
    for f in corridors:
        lines.extend(_lines(proj.project(f.centerline)))
    lines = [ln for ln in lines if ln.length > 0]
    # joins: each end point within snap_m of another line gets a connector to its nearest point there
    tree = shapely.STRtree(lines)
    connectors: list[LineString] = []
    for i, ln in enumerate(lines):
        for end in (Point(ln.coords[0]), Point(ln.coords[-1])):
            for j in tree.query(end, predicate="dwithin", distance=snap_m):
                if j == i:
                    continue
                other = lines[int(j)]
                d = other.distance(end)
                if 0 < d <= snap_m:
                    q = other.interpolate(other.project(end))
                    connectors.append(LineString([end, q]))
    noded = shapely.union_all(lines + connectors)  # nodes every crossing and every connector foot
    key: dict[tuple[float, float], int] = {}
    coords: list[tuple[float, float]] = []
    edges: dict[tuple[int, int], float] = {}

    def node_of(p: tuple[float, float]) -> int:
        k = (round(p[0], 1), round(p[1], 1))
        idx = key.get(k)
        if idx is None:
            idx = key[k] = len(coords)
            coords.append((float(p[0]), float(p[1])))
        return idx

    boundaries = [
        shapely.make_valid(proj.project(f.geometry)) for f in fences.fences if f.kind is FenceKind.PORT_BOUNDARY
    ]
    boundary = shapely.union_all(boundaries) if boundaries else shapely.box(-1e7, -1e7, 1e7, 1e7)
    shapely.prepare(boundary)
    for seg in _lines(noded):
        pts = list(seg.coords)
        for p, q in itertools.pairwise(pts):
            if not (shapely.contains_xy(boundary, p[0], p[1]) and shapely.contains_xy(boundary, q[0], q[1])):
                continue  # clean trips stay inside the port: roads leaving it are not routable
            u, v = node_of((p[0], p[1])), node_of((q[0], q[1]))
            if u != v:
                w = math.dist(p, q)
                edges[(min(u, v), max(u, v))] = w
    n = len(coords)
    adj_all: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for (u, v), w in edges.items():
        adj_all[u].append((v, w))
        adj_all[v].append((u, w))
    # largest connected component only
    comp = [-1] * n
    best, best_size = -1, 0
    for s in range(n):
        if comp[s] >= 0:
            continue
        stack, size = [s], 0
        comp[s] = s
        while stack:
            u = stack.pop()
            size += 1
            for v, _ in adj_all[u]:
                if comp[v] < 0:
                    comp[v] = s
                    stack.append(v)
        if size > best_size:
            best, best_size = s, size
    keep = [i for i in range(n) if comp[i] == best]
    remap = {old: new for new, old in enumerate(keep)}
    xy = np.array([coords[i] for i in keep], dtype=np.float64)
    adj = [[(remap[v], w) for v, w in adj_all[old]] for old in keep]

    def projected(f: Fence) -> BaseGeometry:
        return shapely.make_valid(proj.project(f.geometry))

    restricted_geoms = [projected(f) for f in fences.fences if f.kind is FenceKind.RESTRICTED]
    restricted = shapely.union_all(restricted_geoms) if restricted_geoms else shapely.GeometryCollection()
    shapely.prepare(restricted)
    every = shapely.union_all([projected(f) for f in fences.fences])
    shapely.prepare(every)
    auth_geoms = [projected(f) for f in fences.fences if f.kind in AUTHORIZED_STOP_KINDS]
    authorized = shapely.union_all(auth_geoms) if auth_geoms else shapely.GeometryCollection()
    shapely.prepare(authorized)
    graph = RoadGraph(
        proj=proj,
        xy=xy,
        adj=adj,
        places={},
        boundary=boundary,
        authorized=authorized,
        corridors=shapely.union_all([projected(f) for f in corridors]),
        restricted=restricted,
        fences=every,
    )
    wanted = {
        FenceKind.GATE,
        FenceKind.TERMINAL,
        FenceKind.INSPECTION_AREA,
        FenceKind.QUAY,
        FenceKind.AUTHORIZED_PARKING,
        FenceKind.CUSTOMS_YARD,
    }
    for f in fences.fences:
        if f.kind not in wanted:
            continue
        poly = projected(f)
        if poly.is_empty or poly.area <= 0:
            continue
        inner_ok = poly.intersection(authorized) if f.kind is FenceKind.QUAY else poly
        found = _access(graph, poly, inner_ok if inner_ok.area > 400.0 else poly, max_spur_m)
        if found is None:
            continue
        node, anchor = found
        place = Place(
            fence_id=f.id,
            kind=f.kind,
            node=node,
            anchor=anchor,
            geometry=poly,
            axis=_axis(poly),
            authorized=graph.is_authorized(*anchor),
        )
        graph.places.setdefault(f.kind, []).append(place)
    return graph


ACCESS_CANDIDATES = 12
"""Road nodes tried, nearest first, when looking for an access spur that stays out of restricted fences."""


def _access(
    graph: RoadGraph, poly: BaseGeometry, target: BaseGeometry, max_spur_m: float
) -> tuple[int, tuple[float, float]] | None:
    """The nearest road node whose straight spur to an anchor inside ``target`` crosses no restricted fence.

    The spur is driven by every clean trip to the place: one that cuts a corner of a restricted area makes a
    routine delivery look like an intrusion, so such a node is skipped for the next nearest one.
    """
    d = np.asarray(shapely.distance(poly, shapely.points(graph.xy)))
    for node in np.argsort(d, kind="stable")[:ACCESS_CANDIDATES].tolist():
        if d[node] > max_spur_m:
            break
        node_xy = (float(graph.xy[node, 0]), float(graph.xy[node, 1]))
        anchor = _anchor(target, node_xy)
        if math.dist(anchor, node_xy) > max_spur_m + 20.0:
            continue
        if graph.restricted.is_empty or not LineString([node_xy, anchor]).intersects(graph.restricted):
            return int(node), anchor
    return None
