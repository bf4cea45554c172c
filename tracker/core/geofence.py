"""Geofence transition detector: enter / exit / cross alerts with hysteresis.

Membership is the fence set the device is in after this fix; it is computed once per
fix by the pipeline (other detectors need it too) and this module only turns the
change of that set into alerts, with a severity chosen by what the fence protects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from weakref import WeakKeyDictionary

import msgspec
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from geofences import (
    EARTH_RADIUS_M,
    Fence,
    FenceIndex,
    FenceKind,
    Transition,
    TransitionKind,
    classify,
)
from tracker.core import reachability
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
    reach: reachability.ReachParams | None = field(default_factory=reachability.ReachParams)
    """Sparse fixes: a crossing of a ``confirm_entry_kinds`` fence proven by the space-time prism (None: off)."""


def membership(
    index: FenceIndex, previous: frozenset[str], ping: Ping, raw: frozenset[str] | None = None
) -> frozenset[str]:
    """``raw``: this fix's raw membership if it was computed ahead for a batch (``Pipeline.prefetch``)."""
    return index.membership(ping.lon, ping.lat, previous, raw)


_KY = math.radians(1.0) * EARTH_RADIUS_M  # metres per degree of latitude, as LocalProjection has it
_EMPTY: frozenset[str] = frozenset()
SHORT = 1 - 1e-9
"""The part of a hop inside a fence is part of the hop: a fence whose shortest counted chord is longer than the
hop (with this much slack for rounding) is not looked at."""


def hop_m(lon0: float, lat0: float, lon1: float, lat1: float) -> float:
    """Length of a hop in the local projection at its start (``LocalProjection(lon0, lat0)``'s arithmetic)."""
    return math.hypot((lon1 - lon0) * (_KY * math.cos(math.radians(lat0))), (lat1 - lat0) * _KY)


def crossed(
    index: FenceIndex,
    last: Fix | None,
    ping: Ping,
    exclude: frozenset[str],
    params: GeofenceParams,
) -> tuple[str, ...]:
    """Fences passed through between two sparse fixes (a gate jumped over between pings).

    The hop's fences, measured, come from ``FenceIndex.met_measured`` when ``Pipeline.prefetch`` computed them for
    the batch, else from the fences by bounding box (``FenceIndex.near_box``) and the exact test of those not excluded.
    """
    if last is None or (ping.ts - last.ts).total_seconds() > params.max_cross_gap_s:
        return ()
    if last.lon == ping.lon and last.lat == ping.lat:
        return ()
    # the part inside a fence is part of the hop: a hop shorter than the shortest chord that counts, measured
    # in the same local projection as below, crosses nothing (a parked or crawling device, most of a port)
    kx = _KY * math.cos(math.radians(last.lat))
    hop = math.hypot((ping.lon - last.lon) * kx, (ping.lat - last.lat) * _KY)  # hop_m's arithmetic, inlined
    gate_m, cross_m = params.min_cross_gate_m, params.min_cross_m
    if hop < min(cross_m, gate_m) * SHORT:
        return ()
    gate_fits, other_fits = hop >= gate_m * SHORT, hop >= cross_m * SHORT
    # computed (and measured, in the same projection as below) ahead for a batch (Pipeline.prefetch)
    met = index.met_measured(last.lon, last.lat, ping.lon, ping.lat, exclude)
    if met is not None:
        if not met:
            return ()  # (most hops: no fence but those both ends lie in)
        out: list[str] = []
        for f, _, length in met:
            if index.get(f).kind is FenceKind.GATE:
                if gate_fits and length >= gate_m:
                    out.append(f)
            elif other_fits and length >= cross_m:
                out.append(f)
        return tuple(out)

    def looked_at(f: str) -> bool:
        return f not in exclude and (gate_fits if index.get(f).kind is FenceKind.GATE else other_fits)

    # (a hop the batch did not compute ahead is rare: the fences by bounding box, without building the segment grid;
    # the exact test below decides either way)
    among = [f for f in index.near_box(last.lon, last.lat, ping.lon, ping.lat) if looked_at(f)]
    if not among:
        return ()
    candidates = index.crossings(last.lon, last.lat, ping.lon, ping.lat, exclude, among)
    if not candidates:
        return ()
    # the part of the chord between the fixes inside each fence, measured in LocalProjection(last.lon, last.lat):
    # the same arithmetic as LocalProjection.to_xy, on all the parts at once
    insides = np.empty(len(candidates), dtype=object)
    insides[:] = [inside for _, inside in candidates]
    origin = np.array([last.lon, last.lat])
    scale = np.array([kx, _KY])
    lengths = shapely.length(shapely.transform(insides, lambda c: (c - origin) * scale)).tolist()
    out = []
    for (f, _), length in zip(candidates, lengths, strict=True):
        needed = gate_m if index.get(f).kind is FenceKind.GATE else cross_m
        if length >= needed:
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


