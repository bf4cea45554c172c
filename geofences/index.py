"""Spatial index answering "which fences is this fix in" for one fix or a whole batch.

Raw point-in-polygon membership flaps when a truck waits on a fence boundary: ±15 m of GPS noise moves
the fix in and out on every ping, and each flap would be an alert. The index therefore applies
hysteresis: entering needs the raw geometry, leaving needs the fix to be clear of the geometry grown by
``hysteresis_m``. Choose ``hysteresis_m`` above the expected noise (2 sigma of the receivers in use).

Point lookups go through a grid of cells (:mod:`geofences.cells`) rather than the STRtree: it needs no
shapely Point per fix and skips the exact test wherever a cell lies wholly inside a fence, which in a
port is most of the time. The batch methods answer a whole batch with a handful of numpy and shapely
calls; the one-fix methods give the same answers fix by fix (tests/unit/test_index_batch.py compares
both with a plain STRtree evaluation).

Segments (crossings between two fixes) are walked through a finer grid of their own
(:mod:`geofences.segments`, built on first use), so that one fix's hop needs no geometry unless a fence
other than its own lies in a cell it passes; a batch of hops goes through the STRtree at once
(:meth:`FenceIndex.crossings_batch`). tests/unit/test_index_segments.py compares both with the plain
per-segment STRtree evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from geofences.cells import CellGrid, IntArray
from geofences.fence import Fence, FenceKind
from geofences.geo import EARTH_RADIUS_M, buffer_m
from geofences.segments import SegmentGrid

__all__ = ["DEFAULT_CELL_DEG", "FenceIndex"]

DEFAULT_CELL_DEG = 0.0005
"""Side of a grid cell: about 55 m north-south, 50 m east-west at Santos. Measured on the real fences plus
synthetic ones (bench/throughput.py): finer cells build slower for little gain, coarser ones leave more
exact tests per fix."""
_SMALL_BATCH = 4
"""Up to this many fixes the one-fix path is faster than setting up arrays."""
_FEW = 64
"""Up to this many fixes the cells are looked up point by point and only the exact tests are vectorised
(``CellGrid.hits_few``): a replay's micro-batch, or a quiet service's, is a few dozen fixes, where setting up the
arrays of the fully vectorised lookup costs more than the lookups (measured on Santos traffic: about even at 64
fixes, twice as fast at 20, the vectorised lookup ahead from a hundred on)."""
_MAX_INTERNED = 1 << 16
_EMPTY: frozenset[str] = frozenset()
_KY = math.radians(1.0) * EARTH_RADIUS_M  # metres per degree of latitude, as LocalProjection has it
_intersects_xy = shapely.lib.intersects_xy
"""One-point tests on geometries prepared at construction, without ``shapely.intersects_xy``'s wrapper."""


def _coords(lons: Any, lats: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    x, y = np.broadcast_arrays(np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64))
    return np.ascontiguousarray(x).ravel(), np.ascontiguousarray(y).ravel()


def _prefix_ids(f: IntArray, starts: IntArray, lengths: IntArray, nf: int) -> IntArray:
    """One integer per fix naming its sorted fence list, for lists too long to pack into 62 bits.

    The lists are interned one position at a time, like walking a trie: the id after position ``j`` is
    the rank of (id after ``j - 1``, fence at ``j``) among all fixes that have a position ``j``. Equal
    lists get equal ids; the list length is folded in because ids of different positions overlap.
    """
    ids = np.zeros(len(starts), dtype=np.int64)
    longest = int(lengths.max())
    for j in range(longest):
        has = np.flatnonzero(lengths > j)
        _, rank = np.unique(ids[has] * nf + f[starts[has] + j], return_inverse=True)
        ids[has] = rank.ravel()
    out: IntArray = ids * (longest + 1) + lengths
    return out


def _isin_sorted(a: IntArray, b: IntArray) -> npt.NDArray[np.bool_]:
    """Which elements of sorted ``a`` occur in sorted ``b``."""
    if len(b) == 0:
        return np.zeros(len(a), dtype=bool)
    pos = np.minimum(np.searchsorted(b, a), len(b) - 1)
    found: npt.NDArray[np.bool_] = b[pos] == a
    return found


