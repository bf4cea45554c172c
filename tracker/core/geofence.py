"""Geofence transition detector: enter / exit / cross alerts with hysteresis.

Membership is the fence set the device is in after this fix; it is computed once per
fix by the pipeline (other detectors need it too) and this module only turns the
change of that set into alerts, with a severity chosen by what the fence protects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

import numpy as np
import shapely

from geofences import Fence, FenceIndex, FenceKind, LocalProjection, Transition, TransitionKind, classify
from tracker.core.fix import Fix
from tracker.core.model import Alert, Ping, Severity


def _default_enter() -> dict[FenceKind, Severity]:
    return {FenceKind.RESTRICTED: Severity.HIGH}


def _default_exit() -> dict[FenceKind, Severity]:
    return {FenceKind.RESTRICTED: Severity.MEDIUM, FenceKind.PORT_BOUNDARY: Severity.LOW}


@dataclass(frozen=True, slots=True)
class GeofenceParams:
    """Severity per fence kind and transition; anything not listed is ``info`` (logged, not queued)."""

    enter: Mapping[FenceKind, Severity] = field(default_factory=_default_enter)
    exit: Mapping[FenceKind, Severity] = field(default_factory=_default_exit)
    max_cross_gap_s: float = 90.0  # beyond this the straight line between fixes is a guess, not a path
    min_cross_m: float = 30.0  # a chord shorter than this inside a fence is a road bend cut short, not a crossing
    min_cross_gate_m: float = 5.0  # gates are narrow by nature: passing one is exactly what a crossing is
    confirm_entry_kinds: frozenset[FenceKind] = frozenset({FenceKind.RESTRICTED})


def membership(
    index: FenceIndex, previous: frozenset[str], ping: Ping, raw: frozenset[str] | None = None
) -> frozenset[str]:
    """``raw``: this fix's raw membership if it was computed ahead for a batch (``Pipeline.prefetch``)."""
    return index.membership(ping.lon, ping.lat, previous, raw)


_CELL_DEG = 0.0002
"""Side of a cell of the segment pre-filter: about 22 m by 20 m at Santos. Roads run beside terminals and
one another, so coarser cells (measured: 100 m) list a neighbouring fence for nine hops in ten; at this
size the filter settles four in ten of the simulator's hops, for a grid built in 0.2 s."""
_EPS = 1e-9
_WIDE_CELLS = 25_000
"""A fence whose bounding box spans more cells than this (the port boundary) is not gridded: it is a
candidate for every segment unless excluded, as it is for a device inside it."""
_MAX_QUERY_CELLS = 64


class SegmentFilter:
    """Which fences a straight segment between two fixes could meet, without building any geometry.

    ``FenceIndex.crossings`` builds a LineString and queries an STRtree for every fix, to find that almost
    always nothing but the device's own fences (excluded anyway) lies on the way. This grid records, for
    every cell of ``_CELL_DEG``, the fences whose geometry touches the cell (each cell grown by ``_EPS``);
    a segment can only meet a fence listed in a cell of its bounding box, so when every such fence is
    excluded there is nothing to look up. The answer is conservative, never lossy: any common point of
    segment and fence lies in a cell of the segment's bounding box that the fence touches.
    """

    def __init__(self, index: FenceIndex) -> None:
        s = _CELL_DEG
        cells: dict[int, set[str]] = {}
        wide: set[str] = set()
        for fence in index.fences:
            minx, miny, maxx, maxy = fence.geometry.bounds
            if not all(map(math.isfinite, (minx, miny, maxx, maxy))):
                continue  # an empty geometry meets nothing
            ix0, iy0, ix1, iy1 = (math.floor(v / s) for v in (minx, miny, maxx, maxy))
            if (ix1 - ix0 + 1) * (iy1 - iy0 + 1) > _WIDE_CELLS:
                wide.add(fence.id)
                continue
            gx, gy = np.meshgrid(np.arange(ix0, ix1 + 1), np.arange(iy0, iy1 + 1))
            xs, ys = gx.ravel(), gy.ravel()
            boxes = shapely.box(xs * s - _EPS, ys * s - _EPS, (xs + 1) * s + _EPS, (ys + 1) * s + _EPS)
            touched = shapely.intersects(fence.geometry, boxes)
            for x, y in zip(xs[touched].tolist(), ys[touched].tolist(), strict=True):
                cells.setdefault(_key(x, y), set()).add(fence.id)
        self._cells = {k: frozenset(v) for k, v in cells.items()}
        self._wide = frozenset(wide)

    def may_meet(self, lon0: float, lat0: float, lon1: float, lat1: float, exclude: frozenset[str]) -> bool:
        """False when the segment can meet no fence outside ``exclude``; True when it may."""
        if self._wide and not self._wide <= exclude:
            return True
        s = _CELL_DEG
        ix0, ix1 = math.floor(min(lon0, lon1) / s), math.floor(max(lon0, lon1) / s)
        iy0, iy1 = math.floor(min(lat0, lat1) / s), math.floor(max(lat0, lat1) / s)
        if (ix1 - ix0 + 1) * (iy1 - iy0 + 1) > _MAX_QUERY_CELLS:
            return True  # a long jump: the STRtree is the better judge
        cells = self._cells
        for ix in range(ix0, ix1 + 1):
            for iy in range(iy0, iy1 + 1):
                near = cells.get(_key(ix, iy))
                if near is not None and not near <= exclude:
                    return True
        return False


