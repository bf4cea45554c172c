"""Geofence transition detector: enter / exit / cross alerts with hysteresis.

Membership is the fence set the device is in after this fix; it is computed once per
fix by the pipeline (other detectors need it too) and this module only turns the
change of that set into alerts, with a severity chosen by what the fence protects.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from geofences import Fence, FenceIndex, FenceKind, LocalProjection, Transition, TransitionKind, classify
from tracker.core import reachability
from tracker.core.model import Alert, Ping, Severity
from tracker.core.state import Fix


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
    reach: reachability.ReachParams | None = field(default_factory=reachability.ReachParams)
    """Sparse fixes: a crossing of a ``confirm_entry_kinds`` fence proven by the space-time prism (None: off)."""


def membership(
    index: FenceIndex, previous: frozenset[str], ping: Ping, raw: frozenset[str] | None = None
) -> frozenset[str]:
    """``raw``: this fix's raw membership if it was computed ahead for a batch (``Pipeline.prefetch``)."""
    return index.membership(ping.lon, ping.lat, previous, raw)


def crossed(
    index: FenceIndex, last: Fix | None, ping: Ping, exclude: frozenset[str], params: GeofenceParams
) -> tuple[str, ...]:
    """Fences passed through between two sparse fixes (a gate jumped over between pings)."""
    if last is None or (ping.ts - last.ts).total_seconds() > params.max_cross_gap_s:
        return ()
    if last.lon == ping.lon and last.lat == ping.lat:
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
    proven = proven_crossings(index, last, ping, previous | new | waiting | pending, params)
    passed = (*passed, *(f for f in proven if f not in passed))
    alerts = alerts_for(index, classify(previous, new, passed), ping, last, params)
    return new, [_as_proven(a, proven, index, params) for a in alerts], waiting


_GRAPHS: weakref.WeakKeyDictionary[FenceIndex, dict[str, reachability.CorridorGraph | None]] = (
    weakref.WeakKeyDictionary()
)


_WATCHED: weakref.WeakKeyDictionary[FenceIndex, dict[frozenset[FenceKind], tuple[Fence, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _graph(index: FenceIndex, port: str, params: reachability.ReachParams) -> reachability.CorridorGraph | None:
    """The port's corridor graph, built on first use for this index (fence reloads bring a new index)."""
    per_port = _GRAPHS.setdefault(index, {})
    if port not in per_port:
        per_port[port] = reachability.CorridorGraph.build((f for f in index.fences if f.port == port), params)
    return per_port[port]


def _watched(index: FenceIndex, kinds: frozenset[FenceKind]) -> tuple[Fence, ...]:
    per_kinds = _WATCHED.setdefault(index, {})
    if kinds not in per_kinds:
        per_kinds[kinds] = tuple(f for f in index.fences if f.kind in kinds)
    return per_kinds[kinds]


def proven_crossings(
    index: FenceIndex, last: Fix | None, ping: Ping, exclude: frozenset[str], params: GeofenceParams
) -> dict[str, reachability.Verdict]:
    """Fences of ``confirm_entry_kinds`` every plausible path between two sparse fixes goes through."""
    rp = params.reach
    if rp is None or last is None:
        return {}
    gap = (ping.ts - last.ts).total_seconds()
    if not rp.min_gap_s <= gap <= rp.max_gap_s:
        return {}
    # the prism lies within budget/2 of the midpoint: only fences whose box meets that square are judged
    half = (rp.max_speed_ms * gap + rp.gps_slack_m) / 2
    mid_lon, mid_lat = (last.lon + ping.lon) / 2, (last.lat + ping.lat) / 2
    dlat = half / 111_320.0
    dlon = half / (111_320.0 * max(0.1, math.cos(math.radians(mid_lat))))
    out: dict[str, reachability.Verdict] = {}
    for fence in _watched(index, params.confirm_entry_kinds):
        if fence.id in exclude:
            continue
        x0, y0, x1, y1 = fence.geometry.bounds
        if x1 < mid_lon - dlon or x0 > mid_lon + dlon or y1 < mid_lat - dlat or y0 > mid_lat + dlat:
            continue
        if fence.windows and not any(w.active(ping.ts) for w in fence.windows):
            continue
        verdict = reachability.judge(
            _graph(index, fence.port, rp),
            fence,
            (last.lon, last.lat, last.ts.timestamp()),
            (ping.lon, ping.lat, ping.ts.timestamp()),
            rp,
        )
        if verdict.crossed:
            out[fence.id] = verdict
    return out


def _as_proven(
    alert: Alert, proven: Mapping[str, reachability.Verdict], index: FenceIndex, params: GeofenceParams
) -> Alert:
    """A crossing the prism proves is an entry in all but the fix inside: it is raised at the entry's severity."""
    if alert.kind != "geofence_cross" or alert.fence_id is None or alert.fence_id not in proven:
        return alert
    fence = index.get(alert.fence_id)
    verdict = proven[alert.fence_id]
    return replace(
        alert,
        severity=_severity(fence, TransitionKind.ENTER, params),
        message=(
            f"{alert.device_id} must have passed through {fence.kind.value.replace('_', ' ')} {fence.name!r}: "
            f"no road around it fits {verdict.gap_s:.0f} s between two fixes at {params.reach.max_speed_ms:g} m/s"
            if params.reach is not None
            else alert.message
        ),
        evidence={**alert.evidence, "reachability": verdict.evidence()},
    )