_VERBS = {TransitionKind.ENTER: "entered", TransitionKind.EXIT: "left", TransitionKind.CROSS: "passed through"}
_KIND_NAMES = {k: k.value.replace("_", " ") for k in FenceKind}


def alerts_for(
    index: FenceIndex,
    transitions: Sequence[Transition],
    ping: Ping,
    last: Fix | None,
    params: GeofenceParams,
) -> list[Alert]:
    """One alert per transition of an active fence (a fence outside its time window raises nothing)."""
    out: list[Alert] = []
    if not transitions:
        return out
    ts = ping.ts.isoformat()  # once per fix, not per alert: a road junction changes three fences at once
    before = None if last is None else (last.ts.isoformat(), last.lon, last.lat)
    for tr in transitions:
        fence = index.get(tr.fence_id)
        if fence.windows and not any(w.active(ping.ts) for w in fence.windows):
            continue
        evidence: dict[str, object] = {
            "fence": {"id": fence.id, "name": fence.name, "kind": fence.kind.value},
            "fix": {"ts": ts, "lon": ping.lon, "lat": ping.lat, "accuracy": ping.accuracy},
        }
        if before is not None:
            evidence["previous_fix"] = {"ts": before[0], "lon": before[1], "lat": before[2]}
        out.append(
            Alert(
                kind=f"geofence_{tr.kind.value}",
                severity=_severity(fence, tr.kind, params),
                device_id=ping.device_id,
                ts=ping.ts,
                message=f"{ping.device_id} {_VERBS[tr.kind]} {_KIND_NAMES[fence.kind]} {fence.name!r}",
                port=fence.port,
                fence_id=fence.id,
                evidence=evidence,
                key=f"{fence.id}@{ts}",
            )
        )
    return out