class FenceIndex:
    """Its answers never change after construction, so one instance can be shared by every device's state
    machine (the segment grid, built on first use, and the crossings kept by :meth:`prefetch_crossings` are
    caches of pure functions of the coordinates)."""

    def __init__(
        self,
        fences: Iterable[Fence],
        *,
        hysteresis_m: float = 25.0,
        entry_margin_m: float = 0.0,
        entry_margin_kinds: frozenset[FenceKind] = frozenset({FenceKind.RESTRICTED}),
        cell_deg: float = DEFAULT_CELL_DEG,
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
        self._id_list: list[str] = [f.id for f in self._fences]
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
        self._inner = np.empty(len(inner), dtype=object)
        self._inner[:] = inner
        # only fences whose entry geometry differs from the fence need the extra test on entry
        self._inner_differs = np.array([g is not f.geometry for g, f in zip(inner, self._fences, strict=True)], bool)
        self._inner_ids = frozenset(f.id for f, d in zip(self._fences, self._inner_differs, strict=True) if d)
        shapely.prepare(self._geoms)
        shapely.prepare(self._outer)
        shapely.prepare(self._inner)
        self._tree = shapely.STRtree(self._geoms)  # long jumps and batches of segments; points use the grid
        self._cells = CellGrid(self._geoms, cell_deg=cell_deg)
        self._sets: dict[tuple[int, ...], frozenset[str]] = {}
        self._segments: SegmentGrid | None = None
        self._need: dict[tuple[tuple[FenceKind, float], ...], npt.NDArray[np.float64]] = {}  # see _needs()
        # hops computed ahead for a batch: (crossings, the exclusion assumed, each crossing's part inside in
        # metres of the local projection at the hop's start) per segment
        self._met: dict[
            tuple[float, float, float, float],
            tuple[tuple[tuple[str, BaseGeometry], ...], frozenset[str], tuple[float, ...]],
        ] = {}

    @property
    def fences(self) -> tuple[Fence, ...]:
        return self._fences

    def get(self, fence_id: str) -> Fence:
        return self._fences[self._by_id[fence_id]]

    @property
    def grid(self) -> CellGrid:
        """The cell grid points are located with (its size is what the index costs in memory)."""
        return self._cells

    def outer_geometry(self, fence_id: str) -> BaseGeometry:
        """The geometry a device must leave before an exit counts."""
        outer: BaseGeometry = self._outer[self._by_id[fence_id]]
        return outer

    def __len__(self) -> int:
        return len(self._fences)

    def __contains__(self, fence_id: object) -> bool:
        return fence_id in self._by_id

    # ---- membership -----------------------------------------------------------------------------

    def _frozen(self, combo: tuple[int, ...]) -> frozenset[str]:
        """The id set of fence indices ``combo`` (sorted), shared between fixes: a port has a few hundred
        distinct memberships, and handing out the same object makes the caller's set algebra and hashing
        cheap."""
        got = self._sets.get(combo)
        if got is None:
            if len(self._sets) >= _MAX_INTERNED:
                self._sets.clear()
            got = self._sets[combo] = frozenset(self._id_list[i] for i in combo)
        return got

    def _raw_one(self, x: float, y: float) -> frozenset[str]:
        hits = self._cells.hits_one(x, y)
        if not hits:
            return _EMPTY
        return self._frozen(tuple(sorted(hits)))

    def fences_at(self, lons: Any, lats: Any) -> list[frozenset[str]]:
        """Raw membership (no hysteresis) for each fix of a batch.

        A fix exactly on a fence's boundary is inside it, which is what a guard at the gate line would
        say too.
        """
        x, y = _coords(lons, lats)
        if len(x) <= _SMALL_BATCH:
            return [self._raw_one(a, b) for a, b in zip(x.tolist(), y.tolist(), strict=True)]
        if len(x) <= _FEW:
            frozen = self._frozen
            return [frozen(tuple(sorted(h))) if h else _EMPTY for h in self._cells.hits_few(x.tolist(), y.tolist())]
        p, f = self._cells.hits(x, y)
        return self._sets_of(np.sort(p * len(self._fences) + f), len(x))

    def membership(
        self, lon: float, lat: float, previous: frozenset[str], raw: frozenset[str] | None = None
    ) -> frozenset[str]:
        """Membership with hysteresis, given the membership after the device's previous fix.

        Ids in ``previous`` that this index does not know are dropped, so reloading a fence set with a
        fence removed ends that membership instead of keeping it forever. ``raw``, when given, must be
        ``fences_at`` of this index at this point (computed ahead for a whole batch); it saves the lookup.
        """
        x = float(lon)
        y = float(lat)
        if raw is None:
            raw = self._raw_one(x, y)
        if raw is previous or raw == previous:
            return raw  # (most fixes: in the very fences of the fix before, so nothing is entered or left)
        result = raw
        if self._inner_ids:
            for fid in (raw & self._inner_ids) - previous:
                # entering one of these takes the fix entry_margin_m inside
                if not _intersects_xy(self._inner[self._by_id[fid]], x, y):
                    result = result - {fid}
        for fid in previous - raw:
            # leaving takes the fix hysteresis_m outside
            i = self._by_id.get(fid)
            if i is not None and _intersects_xy(self._outer[i], x, y):
                result = result | {fid}
        return result

    def membership_batch(self, lons: Any, lats: Any, previous: Sequence[frozenset[str]]) -> list[frozenset[str]]:
        """Hysteresis membership for many fixes at once, each with its own previous membership.

        The same answers as :meth:`membership` fix by fix, computed on arrays of (fix, fence) pairs: the
        raw hits, the previous memberships, then exact tests only where they differ (an entry into a
        fence with an entry margin, a fence left by less than the hysteresis).
        """
        x, y = _coords(lons, lats)
        n = len(x)
        if len(previous) != n:
            raise ValueError(f"got {n} fixes but {len(previous)} previous memberships")
        if n <= _SMALL_BATCH:
            return [self.membership(a, b, q) for a, b, q in zip(x.tolist(), y.tolist(), previous, strict=True)]
        nf = len(self._fences)
        p, f = self._cells.hits(x, y)
        raw = np.sort(p * nf + f)
        prev = self._previous_codes(previous)
        in_prev = _isin_sorted(raw, prev)
        parts = [raw[in_prev]]
        entries = raw[~in_prev]
        if len(entries) and self._inner_ids:
            ef = entries % nf
            margin = self._inner_differs[ef]
            parts.append(entries[~margin])
            tested = entries[margin]
            tp = tested // nf
            ok = shapely.intersects_xy(self._inner[ef[margin]], x[tp], y[tp])
            parts.append(tested[ok])
        else:
            parts.append(entries)
        exits = prev[~_isin_sorted(prev, raw)]
        if len(exits):
            xp = exits // nf
            ok = shapely.intersects_xy(self._outer[exits - xp * nf], x[xp], y[xp])
            parts.append(exits[ok])
        return self._sets_of(np.sort(np.concatenate(parts)), n)

    def _previous_codes(self, previous: Sequence[frozenset[str]]) -> IntArray:
        """``fix * len(fences) + fence`` for every known fence of every previous membership, sorted."""
        nf = len(self._fences)
        distinct: dict[frozenset[str], int] = {}
        combos: list[list[int]] = []
        for s in set(previous):
            distinct[s] = len(combos)
            combos.append(sorted(self._by_id[fid] for fid in s if fid in self._by_id))
        qid = np.fromiter(map(distinct.__getitem__, previous), dtype=np.int64, count=len(previous))
        lengths = np.array([len(c) for c in combos], dtype=np.int64)
        if not lengths.any():
            return np.zeros(0, np.int64)
        flat = np.fromiter((i for c in combos for i in c), dtype=np.int64, count=int(lengths.sum()))
        first = np.cumsum(lengths) - lengths
        cnt = lengths[qid]
        rep = np.repeat(np.arange(len(previous), dtype=np.int64), cnt)
        j = np.arange(int(cnt.sum()), dtype=np.int64) + np.repeat(first[qid] - (np.cumsum(cnt) - cnt), cnt)
        codes: IntArray = rep * nf + flat[j]
        return codes

    def _sets_of(self, codes: IntArray, n: int) -> list[frozenset[str]]:
        """Per fix, the id set of the sorted ``fix * len(fences) + fence`` codes.

        Fixes are grouped by their combination of fences first (a port has a few hundred distinct ones),
        so only one frozenset is built per combination, not per fix.
        """
        out = np.empty(n, dtype=object)
        out.fill(_EMPTY)
        if len(codes) == 0:
            result: list[frozenset[str]] = out.tolist()
            return result
        nf = len(self._fences)
        p = codes // nf
        f = codes - p * nf
        starts = np.flatnonzero(np.diff(p, prepend=-1))
        lengths = np.diff(np.append(starts, len(codes)))
        pos = np.arange(len(codes)) - np.repeat(starts, lengths)
        bits = nf.bit_length()
        if int(lengths.max()) * bits <= 62:
            # a fix's sorted fences packed into one integer: exact, and unique() on it is one sort
            key = np.add.reduceat((f + 1) << (pos * bits), starts)
        else:
            key = _prefix_ids(f, starts, lengths, nf)
        _, inverse = np.unique(key, return_inverse=True)
        inverse = inverse.ravel()
        first = np.empty(int(inverse.max()) + 1, dtype=np.int64)
        first[inverse] = np.arange(len(inverse))  # any fix of each combination will do
        sets = np.empty(len(first), dtype=object)
        for k, r in enumerate(first.tolist()):
            a = int(starts[r])
            sets[k] = self._frozen(tuple(f[a : a + int(lengths[r])].tolist()))
        out[p[starts]] = sets[inverse.ravel()]
        result = out.tolist()
        return result

    def crossed(
        self, lon0: float, lat0: float, lon1: float, lat1: float, exclude: frozenset[str] = frozenset()
    ) -> tuple[str, ...]:
        """Fences the straight path between two fixes passes through, in the order it meets them.

        With sparse fixes a truck can pass a 20 m gate between two pings and never be seen inside it;
        the straight segment is the best evidence available that it went through. Fences in ``exclude``
        (normally the old and new membership) are already reported as enters/exits.
        """
        return tuple(fid for fid, _ in self.crossings(lon0, lat0, lon1, lat1, exclude))

    @property
    def segments(self) -> SegmentGrid:
        """The cell grid segments are walked through, built on first use (only crossings need it)."""
        if self._segments is None:
            self._segments = SegmentGrid(self._geoms, self._id_list)
        return self._segments

    def near_segment(self, lon0: float, lat0: float, lon1: float, lat1: float) -> set[str]:
        """Fences the straight segment may meet: every fence it does meet, and some it passes close to.

        No geometry is built: the segment's cells are walked (:mod:`geofences.segments`); a long jump
        is asked of the STRtree by bounding box instead.
        """
        if len(self._fences) == 0:
            return set()
        near = self.segments.near(lon0, lat0, lon1, lat1)
        if near is None:
            box = shapely.box(min(lon0, lon1), min(lat0, lat1), max(lon0, lon1), max(lat0, lat1))
            ids = self._id_list
            near = {ids[f] for f in self._tree.query(box).tolist()}
        return near

    def near_box(self, lon0: float, lat0: float, lon1: float, lat1: float) -> set[str]:
        """Fences whose bounding box meets the segment's: every fence it meets, and more than
        :meth:`near_segment` lists, without the segment grid.

        For a caller that looks up a hop now and then (one the batch did not compute ahead): an STRtree query
        costs a few times a walk of the grid, and building the grid costs as much as a hundred thousand queries.
        """
        if len(self._fences) == 0:
            return set()
        box = shapely.box(min(lon0, lon1), min(lat0, lat1), max(lon0, lon1), max(lat0, lat1))
        ids = self._id_list
        return {ids[f] for f in self._tree.query(box).tolist()}

    def crossings(
        self,
        lon0: float,
        lat0: float,
        lon1: float,
        lat1: float,
        exclude: frozenset[str] = frozenset(),
        among: Iterable[str] | None = None,
    ) -> tuple[tuple[str, BaseGeometry], ...]:
        """:meth:`crossed` with the part of the segment inside each fence, which a caller judging how
        far the path ran inside would otherwise compute a second time.

        ``among``: look only at these fences (a caller that ruled the others out already, from
        :meth:`near_segment`); by default every fence the segment's cells list.
        """
        if len(self._fences) == 0:
            return ()
        if lon0 == lon1 and lat0 == lat1:
            return ()
        if among is None:
            among = self.near_segment(lon0, lat0, lon1, lat1)
        by_id = self._by_id
        near = [by_id[f] for f in among if f not in exclude]
        if not near:
            return ()
        seg = shapely.linestrings([(lon0, lat0), (lon1, lat1)])
        # the exact test on the fences' prepared geometries; normally one or two candidates are left
        geoms = self._geoms[near]
        hit = shapely.intersects(geoms, seg)
        if not hit.any():
            return ()
        hits = [f for f, h in zip(near, hit.tolist(), strict=True) if h]
        inters = shapely.intersection(seg, self._geoms[hits])
        if len(hits) == 1:
            return ((self._id_list[hits[0]], inters[0]),)
        # the segment is straight in lon/lat and the local projection is affine per point, so ordering by
        # position along the segment in degrees is the same as ordering in metres
        coords, part = shapely.get_coordinates(inters, return_index=True)
        first = [0.0] * len(hits)
        if len(coords):
            along = shapely.line_locate_point(seg, shapely.points(coords))
            starts = np.flatnonzero(np.diff(part, prepend=-1))
            for k, v in zip(part[starts].tolist(), np.minimum.reduceat(along, starts).tolist(), strict=True):
                first[k] = v
        ids = self._id_list
        found = [(first[k], ids[f], inters[k]) for k, f in enumerate(hits)]
        found.sort(key=lambda t: (t[0], t[1]))
        return tuple((fid, inter) for _, fid, inter in found)

    def crossings_batch(
        self,
        lon0: Any,
        lat0: Any,
        lon1: Any,
        lat1: Any,
        exclude: Sequence[frozenset[str]] | None = None,
        min_inside_m: Mapping[FenceKind, float] | None = None,
    ) -> list[tuple[tuple[str, BaseGeometry], ...]]:
        """:meth:`crossings` for many segments at once, each with its own ``exclude``, in a handful of shapely calls.

        The bounding-box pairs come from one STRtree query; the excluded ones (normally the fences both ends
        lie in, the port boundary among them, whose intersections would cost the most) are dropped before the
        exact test, as :meth:`crossings` drops them. ``min_inside_m``: a caller that only counts a crossing of
        a fence of kind ``k`` when at least this many metres of the segment run inside it; a segment shorter
        than that (in the local projection at its start, with slack for rounding) is not tested against those
        fences, whose part inside could not be long enough.
        """
        x0, y0 = _coords(lon0, lat0)
        x1, y1 = _coords(lon1, lat1)
        n = len(x0)
        if exclude is not None and len(exclude) != n:
            raise ValueError(f"got {n} segments but {len(exclude)} exclusions")
        out: list[tuple[tuple[str, BaseGeometry], ...]] = [()] * n
        moving = np.flatnonzero((x0 != x1) | (y0 != y1))
        if len(self._fences) == 0 or len(moving) == 0:
            return out
        coords = np.stack([x0[moving], y0[moving], x1[moving], y1[moving]], axis=1).reshape(-1, 2, 2)
        segs = shapely.linestrings(coords)
        si, fi = self._tree.query(segs)
        if exclude is not None and len(si):
            nf = len(self._fences)
            codes = np.sort(
                np.fromiter(
                    (
                        k * nf + self._by_id[f]
                        for k, row in enumerate(moving.tolist())
                        for f in exclude[row]
                        if f in self._by_id  # an id this index does not know excludes nothing
                    ),
                    dtype=np.int64,
                )
            )
            keep = ~_isin_sorted(si * nf + fi, codes)
            si, fi = si[keep], fi[keep]
        if min_inside_m and len(si):
            need = self._needs(min_inside_m)
            sx0, sy0, sx1, sy1 = x0[moving], y0[moving], x1[moving], y1[moving]
            hop = np.hypot((sx1 - sx0) * (_KY * np.cos(np.radians(sy0))), (sy1 - sy0) * _KY)
            keep = hop[si] >= need[fi] * (1 - 2e-9)  # twice the per-fix slack: numpy's cos may differ by an ulp
            si, fi = si[keep], fi[keep]
        hit = shapely.intersects(self._geoms[fi], segs[si])  # the fences' prepared geometries, as one fix's lookup
        si, fi = si[hit], fi[hit]
        if len(si) == 0:
            return out
        inters = shapely.intersection(segs[si], self._geoms[fi])
        pts, part = shapely.get_coordinates(inters, return_index=True)
        first = np.zeros(len(si))
        if len(pts):
            along = shapely.line_locate_point(segs[si[part]], shapely.points(pts))
            starts = np.flatnonzero(np.diff(part, prepend=-1))
            first[part[starts]] = np.minimum.reduceat(along, starts)
        ids = self._id_list
        found: dict[int, list[tuple[float, str, BaseGeometry]]] = {}
        for s_, f, at, inter in zip(si.tolist(), fi.tolist(), first.tolist(), inters.tolist(), strict=True):
            found.setdefault(s_, []).append((at, ids[f], inter))
        rows = moving.tolist()
        for s_, items in found.items():
            items.sort(key=lambda t: (t[0], t[1]))
            out[rows[s_]] = tuple((fid, inter) for _, fid, inter in items)
        return out

    def _needs(self, min_inside_m: Mapping[FenceKind, float]) -> npt.NDArray[np.float64]:
        """``min_inside_m`` per fence, as an array (kept per distinct rule: asked once per micro-batch)."""
        key = tuple(sorted(min_inside_m.items()))
        need = self._need.get(key)
        if need is None:
            need = self._need[key] = np.array([min_inside_m.get(f.kind, 0.0) for f in self._fences])
        return need

    def prefetch_crossings(
        self,
        lon0: Any,
        lat0: Any,
        lon1: Any,
        lat1: Any,
        exclude: Sequence[frozenset[str]] | None = None,
        min_inside_m: Mapping[FenceKind, float] | None = None,
    ) -> None:
        """Compute :meth:`crossings_batch` for a micro-batch's hops and keep it until the next call.

        :meth:`met` then answers those hops without a lookup, for any exclusion that covers the one assumed
        here (fences left out by ``min_inside_m`` are missing from the answer: the caller's own rule drops
        them too). What is kept is a pure function of the coordinates and that assumption, so keeping it can never
        change an answer, only how fast it comes.
        """
        x0, y0 = _coords(lon0, lat0)
        x1, y1 = _coords(lon1, lat1)
        keys = list(zip(x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist(), strict=True))
        assumed = list(exclude) if exclude is not None else [_EMPTY] * len(keys)
        answers = self.crossings_batch(x0, y0, x1, y1, assumed, min_inside_m)
        lengths = self._inside_lengths(keys, answers)
        self._met = dict(zip(keys, zip(answers, assumed, lengths, strict=True), strict=True))

    @staticmethod
    def _inside_lengths(
        keys: Sequence[tuple[float, float, float, float]], answers: Sequence[tuple[tuple[str, BaseGeometry], ...]]
    ) -> list[tuple[float, ...]]:
        """The length of every crossing's part inside its fence, in the local projection at its hop's start
        (``LocalProjection(lon0, lat0)``'s arithmetic, as a one-hop caller measures it), all in one go."""
        parts = [inside for answer in answers for _, inside in answer]
        if not parts:
            return [()] * len(answers)
        origin = np.empty((len(parts), 2))
        scale = np.empty((len(parts), 2))
        k = 0
        for (lon0, lat0, _, _), answer in zip(keys, answers, strict=True):
            if answer:
                n = len(answer)
                origin[k : k + n] = (lon0, lat0)
                scale[k : k + n] = (_KY * math.cos(math.radians(lat0)), _KY)
                k += n
        geoms = np.empty(len(parts), dtype=object)
        geoms[:] = parts
        coords, which = shapely.get_coordinates(geoms, return_index=True)
        local = shapely.set_coordinates(geoms.copy(), (coords - origin[which]) * scale[which])
        flat = shapely.length(local).tolist()
        out: list[tuple[float, ...]] = []
        k = 0
        for answer in answers:
            out.append(tuple(flat[k : k + len(answer)]))
            k += len(answer)
        return out

    def met_measured(
        self, lon0: float, lat0: float, lon1: float, lat1: float, exclude: frozenset[str] = frozenset()
    ) -> tuple[tuple[str, BaseGeometry, float], ...] | None:
        """:meth:`met` with each crossing's part inside measured in metres (``LocalProjection(lon0, lat0)``)."""
        got = self._met.get((lon0, lat0, lon1, lat1))
        if got is None:
            return None
        answer, assumed, lengths = got
        if not assumed <= exclude:
            return None
        return tuple((f, inside, m) for (f, inside), m in zip(answer, lengths, strict=True) if f not in exclude)

    def met(
        self, lon0: float, lat0: float, lon1: float, lat1: float, exclude: frozenset[str] = frozenset()
    ) -> tuple[tuple[str, BaseGeometry], ...] | None:
        """:meth:`crossings` of the hop if :meth:`prefetch_crossings` computed it (with an assumed exclusion
        that ``exclude`` covers); else None."""
        got = self._met.get((lon0, lat0, lon1, lat1))
        if got is None:
            return None
        answer, assumed, _ = got
        if not assumed <= exclude:
            return None  # a fence left out ahead is not excluded after all: the hop is looked up on its own
        return tuple(c for c in answer if c[0] not in exclude)