def _key(ix: int, iy: int) -> int:
    return (ix << 32) ^ (iy & 0xFFFFFFFF)


_FILTERS: WeakKeyDictionary[FenceIndex, SegmentFilter] = WeakKeyDictionary()


def segment_filter(index: FenceIndex) -> SegmentFilter:
    """The filter of ``index``, built on first use and kept as long as the index lives (indexes are immutable)."""
    found = _FILTERS.get(index)
    if found is None:
        found = _FILTERS[index] = SegmentFilter(index)
    return found


def crossed(
    index: FenceIndex, last: Fix | None, ping: Ping, exclude: frozenset[str], params: GeofenceParams
) -> tuple[str, ...]:
    """Fences passed through between two sparse fixes (a gate jumped over between pings)."""
    if last is None or (ping.ts - last.ts).total_seconds() > params.max_cross_gap_s:
        return ()
    if last.lon == ping.lon and last.lat == ping.lat:
        return ()
    if not segment_filter(index).may_meet(last.lon, last.lat, ping.lon, ping.lat, exclude):
        return ()
    candidates = index.crossings(last.lon, last.lat, ping.lon, ping.lat, exclude)
    if not candidates:
        return ()
    proj = LocalProjection(last.lon, last.lat)
    out = []
    for f, inside in candidates:  # inside: the part of the chord between the fixes inside the fence
        fence = index.get(f)
        needed = params.min_cross_gate_m if fence.kind is FenceKind.GATE else params.min_cross_m
        if proj.project(inside).length >= needed:
            out.append(f)
    return tuple(out)


def _severity(fence: Fence, transition: TransitionKind, params: GeofenceParams) -> Severity:
    if transition is TransitionKind.CROSS:
        # inferred from the straight line between two fixes, not observed: worth recording and
        # publishing, not an operator's queue item (a GPS outlier or a road bend makes the same line)
        return Severity.LOW
    if transition is TransitionKind.ENTER:
        if fence.severity:
            return Severity(fence.severity)
        return params.enter.get(fence.kind, Severity.INFO)
    return params.exit.get(fence.kind, Severity.INFO)


def alerts_for(
    index: FenceIndex,
    transitions: Sequence[Transition],
    ping: Ping,
    last: Fix | None,
    params: GeofenceParams,
) -> list[Alert]:
    """One alert per transition of an active fence (a fence outside its time window raises nothing)."""
    out: list[Alert] = []
    for tr in transitions:
        fence = index.get(tr.fence_id)
        if fence.windows and not any(w.active(ping.ts) for w in fence.windows):
            continue
        kind = f"geofence_{tr.kind.value}"
        verb = {"enter": "entered", "exit": "left", "cross": "passed through"}[tr.kind.value]
        evidence: dict[str, object] = {
            "fence": {"id": fence.id, "name": fence.name, "kind": fence.kind.value},
            "fix": {"ts": ping.ts.isoformat(), "lon": ping.lon, "lat": ping.lat, "accuracy": ping.accuracy},
        }
        if last is not None:
            evidence["previous_fix"] = {"ts": last.ts.isoformat(), "lon": last.lon, "lat": last.lat}
        out.append(
            Alert(
                kind=kind,
                severity=_severity(fence, tr.kind, params),
                device_id=ping.device_id,
                ts=ping.ts,
                message=f"{ping.device_id} {verb} {fence.kind.value.replace('_', ' ')} {fence.name!r}",
                port=fence.port,
                fence_id=fence.id,
                evidence=evidence,
                key=f"{fence.id}@{ping.ts.isoformat()}",
            )
        )
    return out


def step(
    index: FenceIndex,
    previous: frozenset[str],
    last: Fix | None,
    ping: Ping,
    params: GeofenceParams,
    pending: frozenset[str] = frozenset(),
    raw: frozenset[str] | None = None,
) -> tuple[frozenset[str], list[Alert], frozenset[str]]:
    """New membership, the alerts its change raises (exits before enters, then crossings) and the
    entries waiting for confirmation.

    Entering a fence of ``confirm_entry_kinds`` takes two consecutive fixes inside: a single
    multipath fix 50-300 m off (common beside cranes and stacks) must not raise a high alarm;
    the cost is one reporting interval. ``raw`` as for :func:`membership`.
    """
    new = membership(index, previous, ping, raw)
    entering = frozenset(f for f in new - previous if index.get(f).kind in params.confirm_entry_kinds)
    waiting = entering - pending
    new = new - waiting
    passed = crossed(index, last, ping, previous | new | waiting | pending, params)
    return new, alerts_for(index, classify(previous, new, passed), ping, last, params), waiting
