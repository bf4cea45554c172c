"""Exact point-in-fence lookup through a uniform grid of cells, for one fix or a whole batch.

An STRtree answers "which fences could hold this point" by bounding box only; every candidate then
costs an exact point-in-polygon test, and the tree wants a shapely Point built per fix. Port fences
overlap heavily (the port boundary holds everything, roads run through terminals), so most of that
work is spent re-proving what the geometry already says: a point in the middle of a terminal is in
the terminal. The grid decides that once, when the index is built: for every cell it records which
fences touch the cell and which of those cover it entirely. A point then costs one cell lookup
(arithmetic on its coordinates, no geometry object), and an exact test only against the fences whose
edge runs through its cell.

Exactness: the answer is the same ``intersects`` (boundary counts as inside) that shapely gives for
the point. Every cell is tested grown by ``_EPS`` degrees, far above the rounding error of locating a
point in its cell (about 1e-14 degrees at |lon| <= 180), so "covers the cell" implies "holds every
point filed under that cell" and "misses the cell" implies "holds none of them". The cases in between
go to ``shapely.intersects_xy``.

Building walks each fence's bounding box like a quadtree, from cells at most eight to a side down to
the finest size, and only splits the cells its edge crosses, so the cost follows the length of the
fence's outline, not its area. A fence whose bounding box would span more than ``max_cells`` fine
cells (a whole-country zone) is left out of the grid and tested directly against every point within
its bounding box.
"""

from __future__ import annotations

import math
from bisect import bisect_left

import numpy as np
import numpy.typing as npt
import shapely

