"""Which fences a straight segment between two fixes could meet, found by walking the cells it passes.

An STRtree query needs a shapely LineString per fix and answers by bounding box: in a port, where
roads run beside terminals and one another, the box of a 200 m hop nearly always holds a fence the
hop never comes near. A grid of fine cells (:class:`geofences.cells.CellGrid`, built for this at
``SEGMENT_CELL_DEG``) records for each cell the fences whose geometry touches it; the segment is
walked column by column, and only the fences of the cells it passes are candidates. No geometry is
built, and a hop that stays within its own fences' cells has no candidate left once those are
excluded.

Conservative, never lossy: any common point of segment and fence lies in a cell the fence touches
(cells are tested grown by ``cells._EPS`` when the grid is built), and the walk visits every cell
holding a point of the segment: the y-range of the segment over each column is widened by
``_PAD_DEG`` plus a part per million of the segment's height, far above the rounding of the linear
interpolation, and a segment too steep to interpolate safely (less than ``_MIN_DX_DEG`` wide) is
walked over its whole bounding box. Fences too big for the grid (a port boundary) are candidates
whenever their bounding box meets the segment's. tests/unit/test_index_segments.py checks the
candidates against an exact shapely evaluation on random segments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import shapely

from geofences.cells import CellGrid

__all__ = ["SEGMENT_CELL_DEG", "SegmentGrid"]

SEGMENT_CELL_DEG = 0.0002
"""About 22 m by 20 m at Santos: coarser cells (measured: the point grid's 55 m) list a neighbouring
fence for most hops of a road running beside a terminal; this grid builds in under 0.1 s for Santos."""
_WIDE_CELLS = 25_000
"""A fence whose bounding box spans more cells than this (the port boundary) is kept out of the grid."""
MAX_WALK_CELLS = 256
"""A segment passing more cells than this is a long jump: the caller asks the STRtree instead."""
_PAD_DEG = 1e-9
_MIN_DX_DEG = 1e-7
_OFF = 1 << 30
_SHIFT = 31


class SegmentGrid:
    """Candidate fences (their ``ids``) per segment; immutable after construction."""

    def __init__(
        self, geoms: npt.NDArray[np.object_], ids: Sequence[str], *, cell_deg: float = SEGMENT_CELL_DEG
    ) -> None:
        grid = CellGrid(geoms, cell_deg=cell_deg, max_cells=_WIDE_CELLS)
        self.cell_deg = grid.cell_deg
        # the fence ids themselves, so that a walk hands its caller strings to match against memberships
        self._cells: dict[int, tuple[str, ...]] = {
            k: tuple(ids[f] for f in fs) for k, fs in grid.fences_by_cell().items()
        }
        n = len(geoms)
        bounds = shapely.bounds(geoms).reshape(n, 4) if n else np.zeros((0, 4))
        wide: list[tuple[str, float, float, float, float]] = []
        for f in grid.always:
            bx0, by0, bx1, by1 = (float(v) for v in bounds[f])
            wide.append((ids[f], bx0, by0, bx1, by1))
        self._wide = tuple(wide)

    def __len__(self) -> int:
        return len(self._cells)

    def near(self, x0: float, y0: float, x1: float, y1: float, max_cells: int = MAX_WALK_CELLS) -> set[str] | None:
        """Fences that may meet the segment (a superset of those that do); None when it spans too many cells."""
        out: set[str] = set()
        if self._wide:
            lo_x, hi_x, lo_y, hi_y = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
            for f, bx0, by0, bx1, by1 in self._wide:
                if bx0 <= hi_x and lo_x <= bx1 and by0 <= hi_y and lo_y <= by1:
                    out.add(f)
        if not self._cells:
            return out
        if x0 > x1:
            x0, y0, x1, y1 = x1, y1, x0, y0
        s = self.cell_deg
        floor = math.floor
        ix0 = floor(x0 / s)
        ix1 = floor(x1 / s)
        dx = x1 - x0
        dy = y1 - y0
        pad = _PAD_DEG + abs(dy) * 1e-6
        cells = self._cells
        walked = 0
        if ix0 == ix1 or dx < _MIN_DX_DEG:
            lo, hi = (y0, y1) if y0 <= y1 else (y1, y0)
            iy0, iy1 = floor((lo - pad) / s), floor((hi + pad) / s)
            if (ix1 - ix0 + 1) * (iy1 - iy0 + 1) > max_cells:
                return None
            for ix in range(ix0, ix1 + 1):
                base = (ix + _OFF) << _SHIFT
                for iy in range(iy0 + _OFF, iy1 + _OFF + 1):
                    got = cells.get(base + iy)
                    if got is not None:
                        out.update(got)
            return out
        slope = dy / dx
        for ix in range(ix0, ix1 + 1):
            # the part of the segment over this column, widened a little either side of the column
            xa = x0 if ix == ix0 else max(x0, ix * s - _PAD_DEG)
            xb = x1 if ix == ix1 else min(x1, (ix + 1) * s + _PAD_DEG)
            ya = y0 + (xa - x0) * slope
            yb = y0 + (xb - x0) * slope
            lo, hi = (ya, yb) if ya <= yb else (yb, ya)
            iy0, iy1 = floor((lo - pad) / s), floor((hi + pad) / s)
            walked += iy1 - iy0 + 1
            if walked > max_cells:
                return None
            base = (ix + _OFF) << _SHIFT
            for iy in range(iy0 + _OFF, iy1 + _OFF + 1):
                got = cells.get(base + iy)
                if got is not None:
                    out.update(got)
        return out
