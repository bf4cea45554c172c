"""The per-device decision step: ``step(state, ping) -> (state, events, flags)``.

Pure: no clock, no I/O. The service guarantees one writer per device, so a device's
fixes arrive here one at a time in the order the service decided on. Order of work
for one fix, each computed once and shared:

1. a fix not newer than the last accepted one is only flagged (``late``/``duplicate_ts``):
   its verdicts would be about the past, and replays must not raise alerts twice;
2. the integrity pre-filter: an implausible fix (spoofing, jamming) is stored and
   flagged but never reaches the detectors, nor becomes the reference for the next one;
3. motion (stationary or not) and fence membership, then every detector in turn;
4. the world view (latest position of every device) is updated last, so cross-device
   detectors see the other devices as they were before this fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import msgspec

from geofences import FenceIndex, FenceKind, haversine_m
from tracker.core import geofence, motion
from tracker.core.dark import DarkDetector
from tracker.core.detector import Detector, FixContext, Motion, TickContext, in_authorized_zone
from tracker.core.dwell import DwellDetector
from tracker.core.geofence import GeofenceParams
from tracker.core.inspection import AccessWindowDetector
from tracker.core.integrity import IntegrityCheck, accepted
from tracker.core.model import AlertUpdate, DeviceKind, Event, Inspection, Ping
from tracker.core.motion import MotionParams
from tracker.core.pairing import PairingDetector
from tracker.core.params import DetectorParams
from tracker.core.rendezvous import RendezvousDetector
from tracker.core.rules import believed_speed
from tracker.core.state import DeviceState, Fix
from tracker.core.stops import StopDetector
from tracker.core.trips import Trip, TripSegmenter
from tracker.core.world import Position, World

TICK_QUIET_S = 30.0
"""A device heard from this recently was just judged on a fix: every timer rule needs a longer silence."""
TICK_HORIZON_S = 24 * 3600.0
"""Devices silent for longer than this are no longer ticked (their silence was already reported)."""
_QUIET = timedelta(seconds=TICK_QUIET_S)
_HORIZON = timedelta(seconds=TICK_HORIZON_S)
_INSTANT = timedelta(microseconds=1)
_UNKNOWN = "\x00unknown"  # not a port name: a fence set whose port is not kept yet
_MAX_PORTS_OF = 1 << 14
_MAX_RAW = 1 << 15
"""Points whose raw membership ``prefetch`` keeps across batches (about 5 MiB at most, then it starts afresh): more
than one fix per device of a busy port, whose next hop starts there."""

Steps = tuple[Detector[Any], ...]
"""The declared detector steps, in the order they run; each brings its hooks and its slot (``detector.Detector``)."""


def default_detectors(params: DetectorParams | None = None) -> Steps:
    p = params or DetectorParams()
    return (
        StopDetector(p.unexpected_stop),
        DarkDetector(p.signal_lost),
        AccessWindowDetector(p.post_inspection_access),
        RendezvousDetector(p.rendezvous),
        PairingDetector(p.pairing),
        DwellDetector(),
    )


@dataclass(frozen=True, slots=True)
class Params:
    """Thresholds of the pipeline's own steps (the detectors hold theirs)."""

    geofence: GeofenceParams = field(default_factory=GeofenceParams)
    motion: MotionParams = field(default_factory=MotionParams)


@dataclass(frozen=True, slots=True)
class _Rules:
    """Everything that judges a fix with one port's thresholds."""

    params: Params
    detectors: Steps
    integrity: IntegrityCheck

    @classmethod
    def of(cls, p: DetectorParams) -> _Rules:
        return cls(Params(p.geofence, p.motion), default_detectors(p), IntegrityCheck(p.integrity))


class StepResult(msgspec.Struct, frozen=True, gc=False):
    """What one fix, tick or decision came to; built once or twice per fix (a msgspec Struct: cheap to build,
    and out of the cyclic collector, as the states it holds)."""

    state: DeviceState
    alerts: tuple[Event, ...] = ()
    flags: tuple[str, ...] = ()
    trips: tuple[Trip, ...] = ()  # trips closed by this step, and snapshots of the open one (tracker.core.trips)