__all__ = ["CellGrid"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_EPS = 1e-9
"""Degrees each cell is grown by before it is tested against a fence (about 0.1 mm)."""
_OFF = 1 << 30
"""Cell indices are offset by this so a cell key packs into one non-negative int64."""
_KEY_SHIFT = 31
_START_SPAN = 8
"""Cells per side of the coarsest level a fence starts its quadtree walk at."""
_TILE_SHIFT = 6
"""Batch lookups go through dense tables of 64 x 64 cells (16 KiB each), one per tile that holds any
cell: a lookup is one search among a few hundred tiles and one array read, where a search among all
cells would cost a cache miss per step."""
_TILE = 1 << _TILE_SHIFT
_intersects_xy = shapely.lib.intersects_xy
"""``shapely.intersects_xy`` without its argument handling (half the cost of a one-point test): the
geometries here are prepared when the grid is built, which is all the wrapper would add."""


def _keys(ix: IntArray, iy: IntArray) -> IntArray:
    return ((ix + _OFF) << _KEY_SHIFT) + (iy + _OFF)


class CellGrid:
    """Which of ``geoms`` (prepared polygons in lon/lat) intersect each point.

    ``cell_deg`` is the side of the finest cell in degrees; smaller cells mean fewer exact tests per
    point and a bigger, slower-to-build grid. Immutable after construction.
    """

    def __init__(self, geoms: npt.NDArray[np.object_], *, cell_deg: float, max_cells: int = 1 << 20) -> None:
        if not cell_deg > 0:
            raise ValueError(f"cell_deg must be > 0, got {cell_deg}")
        if cell_deg < 360.0 / (1 << 29):
            raise ValueError(f"cell_deg {cell_deg} is too small for the cell keys")
        self.cell_deg = float(cell_deg)
        self._geoms = geoms
        shapely.prepare(geoms)
        n = len(geoms)
        bounds = shapely.bounds(geoms).reshape(n, 4) if n else np.zeros((0, 4))
        self._minx, self._miny, self._maxx, self._maxy = (np.ascontiguousarray(bounds[:, i]) for i in range(4))
        # an empty geometry has NaN bounds and holds nothing
        usable = np.asarray(np.isfinite(bounds).all(axis=1), dtype=bool)
        s = self.cell_deg
        with np.errstate(invalid="ignore"):
            fb = np.floor(np.where(usable[:, None], bounds, 0.0) / s).astype(np.int64)
        ix0, iy0, ix1, iy1 = fb[:, 0], fb[:, 1], fb[:, 2], fb[:, 3]
        span = (ix1 - ix0 + 1) * (iy1 - iy0 + 1)
        in_grid = usable & (span <= max_cells)
        self._always: IntArray = np.flatnonzero(usable & ~in_grid).astype(np.int64)
        if in_grid.any():
            gb = bounds[in_grid]
            self._extent = (float(gb[:, 0].min()), float(gb[:, 1].min()), float(gb[:, 2].max()), float(gb[:, 3].max()))
        else:
            self._extent = (math.inf, math.inf, -math.inf, -math.inf)

        keys, fids, full = self._walk(np.flatnonzero(in_grid), ix0, iy0, ix1, iy1)
        order = np.lexsort((fids, keys))
        keys, fids, full = keys[order], fids[order], full[order]
        cells, first = np.unique(keys, return_index=True)
        self._cells: IntArray = cells
        self._start: IntArray = np.append(first, len(keys)).astype(np.int64)
        self._fid: IntArray = fids
        self._full: npt.NDArray[np.bool_] = full
        cx = (cells >> _KEY_SHIFT) - _OFF
        cy = (cells & ((1 << _KEY_SHIFT) - 1)) - _OFF
        tiles, tile_of_cell = np.unique(_keys(cx >> _TILE_SHIFT, cy >> _TILE_SHIFT), return_inverse=True)
        self._tiles: IntArray = tiles
        self._table = np.full((len(tiles), _TILE, _TILE), -1, dtype=np.int32)
        self._table[tile_of_cell.ravel(), cx & (_TILE - 1), cy & (_TILE - 1)] = np.arange(len(cells), dtype=np.int32)
        # the one-fix path works on Python objects: bisect on a list beats numpy on a scalar
        self._cells_list: list[int] = cells.tolist()
        self._start_list: list[int] = self._start.tolist()
        self._fid_list: list[int] = fids.tolist()
        self._full_list: list[bool] = full.tolist()
        self._bounds_list: list[tuple[float, float, float, float]] = [tuple(b) for b in bounds.tolist()]
        self._always_list: list[int] = self._always.tolist()

    def __len__(self) -> int:
        """Number of (cell, fence) entries: what the grid costs in memory."""
        return len(self._fid)

    @property
    def cells(self) -> int:
        return len(self._cells)

    @property
    def always(self) -> list[int]:
        """The fences left out of the grid (see :attr:`direct`)."""
        return list(self._always_list)

    def fences_by_cell(self) -> dict[int, tuple[int, ...]]:
        """Cell key -> the fences touching the cell, for walks that visit cells one by one (segments)."""
        out: dict[int, tuple[int, ...]] = {}
        fid = self._fid_list
        for k, a, b in zip(self._cells_list, self._start_list, self._start_list[1:], strict=False):
            out[k] = tuple(fid[a:b])
        return out

    @property
    def direct(self) -> int:
        """Fences left out of the grid for their size, tested against every point in their bounding box."""
        return len(self._always)

    def _walk(
        self, fences: IntArray, ix0: IntArray, iy0: IntArray, ix1: IntArray, iy1: IntArray
    ) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_]]:
        """(cell key, fence, fence covers the cell) for every fine cell a fence touches."""
        s = self.cell_deg
        out_k: list[IntArray] = []
        out_f: list[IntArray] = []
        out_full: list[npt.NDArray[np.bool_]] = []
        if len(fences) == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0, bool)
        # start level per fence: the smallest at which its bounding box spans <= _START_SPAN cells a side
        level = np.zeros(len(fences), np.int64)
        while True:
            wide = ((ix1[fences] >> level) - (ix0[fences] >> level) + 1 > _START_SPAN) | (
                (iy1[fences] >> level) - (iy0[fences] >> level) + 1 > _START_SPAN
            )
            if not wide.any():
                break
            level[wide] += 1
        f_l, cx_l, cy_l, lv_l = [], [], [], []
        for fi, start_level in zip(fences.tolist(), level.tolist(), strict=True):
            xs = np.arange(ix0[fi] >> start_level, (ix1[fi] >> start_level) + 1)
            ys = np.arange(iy0[fi] >> start_level, (iy1[fi] >> start_level) + 1)
            gx, gy = np.meshgrid(xs, ys, indexing="ij")
            f_l.append(np.full(gx.size, fi, np.int64))
            cx_l.append(gx.ravel())
            cy_l.append(gy.ravel())
            lv_l.append(np.full(gx.size, start_level, np.int64))
        f_a, cx, cy, lv = (np.concatenate(a) for a in (f_l, cx_l, cy_l, lv_l))
        while len(f_a):
            x0 = (cx << lv) * s - _EPS
            y0 = (cy << lv) * s - _EPS
            x1 = ((cx + 1) << lv) * s + _EPS
            y1 = ((cy + 1) << lv) * s + _EPS
            boxes = shapely.box(x0, y0, x1, y1)
            g = self._geoms[f_a]
            touch = shapely.intersects(g, boxes)
            cover = np.zeros(len(f_a), bool)
            cover[touch] = shapely.covers(g[touch], boxes[touch])
            edge = touch & ~cover
            # covered cells: every fine cell under them (within the fence's bounding box) is full
            for m, is_full in ((cover, True), (edge & (lv == 0), False)):
                if not m.any():
                    continue
                fs, xs0, ys0, ls = f_a[m], cx[m] << lv[m], cy[m] << lv[m], lv[m]
                xs0c = np.maximum(xs0, ix0[fs])
                ys0c = np.maximum(ys0, iy0[fs])
                xs1c = np.minimum(xs0 + (1 << ls) - 1, ix1[fs])
                ys1c = np.minimum(ys0 + (1 << ls) - 1, iy1[fs])
                nx = xs1c - xs0c + 1
                ny = ys1c - ys0c + 1
                cnt = nx * ny
                rep = np.repeat(np.arange(len(fs)), cnt)
                within = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
                kx = xs0c[rep] + within // ny[rep]
                ky = ys0c[rep] + within % ny[rep]
                out_k.append(_keys(kx, ky))
                out_f.append(fs[rep])
                out_full.append(np.full(len(rep), is_full))
            split = edge & (lv > 0)
            fs, px, py, pl = f_a[split], cx[split], cy[split], lv[split] - 1
            f_n, cx_n, cy_n, lv_n = [], [], [], []
            for dx in (0, 1):
                for dy in (0, 1):
                    nx_ = 2 * px + dx
                    ny_ = 2 * py + dy
                    keep = (
                        (nx_ >= ix0[fs] >> pl)
                        & (nx_ <= ix1[fs] >> pl)
                        & (ny_ >= iy0[fs] >> pl)
                        & (ny_ <= iy1[fs] >> pl)
                    )
                    f_n.append(fs[keep])
                    cx_n.append(nx_[keep])
                    cy_n.append(ny_[keep])
                    lv_n.append(pl[keep])
            f_a, cx, cy, lv = (np.concatenate(a) for a in (f_n, cx_n, cy_n, lv_n))
        if not out_k:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0, bool)
        return np.concatenate(out_k), np.concatenate(out_f), np.concatenate(out_full)

    # ---- queries --------------------------------------------------------------------------------

    def hits(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray]:
        """(point index, fence index) of every point in every fence, in no particular order."""
        ps: list[IntArray] = []
        fs: list[IntArray] = []
        minx, miny, maxx, maxy = self._extent
        inside = (x >= minx) & (x <= maxx) & (y >= miny) & (y <= maxy)  # also drops NaN
        if len(self._cells) and inside.any():
            pt = np.flatnonzero(inside)
            xi, yi = x[pt], y[pt]
            s = self.cell_deg
            ix = np.floor(xi / s).astype(np.int64)
            iy = np.floor(yi / s).astype(np.int64)
            tkey = _keys(ix >> _TILE_SHIFT, iy >> _TILE_SHIFT)
            tpos = np.minimum(np.searchsorted(self._tiles, tkey), len(self._tiles) - 1)
            row = self._table[tpos, ix & (_TILE - 1), iy & (_TILE - 1)].astype(np.int64)
            row[self._tiles[tpos] != tkey] = -1
            start = self._start[row]
            cnt = np.where(row >= 0, self._start[row + 1] - start, 0)
            total = int(cnt.sum())
            rep = np.repeat(np.arange(len(pt)), cnt)
            j = np.arange(total) + np.repeat(start - (np.cumsum(cnt) - cnt), cnt)
            f = self._fid[j]
            full = self._full[j]
            test = np.flatnonzero(~full)
            tp, tf = rep[test], f[test]
            ok = self._exact(tf, xi[tp], yi[tp])
            keep = full
            keep[test[ok]] = True
            ps.append(pt[rep[keep]])
            fs.append(f[keep])
        for f_idx in self._always.tolist():
            m = (
                (x >= self._minx[f_idx])
                & (x <= self._maxx[f_idx])
                & (y >= self._miny[f_idx])
                & (y <= self._maxy[f_idx])
            )
            cand = np.flatnonzero(m)
            ok = shapely.intersects_xy(self._geoms[f_idx], x[cand], y[cand])
            ps.append(cand[ok])
            fs.append(np.full(int(ok.sum()), f_idx, np.int64))
        if not ps:
            empty = np.zeros(0, np.int64)
            return empty, empty.copy()
        return np.concatenate(ps).astype(np.int64), np.concatenate(fs).astype(np.int64)

    def _exact(self, f: IntArray, x: FloatArray, y: FloatArray) -> npt.NDArray[np.bool_]:
        """Bounding box first (cheap), then the prepared point-in-polygon test."""
        ok = (self._minx[f] <= x) & (x <= self._maxx[f]) & (self._miny[f] <= y) & (y <= self._maxy[f])
        idx = np.flatnonzero(ok)
        ok[idx] = shapely.intersects_xy(self._geoms[f[idx]], x[idx], y[idx])
        return ok

    def hits_few(self, xs: list[float], ys: list[float]) -> list[list[int]]:
        """Fence indices holding each of a few points (unsorted): :meth:`hits_one`'s cell lookups, with every exact
        test of the batch in one vectorised call.

        A micro-batch of a few dozen fixes spends most of :meth:`hits` on setting up arrays; here only the exact
        tests go through numpy, and they are the same tests (bounding box first, then the prepared geometry).
        """
        out: list[list[int]] = [[] for _ in xs]
        tp: list[int] = []  # (point, fence) pairs left to the exact test
        tf: list[int] = []
        minx, miny, maxx, maxy = self._extent
        cells, starts, fids, full = self._cells_list, self._start_list, self._fid_list, self._full_list
        bounds, always = self._bounds_list, self._always_list
        n_cells = len(cells)
        s = self.cell_deg
        for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
            if n_cells and minx <= x <= maxx and miny <= y <= maxy:
                key = ((math.floor(x / s) + _OFF) << _KEY_SHIFT) + math.floor(y / s) + _OFF
                i = bisect_left(cells, key)
                if i < n_cells and cells[i] == key:
                    hit = out[k]
                    for j in range(starts[i], starts[i + 1]):
                        f = fids[j]
                        if full[j]:
                            hit.append(f)
                            continue
                        bx0, by0, bx1, by1 = bounds[f]
                        if bx0 <= x <= bx1 and by0 <= y <= by1:
                            tp.append(k)
                            tf.append(f)
            for f in always:
                bx0, by0, bx1, by1 = bounds[f]
                if bx0 <= x <= bx1 and by0 <= y <= by1:
                    tp.append(k)
                    tf.append(f)
        if tp:
            px = np.array([xs[k] for k in tp], dtype=np.float64)
            py = np.array([ys[k] for k in tp], dtype=np.float64)
            ok = _intersects_xy(self._geoms[np.array(tf, dtype=np.int64)], px, py).tolist()
            for k, f, inside in zip(tp, tf, ok, strict=True):
                if inside:
                    out[k].append(f)
        return out

    def hits_one(self, x: float, y: float) -> list[int]:
        """Fence indices holding one point; the same answer as :meth:`hits`, without numpy overhead."""
        out: list[int] = []
        minx, miny, maxx, maxy = self._extent
        if minx <= x <= maxx and miny <= y <= maxy and self._cells_list:
            s = self.cell_deg
            key = ((math.floor(x / s) + _OFF) << _KEY_SHIFT) + math.floor(y / s) + _OFF
            i = bisect_left(self._cells_list, key)
            if i < len(self._cells_list) and self._cells_list[i] == key:
                bounds = self._bounds_list
                for j in range(self._start_list[i], self._start_list[i + 1]):
                    f = self._fid_list[j]
                    if self._full_list[j]:
                        out.append(f)
                        continue
                    bx0, by0, bx1, by1 = bounds[f]
                    if bx0 <= x <= bx1 and by0 <= y <= by1 and _intersects_xy(self._geoms[f], x, y):
                        out.append(f)
        for f in self._always_list:
            bx0, by0, bx1, by1 = self._bounds_list[f]
            if bx0 <= x <= bx1 and by0 <= y <= by1 and _intersects_xy(self._geoms[f], x, y):
                out.append(f)
        return out
