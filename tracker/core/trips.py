"""Trips: a device's history cut into journeys an insurer can read, built incrementally as fixes arrive.

An insurer does not want 250,000 positions; it wants to know when the box was picked up, where it
stopped and for how long, which fences it went through, what customs said and when it was set down.
This module turns the fix stream of one device into such trips, one fix (or tick, or customs decision)
at a time, from the device's own typed state: no list of fixes is kept, so a trip costs the same
whatever the fix rate.

Boundaries (what opens and closes a trip):

* **truck**: a trip opens when the truck enters the port (any fence of a port holds it) or leaves a long
  stop; it closes when the truck leaves the port, enters it (an outside trip ends at the gate and the
  port visit starts there), stands still for ``truck_long_stop_s`` (the trip ends where the stop began:
  the stop itself is a break, not part of the journey) or goes silent for ``silence_s``;
* **container**: a trip opens at pick-up (the box moves) and closes at the drop: standing still for
  ``container_drop_s``, or ``container_set_down_s`` when no truck is paired with it and it stands on a
  quay, in a terminal or a customs yard (set down); at the customs ``loaded`` decision (on board); or
  after ``silence_s`` without a fix (a box leaving on a truck goes quiet with it). A loaded box opens no
  trip until it has been set down again (a ship moving is not a pick-up). A seal follows the container rules.

A trip becomes visible (is output) only once its device has been at least ``min_trip_m`` away from where
it started: a box shuffling in its yard, or GPS noise around a parked truck, is not a journey. A trip's
id is derived from its device and start time, so a replay of the same fixes yields the same ids and
the store's upsert is idempotent.

Outputs of each step are the trips that closed and, at most every ``update_every_s`` (event time) or
whenever a stop, a fence visit, an alert or a customs decision changed it, a snapshot of the open trip;
the service writes both in the transaction of the batch that produced them.

The records themselves (:class:`Trip`, its stops, visits and customs, and the per-device
:class:`TripState`) live in ``tracker.core.trip_model``: they are the stored and served contract,
while this module holds the rules that cut a fix stream into them. They are re-exported here so
callers keep one import.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from msgspec.structs import replace

from geofences import FenceIndex, FenceKind, haversine_m
from tracker.core.detector import FixContext, Motion, TickContext, first_after
from tracker.core.fix import Fix
from tracker.core.model import Alert, DeviceKind, Event, Inspection, InspectionResult, Ping, Severity
from tracker.core.stops import DEFAULT_SPECIFICITY
from tracker.core.trip_model import RETRACTED, Customs, Standstill, Stop, Trip, TripState, Visit, trip_id, trips_in

__all__ = [
    "RETRACTED",
    "Customs",
    "Standstill",
    "Stop",
    "Trip",
    "TripParams",
    "TripSegmenter",
    "TripState",
    "Visit",
    "trip_id",
    "trips_in",
]


def _visit_kinds() -> frozenset[FenceKind]:
    return frozenset(DEFAULT_SPECIFICITY) - {FenceKind.CORRIDOR, FenceKind.PORT_BOUNDARY}


def _set_down_kinds() -> frozenset[FenceKind]:
    return frozenset({FenceKind.QUAY, FenceKind.TERMINAL, FenceKind.CUSTOMS_YARD})


@dataclass(frozen=True, slots=True)
class TripParams:
    """Thresholds of the segmentation (per deployment; ``[detectors]`` in the TOML will feed them).

    ``truck_long_stop_s``: an hour. Trucks wait up to ~55 minutes in a terminal for their box and up to
    45 minutes at the inspection area; cutting those waits out would split one port visit into pieces
    nobody asked for, while a driver's rest or a night in a parking ends the journey.

    ``container_drop_s`` / ``container_set_down_s``: a box on a truck may stand still as long as the truck
    does (the same hour); a box with no truck, standing on a quay, in a terminal or a customs yard for ten
    minutes has been set down. Either way the trip ends where the stillness began, so the thresholds only
    say how soon the end is known, not where it is.

    ``silence_s``: a tracker silent this long is not on a journey anyone can vouch for; the trip ends at
    its last fix (ticks close it without waiting for the next one).

    ``min_stop_s``: a standstill shorter than this is traffic (a barrier, a crossing), not a stop.

    ``min_trip_m``: below this displacement from the start a trip is noise and is never output.

    ``alert_min_severity``: the alerts a trip lists are those an operator must look at (fence crossings
    logged at ``low`` would bury them: a port visit crosses a hundred corridors).

    ``max_items``: bound on the stops, visits, alerts and partners one trip keeps (state stays small
    however long a trip runs; the first ones are kept, and ``truncated`` says some were dropped).
    """

    truck_long_stop_s: float = 3600.0
    container_drop_s: float = 3600.0
    container_set_down_s: float = 600.0
    silence_s: float = 3600.0
    min_stop_s: float = 60.0
    min_trip_m: float = 100.0
    update_every_s: float = 60.0
    max_items: int = 200
    alert_min_severity: Severity = Severity.MEDIUM
    visit_kinds: frozenset[FenceKind] = field(default_factory=_visit_kinds)
    set_down_kinds: frozenset[FenceKind] = field(default_factory=_set_down_kinds)


_RANK = {s: i for i, s in enumerate(Severity)}
_NO_CUSTOMS = Customs()
_EMPTY = TripState()
_SPECIFICITY = {kind: rank for rank, kind in enumerate(DEFAULT_SPECIFICITY)}
_TRUCK = DeviceKind.TRUCK
# (an enum member read through its class costs several times a global's lookup: the fix path asks about it often)


def _best_fence(index: FenceIndex, fences: Iterable[str], visits: Sequence[Visit] = ()) -> str | None:
    """The most specific fence of a set (a gate rather than the port boundary it lies in); among equally
    specific ones the latest entered (fence hysteresis keeps the berth just driven through in the set)."""
    known = [f for f in fences if f in index]
    if not known:
        return None
    entered = {v.fence_id: v.enter.timestamp() for v in visits}
    return min(
        known, key=lambda f: (_SPECIFICITY.get(index.get(f).kind, len(_SPECIFICITY)), -entered.get(f, float("-inf")), f)
    )


_IN_PORT: tuple[FenceIndex | None, dict[frozenset[str], bool]] = (None, {})


def _in_port(index: FenceIndex, fences: frozenset[str]) -> bool:
    """Inside the port: some fence of a port set (any still indexed) holds the device.

    Asked at every fix about a few hundred distinct sets: the answer is kept per set for the index in use (an
    index is immutable; a reload brings a new one)."""
    global _IN_PORT
    if not fences:
        return False
    last, known = _IN_PORT
    if last is not index:
        known = {}
        _IN_PORT = (index, known)
    found = known.get(fences)
    if found is None:
        if len(known) >= 1 << 14:
            known.clear()
        found = known[fences] = any(f in index for f in fences)
    return found


def _port(index: FenceIndex, fences: Iterable[str]) -> str | None:
    ports = sorted({index.get(f).port for f in fences if f in index})
    return ports[0] if ports else None


class TripSegmenter:
    """Stateless holder of the parameters; every method maps (trip state, input) to (trip state, trips out).

    The pipeline calls :meth:`fix` once per accepted fix (after the detectors, with the events they
    raised), :meth:`tick` once per tick and :meth:`inspection` once per customs decision, each with the
    device's ``trips`` slot (None: nothing remembered yet), and asks :meth:`next_due` when a tick could
    next close a trip. A method returns the very state it was given when nothing changed.
    """

    def __init__(self, params: TripParams | None = None) -> None:
        self.params = params or TripParams()
        self._set_down: dict[tuple[str, ...], bool] = {}
        self._set_down_index: FenceIndex | None = None

    def next_due(self, ts: TripState | None, last: Fix | None, kind: DeviceKind, index: FenceIndex) -> datetime | None:
        """The earliest instant a tick could close the open trip (never late: see ``detector.Timed``)."""
        if ts is None or ts.open is None or last is None:
            return None
        due = first_after(last.ts, self.params.silence_s)
        if ts.still is not None:
            limit = self._park_limit(kind, ts.paired, ts.still.fences, index)
            due = min(due, first_after(ts.still.since, limit))
        return due

    # ---- pure transitions on the typed state ----------------------------------------------------

    def fix(
        self, state: TripState | None, ping: Ping, ctx: FixContext, events: Sequence[Event]
    ) -> tuple[TripState, tuple[Trip, ...]]:
        """One accepted fix; ``ctx.previous`` is the accepted fix before it."""
        ts = _EMPTY if state is None else state
        p = self.params
        out: list[Trip] = []
        prev = ctx.previous
        kind = ctx.kind
        index = ctx.index
        trip = ts.open
        open_id = None if trip is None else trip.id  # the trip running before this fix
        parked, aboard, pending, emitted_at = ts.parked, ts.aboard, ts.pending_customs, ts.emitted_at
        # 1. a long silence ends the trip at the last fix heard
        if trip is not None and prev is not None and (ping.ts - prev.ts).total_seconds() > p.silence_s:
            dest = _best_fence(index, ctx.fences_before, trip.visits)
            trip = self._with_standstill(trip, ts)
            out.extend(self._closed(trip, trip.end, "silence", prev.lon, prev.lat, dest))
            trip, open_id, emitted_at, pending = None, None, None, _NO_CUSTOMS
        changed = False
        # 2. the standstill the motion model reports, finalised into a stop when it ends
        motion: Motion = ctx.motion
        still = ts.still
        new_still: Standstill | None = None
        if motion.stationary_since is not None:
            lon = motion.centre_lon if motion.centre_lon is not None else ping.lon
            lat = motion.centre_lat if motion.centre_lat is not None else ping.lat
            if still is not None and still.since == motion.stationary_since:
                new_still = Standstill(still.since, ping.ts, lon, lat, still.fences)
            else:
                new_still = Standstill(motion.stationary_since, ping.ts, lon, lat, tuple(sorted(ctx.fences)))
        if still is not None and (new_still is None or new_still.since != still.since):
            if trip is not None and not parked:
                trip, added = self._add_stop(trip, still)
                changed = changed or added
            if parked:  # moving again after a long stop or a set-down: a pick-up / a departure
                parked = aboard = False
                if trip is None:
                    # it left from its last fix, unless it was silent too long for anyone to say when
                    resumed = prev is not None and (ping.ts - prev.ts).total_seconds() <= p.silence_s
                    start_fix = prev if resumed and prev is not None else Fix.of(ping)
                    fences = ctx.fences_before if resumed else ctx.fences
                    trip = self._open(pending, ctx.device_id, kind, start_fix, ctx, fences)
                    pending = _NO_CUSTOMS
                    changed = True
        # 3. port boundary for trucks
        fences_changed = ctx.fences != ctx.fences_before
        # (the same fences as before, as on most fixes, cannot cross the port boundary; whether they lie in the port
        # is asked only when they changed or no trip runs, the only cases it is read in: a trip ends here only by
        # crossing, which needs changed fences)
        in_port = _in_port(index, ctx.fences) if fences_changed or trip is None else False
        crossed = (
            prev is not None and kind is _TRUCK and fences_changed and in_port != _in_port(index, ctx.fences_before)
        )
        if trip is not None and prev is not None and crossed:
            if not in_port:  # left the port: the trip ends at the first fix outside, through the last fence
                seg = ctx.hop_from(prev, ping)
                trip, _ = self._visits(trip, ping, ctx)
                trip = self._extend(trip, ping, seg, ctx, events)
                dest = _best_fence(index, ctx.fences_before, trip.visits)
                out.extend(self._closed(trip, ping.ts, "port_exit", ping.lon, ping.lat, dest))
            else:  # an outside trip reaches the port: it ends at the gate, the port visit starts there
                dest = _best_fence(index, ctx.fences_before, trip.visits)
                out.extend(self._closed(trip, prev.ts, "port_entry", prev.lon, prev.lat, dest))
            trip, open_id, emitted_at = None, None, None
        # 4. open a trip where none runs, or carry the running one to this fix
        if trip is None:
            may_open = in_port if kind is _TRUCK else not aboard
            if may_open and not parked:
                trip = self._open(pending, ctx.device_id, kind, Fix.of(ping), ctx, ctx.fences)
                pending = _NO_CUSTOMS
                changed = True
        elif prev is not None and trip.end < ping.ts:  # (a trip opened at this very fix has nothing to add)
            continuing = trip.id == open_id
            moving = motion.stationary_since is None or not continuing  # a trip opened here starts moving
            seg = ctx.hop_from(prev, ping) if moving else 0.0
            if fences_changed:  # (the same fences as before, as on most fixes, visit nothing new)
                trip, visits_changed = self._visits(trip, ping, ctx)
                changed = changed or visits_changed
            trip = self._extend(trip, ping, seg, ctx, events)
            changed = changed or not continuing
        # 5. a standstill long enough ends the trip where it began
        if new_still is not None and not parked:
            limit = self._park_limit(kind, ctx.paired_with is not None, new_still.fences, index)
            if (ping.ts - new_still.since).total_seconds() > limit:
                if trip is not None:
                    end = max(new_still.since, trip.start)
                    reason = "long_stop" if kind is _TRUCK else "set_down"
                    dest = _best_fence(index, new_still.fences, trip.visits)
                    out.extend(self._closed(trip, end, reason, new_still.lon, new_still.lat, dest))
                    trip, emitted_at, pending = None, None, _NO_CUSTOMS
                parked = True
        # a box's truck comes from the box's own pairing state; a truck's box only from the world view, which
        # depends on the order the two devices' fixes came in (and on restarts): trucks' boxes are filled in
        # from the declared pairings when the trip is stored (tracker/adapters/store_trips.py)
        partner = ctx.paired_with if kind is not _TRUCK else None
        if trip is not None and partner and partner not in trip.partners and len(trip.partners) < p.max_items:
            trip = replace(trip, partners=(*trip.partners, partner))
            changed = True
        new = TripState(trip, new_still, parked, aboard, partner is not None, pending, emitted_at)
        if trip is not None:
            new, snapshot = self._maybe_emit(new, ping.ts, changed, events)
            out.extend(snapshot)
        return new, tuple(out)

    def tick(
        self, state: TripState | None, now: datetime, ctx: TickContext, events: Sequence[Event]
    ) -> tuple[TripState | None, tuple[Trip, ...]]:
        trip = None if state is None else state.open
        if state is None or trip is None or ctx.last is None:
            return state, ()
        ts = state
        p = self.params
        if (now - ctx.last.ts).total_seconds() > p.silence_s:
            trip = self._with_standstill(self._with_alerts(trip, events, now), ts)
            dest = _best_fence(ctx.index, ctx.fences, trip.visits)
            closed = self._closed(trip, trip.end, "silence", trip.end_lon, trip.end_lat, dest)
            return replace(ts, open=None, emitted_at=None, pending_customs=Customs()), closed
        still = ts.still
        if still is not None:
            limit = self._park_limit(ctx.kind, ts.paired, still.fences, ctx.index)
            if (now - still.since).total_seconds() > limit:
                end = max(still.since, trip.start)
                reason = "long_stop" if ctx.kind is DeviceKind.TRUCK else "set_down"
                dest = _best_fence(ctx.index, still.fences, trip.visits)
                closed = self._closed(trip, end, reason, still.lon, still.lat, dest)
                return (
                    replace(ts, open=None, parked=True, emitted_at=None, pending_customs=Customs()),
                    closed,
                )
        if self._alerted(events):
            trip = self._with_alerts(trip, events, None)
            return self._maybe_emit(replace(ts, open=trip), trip.end, True)
        return ts, ()

    def inspection(
        self,
        state: TripState | None,
        inspection: Inspection,
        last: Fix | None,
        index: FenceIndex,
        fences: frozenset[str],
        events: Sequence[Event],
    ) -> tuple[TripState, tuple[Trip, ...]]:
        """A customs decision about the box this device tracks (``last``/``fences``: its last accepted fix)."""
        ts = _EMPTY if state is None else state
        trip = ts.open
        if trip is None:
            ts = replace(ts, pending_customs=ts.pending_customs.with_decision(inspection.result, inspection.ts))
            if inspection.result is InspectionResult.LOADED:
                ts = replace(ts, aboard=True)
            return ts, ()
        trip = replace(trip, customs=trip.customs.with_decision(inspection.result, inspection.ts))
        trip = self._with_alerts(trip, events, None)
        if inspection.result is InspectionResult.LOADED and trip.kind is not DeviceKind.TRUCK:
            end = max(inspection.ts, trip.end)
            lon, lat = (last.lon, last.lat) if last is not None else (trip.end_lon, trip.end_lat)
            trip = self._with_standstill(trip, ts)
            closed = self._closed(trip, end, "loaded", lon, lat, _best_fence(index, fences, trip.visits))
            return replace(ts, open=None, aboard=True, emitted_at=None, pending_customs=Customs()), closed
        return self._maybe_emit(replace(ts, open=trip), trip.end, True)

    # ---- helpers ---------------------------------------------------------------------------------

    def _park_limit(self, kind: DeviceKind, paired: bool, fences: tuple[str, ...], index: FenceIndex) -> float:
        p = self.params
        if kind is _TRUCK:
            return p.truck_long_stop_s
        if not paired and self._set_down_in(fences, index):
            return min(p.container_set_down_s, p.container_drop_s)
        return p.container_drop_s

    def _set_down_in(self, fences: tuple[str, ...], index: FenceIndex) -> bool:
        """Whether a standstill's fences hold a place a box is set down in (any still indexed).

        Asked at every fix and due time of a standing box about the one fence tuple its standstill keeps: the
        answer is kept per tuple for the index in use (immutable; a reload brings a new one), as ``_in_port``'s."""
        if self._set_down_index is not index:
            self._set_down, self._set_down_index = {}, index
        known = self._set_down
        found = known.get(fences)
        if found is None:
            kinds = self.params.set_down_kinds
            if len(known) >= 1 << 14:
                known.clear()
            found = known[fences] = any(f in index and index.get(f).kind in kinds for f in fences)
        return found

    def _open(
        self, customs: Customs, device_id: str, kind: DeviceKind, at: Fix, ctx: FixContext, fences: frozenset[str]
    ) -> Trip:
        p = self.params
        visits = tuple(
            Visit(f, ctx.index.get(f).kind.value, at.ts)
            for f in sorted(fences)
            if f in ctx.index and ctx.index.get(f).kind in p.visit_kinds
        )[: p.max_items]
        return Trip(
            id=trip_id(device_id, at.ts),
            device_id=device_id,
            kind=kind,
            start=at.ts,
            end=at.ts,
            start_lon=at.lon,
            start_lat=at.lat,
            end_lon=at.lon,
            end_lat=at.lat,
            origin=_best_fence(ctx.index, fences),
            port=_port(ctx.index, fences) or ctx.params_port,
            visits=visits,
            customs=customs,
        )

    def _extend(self, trip: Trip, ping: Ping, seg_m: float, ctx: FixContext, events: Sequence[Event]) -> Trip:
        away = haversine_m(trip.start_lon, trip.start_lat, ping.lon, ping.lat)
        trip = trip.extended(ping.ts, ping.lon, ping.lat, seg_m, away, ctx.params_port)
        return self._with_alerts(trip, events, None) if events else trip

    def _visits(self, trip: Trip, ping: Ping, ctx: FixContext) -> tuple[Trip, bool]:
        if ctx.fences == ctx.fences_before:
            return trip, False
        p = self.params
        visits = list(trip.visits)
        truncated = trip.truncated
        for f in sorted(ctx.fences_before - ctx.fences):
            for i in range(len(visits) - 1, -1, -1):
                if visits[i].fence_id == f and visits[i].exit is None:
                    visits[i] = replace(visits[i], exit=ping.ts)
                    break
        for f in sorted(ctx.fences - ctx.fences_before):
            if f not in ctx.index or ctx.index.get(f).kind not in p.visit_kinds:
                continue
            if len(visits) >= p.max_items:
                truncated = True
                continue
            # the enum's own value, shared: str() made a copy per visit, which an open trip keeps up to max_items
            visits.append(Visit(f, ctx.index.get(f).kind.value, ping.ts))
        new = tuple(visits)
        if new == trip.visits:
            return trip, False
        return replace(trip, visits=new, truncated=truncated), True

    def _add_stop(self, trip: Trip, still: Standstill) -> tuple[Trip, bool]:
        p = self.params
        start = max(still.since, trip.start, trip.stops[-1].end if trip.stops else trip.start)
        end = min(still.last, trip.end)
        if (end - start).total_seconds() < p.min_stop_s:
            return trip, False
        if len(trip.stops) >= p.max_items:
            return replace(trip, truncated=True), False
        return replace(trip, stops=(*trip.stops, Stop(start, end, still.lon, still.lat, still.fences))), True

    def _counts(self, e: Event) -> bool:
        return isinstance(e, Alert) and _RANK[e.severity] >= _RANK[self.params.alert_min_severity]

    def _alerted(self, events: Sequence[Event]) -> bool:
        if not events:  # (nearly every fix and tick)
            return False
        return any(self._counts(e) for e in events)

    def _with_alerts(self, trip: Trip, events: Sequence[Event], until: datetime | None) -> Trip:
        """Alerts worth an operator's look (``alert_min_severity`` and up) raised while the trip is open."""
        if not events:
            return trip
        ids = list(trip.alerts)
        for e in events:
            if not isinstance(e, Alert) or not self._counts(e):
                continue
            if until is not None and e.ts > until:
                continue
            aid = str(e.id)
            if aid in ids:
                continue
            if len(ids) >= self.params.max_items:
                trip = replace(trip, truncated=True)
                break
            ids.append(aid)
        if len(ids) == len(trip.alerts):
            return trip
        return replace(trip, alerts=tuple(ids))

    def _closed(
        self, trip: Trip, end: datetime, reason: str, lon: float, lat: float, destination: str | None
    ) -> tuple[Trip, ...]:
        """The closed trip to output (none when it never went anywhere): clipped at ``end``."""
        end = max(end, trip.start)
        stops = tuple(replace(s, end=min(s.end, end)) for s in trip.stops if s.start < end)
        visits = tuple(
            v if v.exit is None or v.exit <= end else replace(v, exit=None) for v in trip.visits if v.enter <= end
        )
        closed = replace(
            trip,
            end=end,
            end_lon=lon,
            end_lat=lat,
            closed=True,
            end_reason=reason,
            stops=stops,
            visits=visits,
            destination=destination,
        )
        if closed.max_away_m < self.params.min_trip_m:
            return ()
        return (closed,)

    def _maybe_emit(
        self, ts: TripState, now: datetime, changed: bool, events: Sequence[Event] = ()
    ) -> tuple[TripState, tuple[Trip, ...]]:
        """The open trip output now if it is visible and changed, or listed an alert among ``events`` (looked at
        only when neither its visibility nor its last output's age decides), or was last output
        ``update_every_s`` ago."""
        trip = ts.open
        assert trip is not None
        if trip.max_away_m < self.params.min_trip_m:
            return ts, ()
        last = ts.emitted_at
        due = last is None or (now - last).total_seconds() >= self.params.update_every_s
        if not (changed or due or self._alerted(events)):
            return ts, ()
        return replace(ts, emitted_at=now), (self.snapshot(ts),)

    def after_rewind(
        self, rewound: Iterable[TripState | None], replayed: TripState | None, outputs: Sequence[Trip]
    ) -> tuple[Trip, ...]:
        """What the store must also receive after a late fix rewound the device (``tracker.core.reorder``).

        ``rewound``: the trip states the speculative run went through (before each rewound fix, and its end),
        ``replayed``: the state after the in-order replay, ``outputs``: the replay's own outputs. The speculative
        run may have output a trip the replay no longer makes (a straggler before the first fix of a trip moves
        its start, hence its id): it is withdrawn, or the store would keep an open trip nothing ever closes.
        And the replay, rate-limited from the rewound ``emitted_at``, may have ended on a snapshot older than the
        one the speculative run stored: the open trip is output once more as it now stands, so the row is the
        in-order truth, not an earlier version of it. The state is left as the replay made it.
        """
        current = None if replayed is None else replayed.open
        keep = {t.id for t in outputs}
        if current is not None:
            keep.add(current.id)
        gone: dict[str, Trip] = {}
        for ts in rewound:
            trip = None if ts is None else ts.open
            if trip is not None and trip.id not in keep:
                gone[trip.id] = trip
        # a withdrawn trip may never have been visible (shorter than ``min_trip_m``): deleting no row costs nothing
        out = [replace(t, closed=True, end_reason=RETRACTED) for t in gone.values()]
        if replayed is not None and current is not None and current.max_away_m >= self.params.min_trip_m:
            out.append(self.snapshot(replayed))
        return tuple(out)

    def snapshot(self, ts: TripState) -> Trip:
        """The open trip as output: with the standstill under way counted as its last stop."""
        assert ts.open is not None
        return self._with_standstill(ts.open, ts)

    def _with_standstill(self, trip: Trip, ts: TripState) -> Trip:
        """``trip`` with the standstill under way as its last stop (a trip ending in it, or seen while open)."""
        if ts.still is None or ts.parked:
            return trip
        with_current, _ = self._add_stop(trip, ts.still)
        return with_current