class Pipeline:
    """Holds what does not change between fixes (fence index, parameters) and the shared world view."""

    def __init__(
        self,
        index: FenceIndex,
        params: Params | None = None,
        *,
        detectors: Sequence[Detector[Any]] | None = None,
        integrity: IntegrityCheck | None = None,
        world: World | None = None,
        detector_params: DetectorParams | None = None,
        trips: TripSegmenter | None = None,
    ) -> None:
        """``detector_params``: thresholds from configuration (``tracker.core.params``), per port where it says
        so; the default detectors, integrity check and ``params`` are then built from it."""
        self.index = index
        self.detector_params = detector_params
        if detector_params is not None:
            rules = _Rules.of(detector_params)
            params = params or rules.params
            detectors = rules.detectors if detectors is None else detectors
            integrity = integrity or rules.integrity
        self.trips = trips or TripSegmenter()
        self.params = params or Params()
        self.detectors: Steps = tuple(default_detectors() if detectors is None else detectors)
        self.integrity = integrity or IntegrityCheck()
        self._default = _Rules(self.params, self.detectors, self.integrity)
        self._ports: dict[str, _Rules] = (
            {} if detector_params is None else {p: _Rules.of(dp) for p, dp in detector_params.ports.items()}
        )
        self.world = world or World()
        self._trucks: dict[str, str] = {}  # truck -> the container that last reported it as its partner
        self._raw: dict[tuple[float, float], frozenset[str]] = {}  # see prefetch()
        self._raw_index: FenceIndex | None = None
        self._ports_of: dict[frozenset[str], str | None] = {}  # see _port_of()
        self._ports_index: FenceIndex | None = None
        self._cross: tuple[dict[str, _Rules], tuple[float, float, dict[FenceKind, float]]] | None = None

    def with_index(self, index: FenceIndex, params: Params | None = None) -> Pipeline:
        """The same pipeline over a new fence index (a fence set was reloaded), losing no state.

        The world view and the truck -> container map are shared with the new pipeline, and its
        detectors, integrity check and (unless ``params`` is given) parameters are kept: a reload must
        not make a loaded truck look unloaded, nor forget where every other device is. The fence
        membership each device carries in its state is re-judged against the new index at its next fix.
        """
        rebuilt = Pipeline(
            index,
            self.params if params is None else params,
            detectors=self.detectors,
            integrity=self.integrity,
            world=self.world,
            trips=self.trips,
        )
        rebuilt.detector_params = self.detector_params
        rebuilt._ports = self._ports
        rebuilt._trucks = self._trucks
        return rebuilt

    def _rules(self, state: DeviceState) -> _Rules:
        """The thresholds a device is judged by: those of the port whose fences it was in at its last fix.

        A device's first fix, and any fix after one outside every fence, is judged by the defaults.
        """
        if not self._ports or not state.fences:
            return self._default
        return self._ports.get(self._port_of(state.fences) or "", self._default)

    # ---- fixes ----------------------------------------------------------------------------------

    def prefetch(self, pings: Iterable[Ping], previous: Mapping[str, Fix | None] | None = None) -> None:
        """Look up the raw fence membership of a whole micro-batch at once, before stepping it.

        Membership with hysteresis needs the device's previous membership, known only once its previous
        fix has been stepped; which fences hold the point does not, and that is most of the work. One
        vectorised lookup for the batch replaces one lookup per fix. The result is kept until the next
        call and only for the index it came from; a fix not in it is looked up on its own, so calling
        this never changes an answer, only how fast it comes.

        ``previous``: each device's last accepted fix before the batch (its state's ``last``). Given it, the
        fences every hop of the batch meets are computed at once too (``FenceIndex.prefetch_crossings``),
        taking each device's previous fix in the batch as the start of its next hop; a hop that turns out
        otherwise (that fix was rejected) is looked up on its own.
        """
        batch = list(pings)
        hops: list[tuple[float, float, float, float]] = []
        longest, shortest, min_inside = self._cross_rules()
        if previous is not None:
            before: dict[str, tuple[float, float, datetime]] = {
                d: (f.lon, f.lat, f.ts) for d, f in previous.items() if f is not None
            }
            for p in batch:
                b = before.get(p.device_id)
                if (
                    b is not None
                    and (b[0], b[1]) != (p.lon, p.lat)
                    and 0 < (p.ts - b[2]).total_seconds() <= longest
                    and geofence.hop_m(b[0], b[1], p.lon, p.lat) >= shortest
                ):
                    hops.append((b[0], b[1], p.lon, p.lat))
                if b is None or p.ts > b[2]:
                    before[p.device_id] = (p.lon, p.lat, p.ts)
            hops = list(dict.fromkeys(hops))
        if self._raw_index is not self.index or len(self._raw) > _MAX_RAW:
            self._raw, self._raw_index = {}, self.index
        known = self._raw
        # the hops' start points too: the fences both ends lie in are assumed excluded from their crossings. Most
        # start points are a device's fix of an earlier batch, already looked up then: raw membership is a pure
        # function of the point and the index, so what earlier batches found is kept (bounded) and reused
        points = [
            q for q in dict.fromkeys([(p.lon, p.lat) for p in batch] + [(h[0], h[1]) for h in hops]) if q not in known
        ]
        if points:
            raw = self.index.fences_at([p[0] for p in points], [p[1] for p in points])
            known.update(zip(points, raw, strict=True))
        self.index.prefetch_crossings(
            [h[0] for h in hops],
            [h[1] for h in hops],
            [h[2] for h in hops],
            [h[3] for h in hops],
            [known[(h[0], h[1])] | known[(h[2], h[3])] for h in hops],
            min_inside,
        )

    def _cross_rules(self) -> tuple[float, float, dict[FenceKind, float]]:
        """What ``prefetch`` needs of every port's geofence rules, derived once per set of rules: the longest gap a
        crossing is looked for over, the shortest hop that can cross anything (``geofence.crossed`` says so before
        it asks for the hop's fences, with this very arithmetic) and the shortest part inside a fence that any
        port counts as a crossing, per fence kind."""
        got = self._cross
        if got is not None and got[0] is self._ports:
            return got[1]
        rules = [r.params.geofence for r in (self._default, *self._ports.values())]
        derived = (
            max(g.max_cross_gap_s for g in rules),
            min(min(g.min_cross_m, g.min_cross_gate_m) for g in rules) * geofence.SHORT,
            {k: min(g.min_cross_gate_m if k is FenceKind.GATE else g.min_cross_m for g in rules) for k in FenceKind},
        )
        self._cross = (self._ports, derived)
        return derived

    def _prefetched(self, ping: Ping) -> frozenset[str] | None:
        if self._raw_index is not self.index:
            return None
        return self._raw.get((ping.lon, ping.lat))

    def step(self, state: DeviceState, ping: Ping) -> StepResult:
        """One fix; ``state`` is left as it was (the result holds a new state whenever anything changed)."""
        last = state.last
        rules = self._rules(state)
        # the hop from the last accepted fix, measured once for integrity, the speed and the detectors
        hop = None if last is None else haversine_m(last.lon, last.lat, ping.lon, ping.lat)
        integrity_state, flags, raw_events = rules.integrity.check(state.integrity, ping, last, state.kind, hop)
        events = self._with_port(state, raw_events)
        new = state
        if integrity_state != state.integrity:
            new = state.copy()
            new.integrity = integrity_state
        out: list[Event] = list(events)
        if last is not None and ping.ts <= last.ts:
            late = "duplicate_ts" if ping.ts == last.ts else "late"
            return StepResult(new, tuple(out), (*flags, late) if late not in flags else flags)
        if not accepted(flags):
            if ping.events and last is not None:
                new, sensed = self._sensed_on_rejected(state, new, ping, last, rules)
                out.extend(self._with_port(new, sensed))
            return StepResult(new, tuple(out), flags)
        if new is state:
            new = state.copy()
        pending = state.geofence_pending
        fences, fence_alerts, waiting = geofence.step(
            self.index, state.fences, last, ping, rules.params.geofence, pending, self._prefetched(ping)
        )
        authorized = in_authorized_zone(self.index, fences)
        motion_state, moving = motion.update(state.motion, ping, rules.params.motion, authorized)
        if waiting or pending:
            new.geofence_pending = waiting
        out.extend(fence_alerts)
        ctx = self._fix_context(state, fences, moving, hop)
        new.last = Fix.of(ping)
        new.last_speed = believed_speed(ping.speed, ping.lon, ping.lat, ping.ts, last, hop)
        new.fences = fences
        new.motion = motion_state
        for det in rules.detectors:
            det_state, det_events = det.on_fix(det.read(new), ping, ctx)
            det.write(new, det_state)
            out.extend(det_events)
        new.trips, trips = self.trips.fix(state.trips, ping, ctx, out)
        self._place(new, moving, authorized)
        return StepResult(new, self._with_port(new, out), flags, trips)

    def _fix_context(
        self, state: DeviceState, fences: frozenset[str], moving: Motion, hop: float | None = None
    ) -> FixContext:
        """What the detectors see of a fix of the device in ``state``, placed in ``fences`` and ``moving``;
        ``hop``: the distance from ``state.last`` to that very fix (None: not measured)."""
        return FixContext(
            device_id=state.device_id,
            kind=state.kind,
            previous=state.last,
            fences_before=state.fences,
            fences=fences,
            motion=moving,
            index=self.index,
            world=self.world,
            params_port=self._port_of(fences),
            paired_with=self._partner(state),
            hop_m=hop,
        )

    def _sensed_on_rejected(
        self, state: DeviceState, new: DeviceState, ping: Ping, last: Fix, rules: _Rules
    ) -> tuple[DeviceState, list[Event]]:
        """The sensor events of a fix the integrity check rejected, for detectors that judge them (``on_sensor``).

        Integrity keeps an implausible position away from the detectors, not what the tracker sensed: a door
        opened whatever the receiver made of its position (a jammer beside the box is when one would open). The
        event is judged at the last accepted fix and fences; no other state of the device changes.
        """
        at_last = replace(ping, lon=last.lon, lat=last.lat, speed=None, heading=None, accuracy=None)
        ctx = self._fix_context(state, state.fences, motion.current(state.motion))
        out: list[Event] = []
        for det in rules.detectors:
            current = det.read(new)
            det_state, det_events = det.on_sensor(current, at_last, ctx)
            if det_state is not current:
                if new is state:
                    new = state.copy()
                det.write(new, det_state)
            out.extend(det_events)
        return new, out

    def _place(self, state: DeviceState, moving: Motion, authorized: bool | None = None) -> None:
        """Put the device's last accepted fix in the world view (after a fix, and when restoring).

        ``authorized``: ``in_authorized_zone`` of the state's fences, when the caller already asked."""
        assert state.last is not None
        partner = self._partner(state)
        self.world.update(
            Position(
                device_id=state.device_id,
                kind=state.kind,
                ts=state.last.ts,
                lon=state.last.lon,
                lat=state.last.lat,
                stationary_since=moving.stationary_since,
                authorized=in_authorized_zone(self.index, state.fences) if authorized is None else authorized,
                outside_since=moving.outside_since if moving.stationary_since is not None else None,
                speed=state.last_speed,
                centre=(moving.centre_lon, moving.centre_lat)
                if moving.stationary_since is not None
                and moving.centre_lon is not None
                and moving.centre_lat is not None
                else None,
                paired_with=partner,
            )
        )
        if partner is not None:
            self._trucks[partner] = state.device_id

    def _partner(self, state: DeviceState) -> str | None:
        """A container's paired truck (declared or inferred), or the container a truck is hauling."""
        if state.kind is DeviceKind.CONTAINER:
            return PairingDetector.paired_truck(state.pairing)
        container = self._trucks.get(state.device_id)
        if container is None:
            return None
        pos = self.world.get(container)
        if pos is None or pos.paired_with != state.device_id:
            self._trucks.pop(state.device_id, None)  # the container moved on to another truck or was unpaired
            return None
        return container

    def _port_of(self, fences: frozenset[str]) -> str | None:
        """The port of the first of ``fences`` by id; asked several times per fix about a few hundred distinct
        sets, so the answer is kept per set and index."""
        if not fences:
            return None
        if self._ports_index is not self.index:
            self._ports_of, self._ports_index = {}, self.index
        port = self._ports_of.get(fences, _UNKNOWN)
        if port is _UNKNOWN:
            port = self.index.get(min(fences)).port
            if len(self._ports_of) >= _MAX_PORTS_OF:
                self._ports_of.clear()
            self._ports_of[fences] = port
        return port

    # ---- timers and external facts ------------------------------------------------------------

    def tick_context(self, state: DeviceState) -> TickContext:
        return TickContext(
            device_id=state.device_id,
            kind=state.kind,
            last=state.last,
            fences=state.fences,
            motion=motion.current(state.motion),
            index=self.index,
            world=self.world,
        )

    def next_due(self, state: DeviceState, after: datetime | None = None) -> datetime | None:
        """When the device next needs a tick: the earliest of its detectors' due times, within the silence
        range ticks run in (``TICK_QUIET_S`` to ``TICK_HORIZON_S`` after its last fix); None for never.

        ``after``: the time of a tick already run on this very state (see ``detector.Timed``). Exactness is the
        detectors' (never late); a detector that says nothing better is ticked at every tick (its default).
        """
        if state.last is None:
            return None
        ctx = self.tick_context(state)
        due: datetime | None = None
        for det in self._rules(state).detectors:
            at = det.next_due(det.read(state), ctx, after)
            if at is not None and (due is None or at < due):
                due = at
        at = self.trips.next_due(state.trips, state.last, state.kind, self.index)
        if at is not None and (due is None or at < due):
            due = at
        if due is None:
            return None
        due = max(due, state.last.ts + _QUIET)
        if after is not None:
            due = max(due, after + _INSTANT)  # a tick at ``after`` already ran on this state
        return None if due > state.last.ts + _HORIZON else due

    @staticmethod
    def in_tick_range(state: DeviceState, now: datetime) -> bool:
        """Whether ``now`` is within the silence range ticks run in: just judged on a fix, or long gone, not."""
        if state.last is None:
            return False
        return TICK_QUIET_S <= (now - state.last.ts).total_seconds() <= TICK_HORIZON_S

    def needs_tick(self, state: DeviceState, now: datetime) -> bool:
        """Whether a tick at ``now`` could change anything (computed afresh; the tick loops keep a queue)."""
        due = self.next_due(state)
        return due is not None and due <= now and self.in_tick_range(state, now)

    def _with_port(self, state: DeviceState, events: Sequence[Event]) -> tuple[Event, ...]:
        """File alerts that name no fence under the port the device is in, so port subscribers see them."""
        if not events:
            return ()
        port = self._port_of(state.fences)
        if port is None:
            return tuple(events)
        out: list[Event] = []
        for ev in events:
            if isinstance(ev, AlertUpdate):
                if ev.alert.port is None:
                    ev = replace(ev, alert=replace(ev.alert, port=port))
            elif ev.port is None:
                ev = replace(ev, port=port)
            out.append(ev)
        return tuple(out)

    def tick(self, state: DeviceState, now: datetime) -> StepResult:
        """Let timeouts fire (going dark, a window overrunning) without a new fix."""
        ctx = self.tick_context(state)
        out: list[Event] = []
        new = state
        for det in self._rules(state).detectors:
            current = det.read(state)
            det_state, det_events = det.on_tick(current, now, ctx)
            if det_events or det_state != current:
                if new is state:
                    new = state.copy()
                det.write(new, det_state)
            out.extend(det_events)
        trip_state, trips = self.trips.tick(state.trips, now, ctx, out)
        if trip_state is not state.trips:
            if new is state:
                new = state.copy()
            new.trips = trip_state
        return StepResult(new, self._with_port(new, out), trips=trips)

    def inspect(self, state: DeviceState, inspection: Inspection) -> StepResult:
        """A customs decision about the container this device tracks."""
        ctx = self.tick_context(state)
        out: list[Event] = []
        new = state.copy()
        for det in self._rules(state).detectors:
            current = det.read(state)
            det_state, det_events = det.on_inspection(current, inspection, ctx)
            if det_state is not current:
                det.write(new, det_state)
            out.extend(det_events)
        new.trips, trips = self.trips.inspection(state.trips, inspection, state.last, self.index, state.fences, out)
        return StepResult(new, self._with_port(new, out), trips=trips)

    def pair(self, state: DeviceState, truck_id: str | None, at: datetime) -> StepResult:
        """Record (or clear, with ``None``) the truck hauling this container."""
        new = state.copy()
        for det in self.detectors:
            current = det.read(state)
            declared = det.on_pair(current, truck_id, at)
            if declared is not current:
                det.write(new, declared)
        return StepResult(new)

    def restore(self, states: Sequence[DeviceState]) -> None:
        """Rebuild the world view from saved states after a restart."""
        for st in states:
            if st.last is None:
                continue
            self._place(st, motion.current(st.motion))
