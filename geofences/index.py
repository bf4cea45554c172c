"""Spatial index answering "which fences is this fix in" for one fix or a whole batch.

Raw point-in-polygon membership flaps when a truck waits on a fence boundary: ±15 m of GPS noise moves
the fix in and out on every ping, and each flap would be an alert. The index therefore applies
hysteresis: entering needs the raw geometry, leaving needs the fix to be clear of the geometry grown by
``hysteresis_m``. Choose ``hysteresis_m`` above the expected noise (2 sigma of the receivers in use).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from geofences.fence import Fence, FenceKind
from geofences.geo import buffer_m

__all__ = ["FenceIndex"]


class FenceIndex:
    """Immutable after construction, so one instance can be shared by every device's state machine."""

    def __init__(
        self,
        fences: Iterable[Fence],
        *,
        hysteresis_m: float = 25.0,
        entry_margin_m: float = 0.0,
        entry_margin_kinds: frozenset[FenceKind] = frozenset({FenceKind.RESTRICTED}),
    ) -> None:
        if hysteresis_m < 0:
            raise ValueError(f"hysteresis_m must be >= 0, got {hysteresis_m}")
        if entry_margin_m < 0:
            raise ValueError(f"entry_margin_m must be >= 0, got {entry_margin_m}")
        self._fences: tuple[Fence, ...] = tuple(fences)
        self._by_id: dict[str, int] = {}
        for i, f in enumerate(self._fences):
            if f.id in self._by_id:
                # ids are only unique within a set; two ports sharing an id would make alerts ambiguous
                first = self._fences[self._by_id[f.id]]
                raise ValueError(f"duplicate fence id {f.id!r} (ports {first.port!r} and {f.port!r})")
            self._by_id[f.id] = i
        self.hysteresis_m = hysteresis_m
        self._ids = np.array([f.id for f in self._fences], dtype=object)
        self._geoms = np.array([f.geometry for f in self._fences], dtype=object)
        self._outer = np.array(
            [buffer_m(f.geometry, hysteresis_m) if hysteresis_m > 0 else f.geometry for f in self._fences],
            dtype=object,
        )
        # Entering a fence of ``entry_margin_kinds`` takes a fix this far inside (where the fence is wide
        # enough to have such an inside): a truck parked beside a restricted lot, with GPS noise, would
        # otherwise "enter" it now and then, each time a high-severity alarm. Roads and yards are entered
        # at their edge: a route check must not think a truck on a wide road's shoulder is off it.
        # Leaving always takes hysteresis_m outside.
        self.entry_margin_m = entry_margin_m
        inner = []
        for f in self._fences:
            margin = entry_margin_m if f.kind in entry_margin_kinds else 0.0
            shrunk = buffer_m(f.geometry, -margin) if margin > 0 else f.geometry
            inner.append(f.geometry if shrunk.is_empty else shrunk)
        self._inner = np.array(inner, dtype=object)
        shapely.prepare(self._geoms)
        shapely.prepare(self._outer)
        shapely.prepare(self._inner)
        self._tree = shapely.STRtree(self._geoms)
        self._outer_tree = shapely.STRtree(self._outer)

    @property
    def fences(self) -> tuple[Fence, ...]:
        return self._fences

    def get(self, fence_id: str) -> Fence:
        return self._fences[self._by_id[fence_id]]

    def outer_geometry(self, fence_id: str) -> BaseGeometry:
        """The geometry a device must leave before an exit counts."""
        outer: BaseGeometry = self._outer[self._by_id[fence_id]]
        return outer

    def __len__(self) -> int:
        return len(self._fences)

    def __contains__(self, fence_id: object) -> bool:
        return fence_id in self._by_id

    def _hits(self, tree: shapely.STRtree, lons: Any, lats: Any) -> list[set[str]]:
        points = shapely.points(np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64))
        points = np.atleast_1d(points)
        out: list[set[str]] = [set() for _ in range(len(points))]
        if len(self._fences) == 0 or len(points) == 0:
            return out
        # one vectorised query for the whole batch; "intersects" counts a fix exactly on the boundary as
        # inside, which is what a guard at the gate line would say too
        point_idx, fence_idx = tree.query(points, predicate="intersects")
        for p, f in zip(point_idx.tolist(), fence_idx.tolist(), strict=True):
            out[p].add(self._ids[f])
        return out

    def fences_at(self, lons: Any, lats: Any) -> list[frozenset[str]]:
        """Raw membership (no hysteresis) for each fix of a batch."""
        return [frozenset(s) for s in self._hits(self._tree, lons, lats)]

    def membership(self, lon: float, lat: float, previous: frozenset[str]) -> frozenset[str]:
        """Membership with hysteresis, given the membership after the device's previous fix.

        Ids in ``previous`` that this index does not know are dropped, so reloading a fence set with a
        fence removed ends that membership instead of keeping it forever.
        """
        return self.membership_batch([lon], [lat], [previous])[0]

    def membership_batch(
        self, lons: Any, lats: Any, previous: Sequence[frozenset[str]]
    ) -> list[frozenset[str]]:
        """Hysteresis membership for many devices at once (one fix each, each with its own previous)."""
        raw = self._hits(self._tree, lons, lats)
        if len(previous) != len(raw):
            raise ValueError(f"got {len(raw)} fixes but {len(previous)} previous memberships")
        need_outer = any(previous)
        outer = self._hits(self._outer_tree, lons, lats) if need_outer else None
        lon_list = np.atleast_1d(np.asarray(lons, dtype=np.float64)).tolist()
        lat_list = np.atleast_1d(np.asarray(lats, dtype=np.float64)).tolist()
        result: list[frozenset[str]] = []
        for i, r in enumerate(raw):
            prev = previous[i]
            new = r - prev
            if new and self.entry_margin_m > 0:
                r = (r & prev) | {
                    f
                    for f in new
                    if shapely.intersects_xy(self._inner[self._by_id[f]], lon_list[i], lat_list[i])
                }
            if prev and outer is not None:
                r |= prev & outer[i]
            result.append(frozenset(r))
        return result

    def crossed(
        self, lon0: float, lat0: float, lon1: float, lat1: float, exclude: frozenset[str] = frozenset()
    ) -> tuple[str, ...]:
        """Fences the straight path between two fixes passes through, in the order it meets them.

        With sparse fixes a truck can pass a 20 m gate between two pings and never be seen inside it;
        the straight segment is the best evidence available that it went through. Fences in ``exclude``
        (normally the old and new membership) are already reported as enters/exits.
        """
        if len(self._fences) == 0:
            return ()
        if lon0 == lon1 and lat0 == lat1:
            return ()
        seg = shapely.LineString([(lon0, lat0), (lon1, lat1)])
        hits = self._tree.query(seg, predicate="intersects")
        found: list[tuple[float, str]] = []
        for f in hits.tolist():
            fid: str = self._ids[f]
            if fid in exclude:
                continue
            inter = shapely.intersection(seg, self._geoms[f])
            coords = shapely.get_coordinates(inter)
            # the segment is straight in lon/lat and the local projection is affine per point, so
            # ordering by position along the segment in degrees is the same as ordering in metres
            first = min((seg.project(shapely.Point(c)) for c in coords), default=0.0)
            found.append((first, fid))
        found.sort()
        return tuple(fid for _, fid in found)