class PrismMark(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The straight line from ``before`` to the device's last fix runs through ``fence_id``'s core; kept for the
    next fix only, which judges it.

    ``proven``: every plausible path between the two fixes went through too, a crossing held until the next fix
    confirms it. Otherwise the mark only says the last fix lies across that fence from the one before it: if the
    next gap is proven to go back through the same fence, the last fix is the odd one out (a multipath jump), not
    the far side of two crossings.
    """

    fence_id: str
    before: Fix
    proven: bool = False


# gc=False: immutable values that hold no container able to point back at them (see DeviceState)
class GeofencePending(msgspec.Struct, frozen=True, omit_defaults=True, gc=False, rename={"entries": "e", "marks": "m"}):
    """What the geofence step carries between fixes when prism marks are held (otherwise just ``entries``).

    A map in the stored state, not an array: a state stored before the marks were typed holds the pending set as a
    plain array of strings, which still decodes as the ``frozenset[str]`` side of the slot's type.
    """

    entries: frozenset[str] = frozenset()
    """Restricted entries waiting for a confirming fix."""
    marks: tuple[PrismMark, ...] = ()
    """Sorted by fence id (equal states encode to equal bytes)."""


Pending = frozenset[str] | GeofencePending
"""The ``geofence_pending`` slot: the waiting entries alone, or with the prism marks held."""

_LEGACY_MARK = "prism:"
"""How states stored before :class:`PrismMark` held a proven crossing in the pending set of strings:
``prism:<fence id>|<iso ts>|<lon>|<lat>`` of the fix before the gap. Read, never written."""


def _split(pending: Pending) -> tuple[frozenset[str], tuple[PrismMark, ...]]:
    """(waiting entries, marks) of a pending slot, whichever form it was stored in."""
    if isinstance(pending, GeofencePending):
        return pending.entries, pending.marks
    if not any(m.startswith(_LEGACY_MARK) for m in pending):
        return pending, ()
    entries = frozenset(m for m in pending if not m.startswith(_LEGACY_MARK))
    marks: list[PrismMark] = []
    for m in sorted(pending - entries):
        try:
            fid, ts, lon, lat = m[len(_LEGACY_MARK) :].rsplit("|", 3)
            marks.append(PrismMark(fid, Fix(datetime.fromisoformat(ts), float(lon), float(lat)), proven=True))
        except ValueError:
            continue  # an unreadable old mark: the crossing it held is lost, the device's other state is not
    return entries, tuple(marks)


def _pending(entries: frozenset[str], marks: Sequence[PrismMark]) -> Pending:
    if not marks:
        return entries
    return GeofencePending(entries, tuple(sorted(marks, key=lambda m: (m.fence_id, m.proven))))


def step(
    index: FenceIndex,
    previous: frozenset[str],
    last: Fix | None,
    ping: Ping,
    params: GeofenceParams,
    pending: Pending = frozenset(),
    raw: frozenset[str] | None = None,
) -> tuple[frozenset[str], list[Alert], Pending]:
    """New membership, the alerts its change raises (exits before enters, then crossings) and what waits for
    the next fix (entries waiting for confirmation, prism marks).

    Entering a fence of ``confirm_entry_kinds`` takes two consecutive fixes inside: a single
    multipath fix 50-300 m off (common beside cranes and stacks) must not raise a high alarm;
    the cost is one reporting interval. ``raw`` as for :func:`membership`.
    """
    entries, marks = _split(pending)
    new = membership(index, previous, ping, raw)
    # most fixes change nothing (the index hands out one shared set per membership): then nothing is entering,
    # no set is rebuilt and the transitions are only the crossings, if any
    same = new is previous or new == previous
    if same:
        new = previous
        waiting: frozenset[str] = _EMPTY
    else:
        confirm = params.confirm_entry_kinds
        entering = frozenset(f for f in new - previous if index.get(f).kind in confirm)
        waiting = entering - entries if entering else _EMPTY
        if waiting:
            new = new - waiting
    seen = previous if same else previous | new
    passed = crossed(index, last, ping, seen | waiting | entries if waiting or entries else seen, params)
    transitions = classify(previous, new, passed) if passed or not same else []
    alerts = alerts_for(index, transitions, ping, last, params)
    held, confirmed = _prism(index, last, ping, seen, marks, params)
    return new, alerts + confirmed if confirmed else alerts, _pending(waiting, held)


def _prism(
    index: FenceIndex,
    last: Fix | None,
    ping: Ping,
    new: frozenset[str],
    marks: Sequence[PrismMark],
    params: GeofenceParams,
) -> tuple[list[PrismMark], list[Alert]]:
    """Proven crossings, each held for one fix: (marks now held, alerts of the crossings the next fix confirmed).

    A multipath jump across a fence makes two chords through it, into the odd fix and out of it, and the prism
    may prove either. The fix on the far side of a proven gap may be the jump: then the next fix comes back
    through the fence (or stands inside it), and both are dropped, as a single fix inside a restricted fence
    confirms no entry. Or the fix before the gap is the jump, and the chord into it left a mark: a proof that
    goes back through the fence it came across is no crossing either. Either way the price is one reporting interval
    before the alert. Marking does not depend on the gap (only the proof does): gaps jitter about any limit.
    """
    rp = params.reach
    if rp is None or last is None:
        return [], []
    through, proven = _judged(index, last, ping, new, params, rp)
    chords_known = 0 < (ping.ts - last.ts).total_seconds() <= rp.max_gap_s  # else ``through`` was not computed
    confirmed: list[Alert] = []
    odd: set[str] = set()
    for m in marks:
        if m.fence_id not in index:
            continue  # a fence reload removed it
        fence = index.get(m.fence_id)
        back = m.fence_id in through or m.fence_id in new
        if not back and m.proven and (not chords_known or fence.windows):
            # ``through`` leaves out a fence whose time window is closed at this fix: the way back across it is
            # still the way back (a window closing between the jump and the return proves no crossing)
            back = reachability.chord_enters(fence, last, ping, rp, _graph(index, fence.port, rp))
        if back:
            odd.add(m.fence_id)  # back across (or inside): the fix between was the odd one out
            continue
        if not m.proven:
            continue
        before = (m.before.lon, m.before.lat, m.before.ts.timestamp())
        after = (last.lon, last.lat, last.ts.timestamp())
        graph = _graph(index, fence.port, rp)
        verdict = reachability.judge(graph, fence, before, after, rp, _places(index, fence.port))
        if verdict.crossed:
            confirmed.append(_proven_alert(index, fence, ping.device_id, last, before, verdict, params))
    held = [
        PrismMark(fid, last, fid in proven)
        for fid, inside_m in through.items()
        if fid not in odd and (fid in proven or inside_m >= rp.outlier_chord_m)
    ]
    return held, confirmed


_CHORD_PAD_DEG = 1e-5
"""About a metre: a straight line in the local projection and in lon/lat differ by far less over a 15-minute gap."""


_GRAPHS: WeakKeyDictionary[FenceIndex, dict[tuple[str, float, float, float], reachability.CorridorGraph | None]] = (
    WeakKeyDictionary()
)


_Watched = tuple[tuple[Fence, float, float, float, float], ...]
"""Fences of the watched kinds with their bounding boxes (lon/lat), read once per index instead of once per fix."""
_LAST_GRAPHS: tuple[FenceIndex | None, dict[tuple[str, float, float, float], reachability.CorridorGraph | None]] = (
    None,
    {},
)
"""The last index's graphs at hand (asked at every fix; the weak map is for fence reloads)."""
_WATCHED: WeakKeyDictionary[FenceIndex, dict[frozenset[FenceKind], _Watched]] = WeakKeyDictionary()
_LAST_WATCHED: tuple[FenceIndex | None, dict[frozenset[FenceKind], _Watched]] = (None, {})


def _graph(index: FenceIndex, port: str, params: reachability.ReachParams) -> reachability.CorridorGraph | None:
    """The port's corridor graph, built on first use for this index (fence reloads bring a new index) and these
    building thresholds."""
    global _LAST_GRAPHS
    last_index, per_port = _LAST_GRAPHS
    if last_index is not index:
        per_port = _GRAPHS.setdefault(index, {})
        _LAST_GRAPHS = (index, per_port)
    key = (port, params.snap_m, params.exit_m, params.densify_m)  # what the build reads (ports may differ)
    if key not in per_port:
        per_port[key] = reachability.CorridorGraph.build((f for f in index.fences if f.port == port), params)
    return per_port[key]


OFF_ROAD_KINDS = frozenset(
    {
        FenceKind.TERMINAL,
        FenceKind.CUSTOMS_YARD,
        FenceKind.GATE,
        FenceKind.QUAY,
        FenceKind.INSPECTION_AREA,
        FenceKind.AUTHORIZED_PARKING,
    }
)
"""Places a vehicle drives in off the corridors (reachability lets a fix there join the roads from further)."""
_PLACES: WeakKeyDictionary[FenceIndex, dict[str, BaseGeometry]] = WeakKeyDictionary()


_LAST_PLACES: tuple[FenceIndex | None, dict[str, BaseGeometry]] = (None, {})
"""The last index's unions at hand (the weak map is for fence reloads), as for the graphs."""


def _places(index: FenceIndex, port: str) -> BaseGeometry:
    global _LAST_PLACES
    last_index, per_port = _LAST_PLACES
    if last_index is not index:
        per_port = _PLACES.setdefault(index, {})
        _LAST_PLACES = (index, per_port)
    if port not in per_port:
        geom = shapely.union_all([f.geometry for f in index.fences if f.port == port and f.kind in OFF_ROAD_KINDS])
        shapely.prepare(geom)
        per_port[port] = geom
    return per_port[port]


def _watched(index: FenceIndex, kinds: frozenset[FenceKind]) -> _Watched:
    """Asked at every fix: the last index's table is kept at hand (the weak map is for fence reloads)."""
    global _LAST_WATCHED
    last_index, per_kinds = _LAST_WATCHED
    if last_index is not index:
        per_kinds = _WATCHED.setdefault(index, {})
        _LAST_WATCHED = (index, per_kinds)
    found = per_kinds.get(kinds)
    if found is None:
        boxes = [(f, f.geometry.bounds) for f in index.fences if f.kind in kinds]
        found = per_kinds[kinds] = tuple((f, float(b[0]), float(b[1]), float(b[2]), float(b[3])) for f, b in boxes)
    return found


def proven_crossings(
    index: FenceIndex, last: Fix | None, ping: Ping, exclude: frozenset[str], params: GeofenceParams
) -> dict[str, reachability.Verdict]:
    """Fences of ``confirm_entry_kinds`` every plausible path between two sparse fixes goes through."""
    if params.reach is None or last is None:
        return {}
    return _judged(index, last, ping, exclude, params, params.reach)[1]


def _judged(
    index: FenceIndex,
    last: Fix,
    ping: Ping,
    exclude: frozenset[str],
    params: GeofenceParams,
    rp: reachability.ReachParams,
) -> tuple[dict[str, float], dict[str, reachability.Verdict]]:
    """(metres of the straight line inside each watched fence it runs through, the verdicts of those proven)."""
    gap = (ping.ts - last.ts).total_seconds()
    if not 0 < gap <= rp.max_gap_s:
        return {}, {}
    # a crossing is proven only where the straight line between the fixes runs through the fence (otherwise
    # ``judge`` answers "straight_line_avoids"): fences whose box misses the chord's box (padded by ~1 m for the
    # projection) cannot be crossed and are not judged. The prism's own box (budget/2 around the midpoint,
    # kilometres for a 5-minute gap) let nearly every restricted fence of the port through to the full judgement.
    pad = _CHORD_PAD_DEG
    lo_lon, hi_lon = min(last.lon, ping.lon) - pad, max(last.lon, ping.lon) + pad
    lo_lat, hi_lat = min(last.lat, ping.lat) - pad, max(last.lat, ping.lat) + pad
    through: dict[str, float] = {}
    out: dict[str, reachability.Verdict] = {}
    for fence, x0, y0, x1, y1 in _watched(index, params.confirm_entry_kinds):
        if x1 < lo_lon or x0 > hi_lon or y1 < lo_lat or y0 > hi_lat or fence.id in exclude:
            continue
        if fence.windows and not any(w.active(ping.ts) for w in fence.windows):
            continue
        graph = _graph(index, fence.port, rp)
        inside_m = reachability.chord_through(graph, fence, last, ping, rp)
        if inside_m <= 0:
            continue
        through[fence.id] = inside_m
        if gap < rp.min_gap_s:
            continue
        verdict = reachability.judge(
            graph,
            fence,
            (last.lon, last.lat, last.ts.timestamp()),
            (ping.lon, ping.lat, ping.ts.timestamp()),
            rp,
            _places(index, fence.port),
        )
        if verdict.crossed:
            out[fence.id] = verdict
    return through, out


def _proven_alert(
    index: FenceIndex,
    fence: Fence,
    device_id: str,
    far: Fix,
    before: tuple[float, float, float],
    verdict: reachability.Verdict,
    params: GeofenceParams,
) -> Alert:
    """A crossing the prism proves is an entry in all but the fix inside: it is raised at the entry's severity, at
    the time of the fix on the far side."""
    speed = params.reach.max_speed_ms if params.reach is not None else 0.0
    return Alert(
        kind="geofence_cross",
        severity=_severity(fence, TransitionKind.ENTER, params),
        device_id=device_id,
        ts=far.ts,
        message=(
            f"{device_id} must have passed through {fence.kind.value.replace('_', ' ')} {fence.name!r}: "
            f"no road around it fits {verdict.gap_s:.0f} s between two fixes at {speed:g} m/s"
        ),
        port=fence.port,
        fence_id=fence.id,
        evidence={
            "fence": {"id": fence.id, "name": fence.name, "kind": fence.kind.value},
            "fix": {"ts": far.ts.isoformat(), "lon": far.lon, "lat": far.lat},
            "previous_fix": {
                "ts": datetime.fromtimestamp(before[2], tz=far.ts.tzinfo).isoformat(),
                "lon": before[0],
                "lat": before[1],
            },
            "reachability": verdict.evidence(),
        },
        key=f"{fence.id}@{far.ts.isoformat()}:prism",  # a chord crossing of the same fix (<= 90 s) is another alert
    )
