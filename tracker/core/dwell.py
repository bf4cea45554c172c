"""Dwell: a device staying inside one fence longer than that kind of fence allows.

A box standing on a quay for hours is not waiting for a crane: it is a box nobody loaded, or one being
worked on where the cameras are thin. A truck that spends half a shift in the inspection area is either
stuck or doing something there. Unlike ``tracker.core.stops`` this is about time *inside a fence*,
moving or not, with a limit per (device kind, fence kind).

Choices:

* the visit starts at the first fix inside (hysteresis is the fence index's) and ends at the first
  fix outside; the alert is raised once per visit, at the first fix past the limit, and updated
  (closed) when the visit ends, so the operator sees how long it finally lasted;
* only fixes count. Ticks never raise a dwell: a loaded box goes quiet in the hold of a ship moored
  at the very quay, and "still on the quay" from the clock alone would be a guess (silence is
  ``tracker.core.dark``'s business). The price: an alert comes at most one reporting interval late;
* a silence longer than ``max_gap_s`` restarts the visit at the next fix: nobody can vouch the device
  stayed inside meanwhile;
* a customs ``loaded`` decision ends every visit of the box: it is aboard, not on the quay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar

import msgspec

from geofences import FenceIndex, FenceKind
from tracker.core.detector import Detector, FixContext, TickContext
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Event, Inspection, InspectionResult, Ping, Severity

if TYPE_CHECKING:  # the device state holds this detector's state type: a runtime import would be circular
    from tracker.core.state import DeviceState

__all__ = ["DWELL", "DwellDetector", "DwellParams", "DwellState", "DwellVisit"]

DWELL = "dwell"
_MAX_WATCHED = 1 << 14


def _default_limits() -> Mapping[tuple[DeviceKind, FenceKind], float]:
    return MappingProxyType(
        {
            (DeviceKind.CONTAINER, FenceKind.QUAY): 2 * 3600.0,
            (DeviceKind.TRUCK, FenceKind.QUAY): 3600.0,
            (DeviceKind.TRUCK, FenceKind.INSPECTION_AREA): 2 * 3600.0,
            (DeviceKind.TRUCK, FenceKind.GATE): 3600.0,
        }
    )


@dataclass(frozen=True, slots=True)
class DwellParams:
    """Longest allowed stay, in seconds, per (device kind, fence kind); pairs not listed are not watched.

    Defaults: a box on a quay two hours (handing it to a crane takes minutes; a vessel delayed by
    hours moves boxes back to the yard); a truck on a quay an hour, in a gate an hour (queues included),
    in the inspection area two hours (a physical inspection with the truck waiting takes under one).
    The simulator's clean traffic stays well below each (quay at most 3 min, inspection 45 min).
    """

    limits: Mapping[tuple[DeviceKind, FenceKind], float] = field(default_factory=_default_limits)
    severity: Severity = Severity.MEDIUM
    max_gap_s: float = 3600.0


class DwellVisit(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One stay inside a watched fence, and the alert it raised (exactly as raised, for its update)."""

    fence_id: str
    enter: datetime
    alert: Alert | None = None


