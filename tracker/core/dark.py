"""Going dark: a tracker inside the port that stops reporting.

Wrapping a tracker in foil, pulling its fuse or running a cheap jammer is the first
thing an insider does before touching a container, so silence inside the port is a
security fact in itself. Outside every port fence it is not: the truck went home.

"Silent" is relative to the device's own rhythm. The expected interval is the median
of the device's last intervals (a median, so one long tunnel or one burst of retries
does not shift it, while a tracker configured slower than its kind's default is learned
after a few fixes), with a per-kind default until enough intervals were seen. The
limit is ``k`` expected intervals, never below ``min_gap_s``, so a 1 Hz tracker does
not alarm after three seconds under a crane.

Real trackers save battery when parked: a container set down in a yard, or a truck
waiting at a gate, typically drops to one fix every five minutes. That is not silence,
and a limit learned while the device was being hauled (10-60 s) would call every parked
fix a loss. So the rhythm is learned twice, from the intervals that follow a moving fix
and from those that follow a stationary one (``motion.stationary_since`` at that fix),
and the two never mix: a day in a yard does not slow down the limit applied once the
box is on the road again, and a fast haul does not tighten the yard limit. While the
last fix was stationary the limit is at least ``k × parked_interval_s``, the slowest
parked rhythm a tracker may switch to without warning, unless the truck has already
shown how it behaves parked: once it has been watched standing still for five minutes
and kept reporting at its pace throughout (this stop, or an earlier one at least as
long), it is judged by the slowest interval it ever showed while parked. A tracker that
switches to a stop mode shows that switch (a slow interval) the first time it is parked
long enough, and is held to the slow interval from then on. A moving device keeps the
tight limit, which is where going dark matters most.

A device that was parked when it fell silent and reappears far away (beyond ``woke_m``)
drove while saying nothing, and trackers wake when their vehicle moves: that silence is
judged by the moving limit when the device speaks again (a late alert, but not a lost one).

The loss is raised by ticks (``ts`` = last fix + limit, the moment silence became
abnormal, so the alert does not depend on tick jitter). A fix that arrives after a gap
no tick reported (a replay, or a service restart) raises the same loss with the same
id and restores it at once, so offline replays find every gap live operation finds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar
from weakref import WeakKeyDictionary

import msgspec
import shapely
from shapely.geometry.base import BaseGeometry

from geofences import FenceIndex, FenceKind, buffer_m
from tracker.core.detector import Detector, FixContext, TickContext, first_after
from tracker.core.fix import Fix
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Event, Inspection, InspectionResult, Ping, Severity
from tracker.core.rules import clip_interval, median, median_silence_limit, silence_limit, silent

if TYPE_CHECKING:  # the device state holds this detector's state type: a runtime import would be circular
    from tracker.core.state import DeviceState

__all__ = ["DarkDetector", "DarkParams", "DarkState"]

RESTORED = "signal_restored"


def _default_intervals() -> Mapping[DeviceKind, float]:
    return MappingProxyType({DeviceKind.TRUCK: 30.0, DeviceKind.CONTAINER: 60.0, DeviceKind.SEAL: 300.0})


@dataclass(frozen=True, slots=True)
class DarkParams:
    """Thresholds of the going-dark detector.

    ``default_interval_s``: what a device of each kind is configured to send before its
    own rhythm is known (truck 30 s, container 60 s, seal 300 s). ``history``: how many
    recent intervals the median looks at (16) and ``min_samples`` how many it needs
    before it replaces the default (4). Intervals are clipped to [``min_interval_s``,
    ``max_interval_s``] = [1 s, 10 min] so a burst of buffered fixes or one long parked
    gap cannot set an absurd rhythm. ``k`` = 3 missed reports, and never less than
    ``min_gap_s`` = 120 s of silence. ``moved_m``: a device that reappears more than
    200 m from where it vanished gets a medium rather than low ``signal_restored``.
    ``parked_interval_s`` (300 s): the reporting interval trackers commonly fall back to
    once parked; after a stationary fix the limit is at least ``k`` of them (15 min), since
    the device may legitimately say nothing until then, unless its parked rhythm is proven.
    ``proven_parked_s`` (300 s): how long the device must have been watched standing still in
    one stop, reporting all along, before its parked rhythm is trusted for that stop (and, in
    later stops, up to the longest such stop); the parked limit is then ``k`` × the slowest
    interval it ever showed while parked.
    ``proven_kinds`` (trucks): the kinds whose parked rhythm may be proven. A truck's tracker
    runs on the vehicle's power; a container's or a seal's runs on a battery and drops to its
    yard rhythm the moment the box is set down, however long it kept its pace at earlier stops.
    """

    default_interval_s: Mapping[DeviceKind, float] = field(default_factory=_default_intervals)
    k: float = 3.0
    min_gap_s: float = 120.0
    history: int = 16
    min_samples: int = 4
    min_interval_s: float = 1.0
    max_interval_s: float = 600.0
    moved_m: float = 200.0
    parked_interval_s: float = 300.0
    proven_parked_s: float = 300.0
    yard_speed_ms: float = 4.0
    """A box in a terminal or yard moving no faster than this (reported) is being set down: parked limit."""
    woke_m: float = 1500.0
    """A tracker asleep in its stop mode wakes when its vehicle moves and reports within a minute (a cold
    GNSS fix included): at 25 m/s that is 1.5 km. Reappearing further than this from where it fell silent
    while parked, it drove without reporting."""
    proven_kinds: frozenset[DeviceKind] = frozenset({DeviceKind.TRUCK})
    lost_severity: Severity = Severity.MEDIUM
    stopping_speed_ms: float = 2.0
    """A device slower than this at its last fix (its reported speed, else the chord from the fix before) is coming
    to a halt or creeping in a queue: its tracker may fall to its parked rhythm at once, before the stationary model
    (two fixes 20 s apart in one spot) has seen the stop, so the parked limit applies there. Trackers that log on
    motion go quiet within seconds of stopping (two of the four losses of public GeoLife traces replayed into Santos:
    silent 12 and 2.5 minutes, each reappearing within 75 m). Below the slowest a truck drives in traffic, so a
    blackout while driving keeps the tight limit. Never close to a restricted fence (see ``halt_clear_m``)."""
    halt_clear_m: float = 50.0
    """Inside an authorised stop zone (terminal, gate, parking, inspection area, customs yard) slowing down buys the
    parked limit only this far from every restricted fence: one slow fix followed by a jammer beside a restricted lot
    must not buy fifteen minutes unwatched next to it. A device that really stands there still gets the parked limit
    once the stationary model has seen it stand (two fixes in one spot)."""
    halt_clear_open_m: float = 300.0
    """Outside authorised stop zones (roads, open port ground) the clearance from every restricted fence is wider:
    nobody parks there on purpose, yet honest trackers do go quiet there as they stop (the two GeoLife losses above
    were on open ground, over 300 m from any restricted lot), so denying the grace everywhere would flag them."""


# gc=False: immutable values that hold no container able to point back at them (see DeviceState)
class DarkState(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """What the going-dark rule remembers about one device (stored by ``tracker.core.codec``)."""

    last: Fix
    fences: tuple[str, ...]  # fences at the last fix; empty means "outside the port"
    intervals: tuple[float, ...]  # intervals that followed a moving fix
    lost: Alert | None  # the raised signal_lost alert, exactly as raised, until the signal is back
    parked: tuple[float, ...] = ()  # intervals that followed a stationary fix
    stationary: bool = False  # whether the device stood still at the last fix
    stopped_for_s: float = 0.0  # how long the stop of the last fix had lasted at that fix
    stop_tainted: bool = False  # a loss was raised during the stop of the last fix
    proven_s: float = 0.0  # the longest earlier stop watched with the device reporting throughout
    slowest_parked_s: float = 0.0  # the slowest interval ever seen after a stationary fix (losses: at most 300 s)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], device_id: str) -> DarkState:
        """The JSON form states were stored in before ``tracker.core.codec`` (read once after an upgrade)."""
        last = data["last"]
        lost = data.get("lost")
        return cls(
            last=Fix(datetime.fromisoformat(last["ts"]), float(last["lon"]), float(last["lat"])),
            fences=tuple(data.get("fences", ())),
            intervals=tuple(float(x) for x in data.get("intervals", ())),
            lost=None if lost is None else DarkDetector._alert(DarkDetector.name, lost, device_id),
            parked=tuple(float(x) for x in data.get("parked", ())),
            stationary=bool(data.get("stationary", False)),
            stopped_for_s=float(data.get("stopped_for_s", 0.0)),
            stop_tainted=bool(data.get("stop_tainted", False)),
            proven_s=float(data.get("proven_s", 0.0)),
            slowest_parked_s=float(data.get("slowest_parked_s", 0.0)),
        )


_MAX_SORTED = 1 << 14
# which rule gave a device's expected interval (DarkDetector._expected_rule, _parked_rule)
_BY_MEDIAN, _BY_PARKED_HINT, _BY_FIRST, _BY_DEFAULT, _BY_PROVEN, _BY_ALLOWANCE = range(6)
_SORTED: dict[frozenset[str], tuple[str, ...]] = {}
_CONTAINER, _RESTRICTED = DeviceKind.CONTAINER, FenceKind.RESTRICTED
# (enum members read through their class cost several times a global's lookup: asked on every fix)


def _sorted(fences: frozenset[str]) -> tuple[str, ...]:
    """The fence ids in order, as the state keeps them: a few hundred distinct sets, asked on every fix."""
    got = _SORTED.get(fences)
    if got is None:
        if len(_SORTED) >= _MAX_SORTED:
            _SORTED.clear()
        got = _SORTED[fences] = tuple(sorted(fences))
    return got


_NEAR_RESTRICTED: WeakKeyDictionary[FenceIndex, dict[float, tuple[BaseGeometry, ...]]] = WeakKeyDictionary()


def _near_restricted(index: FenceIndex, metres: float) -> tuple[BaseGeometry, ...]:
    """The restricted fences of ``index`` grown by ``metres`` (prepared), built once per index: it is immutable."""
    known = _NEAR_RESTRICTED.setdefault(index, {})
    got = known.get(metres)
    if got is None:
        grown = [buffer_m(f.geometry, metres) for f in index.fences if f.kind is FenceKind.RESTRICTED]
        for g in grown:
            shapely.prepare(g)
        got = known[metres] = tuple(grown)
    return got


def _fix_json(f: Fix) -> dict[str, Any]:
    return {"ts": f.ts.isoformat(), "lon": f.lon, "lat": f.lat}


class DarkDetector(Detector[DarkState | None]):
    """Raises ``signal_lost`` for a silent tracker in the port, then closes it and raises ``signal_restored``."""

    name: ClassVar[str] = "signal_lost"
    Params: ClassVar[type[DarkParams]] = DarkParams

    def read(self, device: DeviceState) -> DarkState | None:
        return device.signal_lost

    def write(self, device: DeviceState, state: DarkState | None) -> None:
        device.signal_lost = state

    def __init__(self, params: DarkParams | None = None) -> None:
        self.params = params or DarkParams()

    def expected(
        self, kind: DeviceKind, intervals: tuple[float, ...], parked: tuple[float, ...] = ()
    ) -> tuple[float, str]:
        """Expected reporting interval and where it comes from (for the evidence).

        ``parked``: when given, the device's parked intervals, a hint while its moving rhythm is not
        known at all: a box that reported every five minutes in its yard and has just been lifted onto
        a truck is not expected to report every minute before it showed that it does.
        """
        value, rule = self._expected_rule(kind, intervals, parked)
        return value, self._basis(rule, kind, intervals, parked)

    def _expected_rule(
        self, kind: DeviceKind, intervals: tuple[float, ...], parked: tuple[float, ...] = ()
    ) -> tuple[float, int]:
        """:meth:`expected` with the rule that gave the interval instead of its wording: the limit is asked for
        at every fix and due time, its wording only when a loss is raised."""
        p = self.params
        if len(intervals) >= p.min_samples:
            return median(intervals), _BY_MEDIAN
        default = float(p.default_interval_s.get(kind, p.min_gap_s / p.k))
        if not intervals and parked and (hint := median(parked)) > default:
            return hint, _BY_PARKED_HINT
        if intervals and (seen := median(intervals)) > default:
            # a tracker configured slower than its kind's default says so with its first intervals; waiting
            # for ``min_samples`` of them would raise a loss on each. A faster one is not trusted that early.
            return seen, _BY_FIRST
        return default, _BY_DEFAULT

    @staticmethod
    def _basis(rule: int, kind: DeviceKind, intervals: tuple[float, ...], parked: tuple[float, ...]) -> str:
        """Where an expected interval of :meth:`_expected_rule` comes from, for the evidence."""
        if rule == _BY_MEDIAN:
            return f"median of the last {len(intervals)} intervals"
        if rule == _BY_PARKED_HINT:
            return f"median of {len(parked)} parked intervals (moving rhythm not yet seen)"
        if rule == _BY_FIRST:
            return f"median of the first {len(intervals)} intervals"
        return f"default for {kind.value}"

    def parked_expected(
        self, kind: DeviceKind, parked: tuple[float, ...], proven: float | None = None
    ) -> tuple[float, str]:
        """Expected interval after a stationary fix.

        A parked tracker may switch to its battery-saving rhythm at any moment, so one whose
        parked behaviour is not ``proven`` for a stop this long gets at least the parked
        allowance. A proven one (``proven``: the slowest interval it ever showed while parked)
        is held to that interval, not to a median: a tracker with a stop mode mixes fast and
        slow intervals, and the slow one is the rhythm it may fall back to.
        """
        value, rule = self._parked_rule(kind, parked, proven)
        if rule == _BY_PROVEN:
            return value, "parked: slowest interval seen while parked (proven rhythm)"
        if rule == _BY_ALLOWANCE:
            return value, "parked allowance"
        return value, f"parked: {self._basis(rule, kind, parked, ())}"

    def _parked_rule(self, kind: DeviceKind, parked: tuple[float, ...], proven: float | None) -> tuple[float, int]:
        """:meth:`parked_expected` with the rule instead of its wording (see :meth:`_expected_rule`)."""
        p = self.params
        if proven is not None and len(parked) >= p.min_samples:
            return max(proven, *parked), _BY_PROVEN
        learned, rule = self._expected_rule(kind, parked)
        if learned >= p.parked_interval_s:
            return learned, rule
        return p.parked_interval_s, _BY_ALLOWANCE

    def limit(
        self,
        kind: DeviceKind,
        intervals: tuple[float, ...],
        parked: tuple[float, ...] | None = None,
        proven: float | None = None,
    ) -> float:
        """Seconds of silence after which the device counts as lost.

        ``parked`` is given when the device's last fix was stationary (its parked intervals,
        possibly empty); None means it was moving. ``proven``: the slowest parked interval,
        given when the parked rhythm is proven for a stop as long as the current one.
        """
        return self._limit(kind, intervals, parked, proven)[0]

    def _limit(
        self,
        kind: DeviceKind,
        intervals: tuple[float, ...],
        parked: tuple[float, ...] | None,
        proven: float | None = None,
        hint: tuple[float, ...] = (),
    ) -> tuple[float, float, str]:
        """(limit, expected interval, where the expected interval comes from); ``hint``: see ``expected``."""
        p = self.params
        if parked is None:
            expected, basis = self.expected(kind, intervals, hint)
        else:
            expected, basis = self.parked_expected(kind, parked, proven)
        return silence_limit(expected, p.k, p.min_gap_s), expected, basis

    def _proven(self, st: DarkState) -> float | None:
        """The slowest parked interval, if the device's parked rhythm is proven for this stop; None otherwise.

        Proven: this stop has been watched for ``proven_parked_s`` with no loss in it, or an earlier stop at
        least as long as this one has lasted was. Trackers switch to a stop mode when they sense the stop
        (ignition off, no motion for a minute or two), so one still at its pace after five minutes parked has
        shown how it reports parked. One that switches later than that raises one loss, then carries the slow
        interval in ``slowest_parked_s`` and is held to it from then on.
        """
        p = self.params
        watched_now = st.stopped_for_s >= p.proven_parked_s and not st.stop_tainted
        watched_before = st.proven_s >= p.proven_parked_s and st.stopped_for_s <= st.proven_s
        return st.slowest_parked_s if watched_now or watched_before else None

    def _state_limit(self, kind: DeviceKind, st: DarkState) -> tuple[float, float, str]:
        proven = self._proven(st) if kind in self.params.proven_kinds else None
        return self._limit(kind, st.intervals, st.parked if st.stationary else None, proven, st.parked)

    def _state_limit_s(self, kind: DeviceKind, st: DarkState) -> float:
        """The limit of :meth:`_state_limit` alone: what fixes, due times and ticks compare a silence with."""
        p = self.params
        if st.stationary:
            proven = self._proven(st) if kind in p.proven_kinds else None
            expected = self._parked_rule(kind, st.parked, proven)[0]
        else:
            intervals = st.intervals
            if len(intervals) >= p.min_samples:
                # a moving device with its rhythm learned, the usual case at every due time (``_expected_rule``'s
                # median, then ``silence_limit``, without the calls between)
                return median_silence_limit(intervals, p.k, p.min_gap_s)
            expected = self._expected_rule(kind, intervals, st.parked)[0]
        return silence_limit(expected, p.k, p.min_gap_s)

    # -- alerts ----------------------------------------------------------------------------

    def _lost(
        self, device_id: str, kind: DeviceKind, st: DarkState, index: FenceIndex, moved_m: float | None = None
    ) -> dict[str, Any]:
        """The loss's fields; ``moved_m``: it reappeared that far away, so it was judged as moving (see on_fix)."""
        p = self.params
        if moved_m is None:
            limit, expected, basis = self._state_limit(kind, st)
        else:
            limit, expected, basis = self._limit(kind, st.intervals, None, None, st.parked)
            basis = f"{basis}; moved {moved_m:.0f} m while silent, so it was not parked"
        fences = [index.get(f) for f in st.fences if f in index]
        named = next((f for f in fences if f.kind.value != "port_boundary"), fences[0] if fences else None)
        where = f" in {named.kind.value.replace('_', ' ')} {named.name!r}" if named else ""
        return {
            "severity": p.lost_severity.value,
            "ts": (st.last.ts + timedelta(seconds=limit)).isoformat(),
            "message": f"{device_id} stopped reporting{where}: silent for over {limit:.0f} s "
            f"(expected a fix every {expected:.0f} s)",
            "port": named.port if named else None,
            "fence_id": named.id if named else None,
            "key": st.last.ts.isoformat(),
            "evidence": {
                "last_fix": _fix_json(st.last),
                "fences": [{"id": f.id, "name": f.name, "kind": f.kind.value} for f in fences],
                "expected_interval_s": expected,
                "expected_interval_basis": basis,
                "k": p.k,
                "min_gap_s": p.min_gap_s,
                "limit_s": limit,
                "stationary_at_last_fix": st.stationary,
                "parked_interval_s": p.parked_interval_s,
                "stopped_for_s": st.stopped_for_s if st.stationary else None,
                "proven_parked_s": st.proven_s,
                "device_kind": kind.value,
            },
        }

    @staticmethod
    def _alert(kind: str, data: Mapping[str, Any], device_id: str) -> Alert:
        return Alert.from_state({**data, "kind": kind, "device_id": device_id})

    def _restore(self, device_id: str, lost_alert: Alert, before: Fix, ping: Ping, moved: float) -> list[Event]:
        """``moved``: ``haversine_m`` from ``before`` to ``ping``."""
        gap = (ping.ts - before.ts).total_seconds()
        after = Fix.of(ping)
        far = moved > self.params.moved_m
        restored = Alert(
            kind=RESTORED,
            severity=Severity.MEDIUM if far else Severity.LOW,
            device_id=device_id,
            ts=ping.ts,
            message=f"{device_id} is reporting again after {gap:.0f} s of silence, "
            f"{moved:.0f} m from where it went silent",
            port=lost_alert.port,
            fence_id=lost_alert.fence_id,
            evidence={
                "lost_alert_id": str(lost_alert.id),
                "last_fix_before": _fix_json(before),
                "first_fix_after": _fix_json(after),
                "gap_s": gap,
                "distance_m": moved,
                "moved_threshold_m": self.params.moved_m,
                "limit_s": lost_alert.evidence["limit_s"],
            },
            key=before.ts.isoformat(),
        )
        update = AlertUpdate(
            alert=lost_alert,
            ts=ping.ts,
            fields={"restored_at": ping.ts.isoformat(), "gap_s": gap, "distance_m": moved},
            closes=True,
        )
        return [update, restored]

    # -- detector protocol -----------------------------------------------------------------

    def on_fix(self, state: DarkState | None, ping: Ping, ctx: FixContext) -> tuple[DarkState | None, list[Event]]:
        p = self.params
        st = state
        if st is None and ctx.previous is not None:
            # no memory of this device (first run of the detector): the pipeline still knows its last fix
            st = DarkState(ctx.previous, _sorted(ctx.fences_before), (), None)
        events: list[Event] = []
        intervals: tuple[float, ...] = ()
        parked: tuple[float, ...] = ()
        proven = 0.0 if st is None else st.proven_s
        slowest = 0.0 if st is None else st.slowest_parked_s
        lost_here = False
        if st is not None:
            if ping.ts <= st.last.ts:
                return st, []
            gap = (ping.ts - st.last.ts).total_seconds()
            lost = st.lost
            # every limit is at least ``min_gap_s``: a shorter gap (nearly every fix) needs no limit worked out
            late = gap > p.min_gap_s
            if late and lost is None and st.fences and gap > self._state_limit_s(ctx.kind, st):
                lost = self._alert(self.name, self._lost(ctx.device_id, ctx.kind, st, ctx.index), ctx.device_id)
                events.append(lost)
            elif (
                late
                and lost is None
                and st.fences
                and st.stationary
                and (moved := ctx.hop_from(st.last, ping)) > p.woke_m
                and gap > self._limit(ctx.kind, st.intervals, None, None, st.parked)[0]
            ):
                # the parked allowance is for a tracker asleep in its stop mode; trackers wake when their vehicle
                # moves, so one that reappears far away drove while saying nothing: judged as a moving one, late
                fields = self._lost(ctx.device_id, ctx.kind, st, ctx.index, moved_m=moved)
                lost = self._alert(self.name, fields, ctx.device_id)
                events.append(lost)
            if lost is not None:
                lost_here = True
                events.extend(self._restore(ctx.device_id, lost, st.last, ping, ctx.hop_from(st.last, ping)))
            # losses are learned too (clipped): the median shrugs off the odd one, and a tracker whose
            # real rhythm is slower than its kind's default must not stay "lost" on every single fix.
            # The interval belongs to the mode of the fix it follows: that is the rhythm the tracker chose.
            clipped = clip_interval(gap, p.min_interval_s, p.max_interval_s)
            intervals, parked = st.intervals, st.parked
            if st.stationary:
                # a silence that was raised as a loss is learned no slower than the parked allowance: a tracker that
                # switched to its stop mode is held to that pace from then on, while a blackout cannot stretch the
                # device's limit beyond what an unproven tracker gets anyway. Nor can a silence that began outside
                # the port, unwatched: a truck parked in town between two jobs says nothing for hours, and learned
                # as its parked rhythm that gap held it to 30 minutes of silence in every later stop
                capped = min(clipped, p.parked_interval_s) if lost_here or not st.fences else clipped
                parked = (*parked, capped)[-p.history :]
                slowest = max(slowest, capped)
            else:
                intervals = (*intervals, clipped)[-p.history :]
        since = ctx.motion.stationary_since
        stationary = since is not None or (
            st is not None and self._stopping(ping, st.last, ctx) and self._may_halt(ping, ctx)
        )
        stopped_for = 0.0 if since is None else max(0.0, (ping.ts - since).total_seconds())
        if ctx.kind is _CONTAINER and ctx.authorized_stop():
            if st is None:
                # a first fix cannot show motion; a box first heard in a terminal or at a gate is standing there
                # (it spends days in yards and moves only on a truck, itself watched), so it gets the parked limit
                stationary = True
            elif (
                not stationary
                and ping.speed is not None
                and ping.speed <= p.yard_speed_ms
                and self._may_halt(ping, ctx)
            ):
                # crawling to its slot in a yard: the next thing a box does there is to be set down and sleep, and
                # its tracker falls to its yard rhythm at once. Not beside a restricted lot (``_may_halt``): one
                # crawling fix there, then a jammer, must not buy the box fifteen minutes unwatched next to it
                stationary = True
        same_stop = st is not None and st.stationary and stationary and stopped_for >= st.stopped_for_s
        if st is not None and st.stationary and not same_stop and not st.stop_tainted:
            # a stop that is over, watched with no loss in it, proves the parked rhythm for that long
            proven = max(proven, st.stopped_for_s)
        tainted = lost_here or (same_stop and st is not None and st.stop_tainted)
        new = DarkState(
            Fix.of(ping),
            _sorted(ctx.fences),
            intervals,
            None,
            parked,
            stationary,
            stopped_for,
            tainted,
            proven,
            slowest,
        )
        return new, events

    def _stopping(self, ping: Ping, before: Fix, ctx: FixContext) -> bool:
        """Whether the device is slower than ``stopping_speed_ms`` at this fix: reported, else from the chord."""
        if ping.speed is not None:
            return ping.speed < self.params.stopping_speed_ms
        dt = (ping.ts - before.ts).total_seconds()
        if dt <= 0:
            return False
        return ctx.hop_from(before, ping) / dt < self.params.stopping_speed_ms

    def _may_halt(self, ping: Ping, ctx: FixContext) -> bool:
        """Whether a device slowing down here may be granted the parked limit before it is seen standing.

        Never inside a restricted fence nor within ``halt_clear_m`` of one (``halt_clear_open_m`` outside an
        authorised stop zone): a truck braking into a terminal slot, a gate queue or on open ground far from any
        restricted lot is likely parking, one braking beside a restricted lot has no reason to, and an insider's
        jammer there must not be excused by one slow fix.
        """
        index = ctx.index
        if any(f in index and index.get(f).kind is _RESTRICTED for f in ctx.fences):
            return False
        clear = self.params.halt_clear_m if ctx.authorized_stop() else self.params.halt_clear_open_m
        return not any(shapely.contains_xy(g, ping.lon, ping.lat) for g in _near_restricted(index, clear))

    def on_inspection(
        self, state: DarkState | None, inspection: Inspection, ctx: TickContext
    ) -> tuple[DarkState | None, list[Event]]:
        """A container reported loaded is on board: its tracker going quiet in the hold is expected.

        Only a silence that has not yet been reported is forgiven (the fences are cleared as if
        it had left the port); a loss already raised stays for the officer, and the next fix
        makes the device watched again.
        """
        st = state
        if st is None or inspection.result is not InspectionResult.LOADED:
            return state, []
        if st.lost is not None or inspection.ts < st.last.ts:
            return state, []
        return msgspec.structs.replace(st, fences=(), lost=None), []

    def next_due(self, state: DarkState | None, ctx: TickContext, after: datetime | None) -> datetime | None:
        """The first instant the silence exceeds the limit, for a device last heard inside the port and not
        already reported lost (the only one ``on_tick`` can raise)."""
        if state is None or state.lost is not None or not state.fences:
            return None
        return first_after(state.last.ts, self._state_limit_s(ctx.kind, state))

    def on_tick(self, state: DarkState | None, now: datetime, ctx: TickContext) -> tuple[DarkState | None, list[Event]]:
        st = state
        if st is None or st.lost is not None or not st.fences:
            return state, []
        if not silent(st.last.ts, now, self._state_limit_s(ctx.kind, st)):
            return state, []
        lost = self._alert(self.name, self._lost(ctx.device_id, ctx.kind, st, ctx.index), ctx.device_id)
        return msgspec.structs.replace(st, lost=lost), [lost]