class DwellState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The watched fences the device is in (its slot in ``DeviceState``), by fence id."""

    visits: tuple[DwellVisit, ...] = ()


class DwellDetector(Detector[DwellState | None]):
    name: ClassVar[str] = DWELL

    def read(self, device: DeviceState) -> DwellState | None:
        return device.dwell

    def write(self, device: DeviceState, state: DwellState | None) -> None:
        device.dwell = state

    def __init__(self, params: DwellParams | None = None) -> None:
        self.params = params or DwellParams()
        self._watched: dict[tuple[DeviceKind, frozenset[str]], tuple[tuple[str, float], ...]] = {}
        self._watched_index: FenceIndex | None = None

    def _limit(self, kind: DeviceKind, fence_kind: FenceKind) -> float | None:
        return self.params.limits.get((kind, fence_kind))

    def _watched_in(self, kind: DeviceKind, fences: frozenset[str], index: FenceIndex) -> tuple[tuple[str, float], ...]:
        """The watched fences of a set with their limits, by fence id; kept per index (immutable) and set, as a
        few hundred distinct sets are asked about on every fix."""
        if self._watched_index is not index:
            self._watched, self._watched_index = {}, index
        key = (kind, fences)
        got = self._watched.get(key)
        if got is None:
            found = {
                f: limit for f in fences if f in index and (limit := self._limit(kind, index.get(f).kind)) is not None
            }
            if len(self._watched) >= _MAX_WATCHED:
                self._watched.clear()
            got = self._watched[key] = tuple(sorted(found.items()))
        return got

    def on_fix(self, state: DwellState | None, ping: Ping, ctx: FixContext) -> tuple[DwellState | None, list[Event]]:
        watched_in = self._watched_in(ctx.kind, ctx.fences, ctx.index)
        if state is None and not watched_in:
            return state, []
        gap = ctx.previous is not None and (ping.ts - ctx.previous.ts).total_seconds() > self.params.max_gap_s
        if state is not None and state.visits and not gap and len(state.visits) == len(watched_in):
            # the same watched fences as at the last fix, no silence: only a limit running out can change anything
            for seen, (fid, limit) in zip(state.visits, watched_in, strict=True):
                if seen.fence_id != fid or (seen.alert is None and (ping.ts - seen.enter).total_seconds() > limit):
                    break
            else:
                return state, []
        watched = dict(watched_in)
        visits = {} if state is None else {v.fence_id: v for v in state.visits}
        events: list[Event] = []
        for fid in sorted(visits):
            if fid not in watched or gap:
                events.extend(self._ended(visits.pop(fid), ping.ts, "exited" if fid not in watched else "silence"))
        for fid, limit in sorted(watched.items()):
            visit = visits.get(fid)
            if visit is None:
                visits[fid] = visit = DwellVisit(fid, ping.ts)
            if visit.alert is None and (ping.ts - visit.enter).total_seconds() > limit:
                alert = self._alert(ctx, fid, visit.enter, ping.ts, limit)
                visits[fid] = DwellVisit(fid, visit.enter, alert)
                events.append(alert)
        new = DwellState(tuple(visits[f] for f in sorted(visits))) if visits else None
        return (state if new == state else new), events

    def on_tick(
        self, state: DwellState | None, now: datetime, ctx: TickContext
    ) -> tuple[DwellState | None, list[Event]]:
        return state, []  # fixes only: see the module docstring

    def next_due(self, state: DwellState | None, ctx: TickContext, after: datetime | None) -> datetime | None:
        return None

    def on_inspection(
        self, state: DwellState | None, inspection: Inspection, ctx: TickContext
    ) -> tuple[DwellState | None, list[Event]]:
        if inspection.result is not InspectionResult.LOADED or state is None:
            return state, []
        events: list[Event] = []
        for visit in state.visits:
            events.extend(self._ended(visit, inspection.ts, "loaded"))
        return None, events

    def _alert(self, ctx: FixContext, fid: str, enter: datetime, at: datetime, limit: float) -> Alert:
        fence = ctx.index.get(fid)
        duration = (at - enter).total_seconds()
        return Alert(
            kind=DWELL,
            severity=self.params.severity,
            device_id=ctx.device_id,
            ts=at,
            message=(
                f"{ctx.kind.value} inside {fence.name} ({fence.kind.value}) for {duration / 60:.0f} min;"
                f" allowed {limit / 60:.0f} min"
            ),
            port=fence.port,
            fence_id=fid,
            evidence={
                "fence_id": fid,
                "fence_name": fence.name,
                "fence_kind": fence.kind.value,
                "entered_at": enter.isoformat(),
                "duration_s": round(duration, 3),
                "threshold_s": limit,
            },
            key=f"{fid}|{enter.isoformat()}",
        )

    @staticmethod
    def _ended(visit: DwellVisit, at: datetime, reason: str) -> list[Event]:
        if visit.alert is None:
            return []
        duration = max(0.0, (at - visit.enter).total_seconds())
        return [
            AlertUpdate(
                alert=visit.alert,
                ts=at,
                fields={"ended_at": at.isoformat(), "duration_s": round(duration, 3), "reason": reason},
                closes=True,
            )
        ]
