"""The records of a trip: what the store keeps and the API serves, and what a device remembers between fixes.

Split from the segmenter (``tracker.core.trips``) along the line between *what a trip is* and *how a fix
stream is cut into trips*. The records are the contract with the outside: the store upserts
:class:`Trip` rows and their JSON form (``tracker/adapters/store_trips.py``), the API and the custody report
serve them, and :class:`TripState` is encoded into every device's state by ``tracker.core.codec`` (its
fields are only ever appended, or stored states stop decoding). The segmenter's rules (when a trip opens,
when a stop ends it, which fence is its destination) change far more often and must not be able to change
that layout by accident; readers of a trip (adapters, benchmarks) need none of the rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec
from msgspec.structs import replace

from tracker.core.model import DeviceKind, InspectionResult

__all__ = ["RETRACTED", "Customs", "Standstill", "Stop", "Trip", "TripState", "Visit", "trip_id", "trips_in"]

RETRACTED = "retracted"
"""``end_reason`` of an output that withdraws a trip: a fix that arrived late rewound the device, and replayed
in order its fixes no longer make that trip (it starts elsewhere, or never went anywhere). The store deletes
the row; :func:`trips_in` drops it."""


def trip_id(device_id: str, start: datetime) -> str:
    """Deterministic: the same device starting at the same instant is the same trip (replays, retries)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"port-tracker:trip|{device_id}|{start.isoformat()}"))


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# gc=False: immutable values that hold no container able to point back at them (see DeviceState)
class Stop(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """A standstill of at least ``min_stop_s`` during a trip: where, from when to when, inside which fences."""

    start: datetime
    end: datetime
    lon: float
    lat: float
    fences: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "lon": self.lon,
            "lat": self.lat,
            "fences": list(self.fences),
        }


class Visit(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """One stay inside one fence: entered at ``enter``, left at ``exit`` (None: still inside at the trip's end)."""

    fence_id: str
    fence_kind: str
    enter: datetime
    exit: datetime | None = None

    def inside_s(self, trip_end: datetime) -> float:
        return max(0.0, ((self.exit or trip_end) - self.enter).total_seconds())

    def to_json(self, trip_end: datetime | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fence_id": self.fence_id,
            "fence_kind": self.fence_kind,
            "enter": self.enter.isoformat(),
            "exit": _ts(self.exit),
        }
        if trip_end is not None:
            out["inside_s"] = round(self.inside_s(trip_end), 3)
        return out


class Customs(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """When customs first said each thing about the box during (or just before) the trip."""

    cleared: datetime | None = None
    selected: datetime | None = None
    held: datetime | None = None
    loaded: datetime | None = None

    def with_decision(self, result: InspectionResult, ts: datetime) -> Customs:
        name = result.value
        current: datetime | None = getattr(self, name)
        if current is not None and current <= ts:
            return self
        return replace(self, **{name: ts})

    def empty(self) -> bool:
        return self.cleared is None and self.selected is None and self.held is None and self.loaded is None

    def to_json(self) -> dict[str, str | None]:
        return {
            "cleared": _ts(self.cleared),
            "selected": _ts(self.selected),
            "held": _ts(self.held),
            "loaded": _ts(self.loaded),
        }


class Trip(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """One journey, open (``closed`` False: ``end`` is the latest fix so far) or closed."""

    id: str
    device_id: str
    kind: DeviceKind
    start: datetime
    end: datetime
    start_lon: float
    start_lat: float
    end_lon: float
    end_lat: float
    closed: bool = False
    end_reason: str | None = None
    origin: str | None = None
    destination: str | None = None
    port: str | None = None
    distance_m: float = 0.0
    max_away_m: float = 0.0  # farthest straight-line distance from the start point (confirms the trip)
    stops: tuple[Stop, ...] = ()
    visits: tuple[Visit, ...] = ()
    alerts: tuple[str, ...] = ()
    customs: Customs = msgspec.field(default_factory=Customs)
    partners: tuple[str, ...] = ()  # trucks that hauled this box (a truck's boxes: added when stored)
    truncated: bool = False

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def retracted(self) -> bool:
        """Withdrawn (see :data:`RETRACTED`): no such trip exists any more."""
        return self.closed and self.end_reason == RETRACTED

    @property
    def stopped_s(self) -> float:
        return sum(s.duration_s for s in self.stops)

    @property
    def moving_s(self) -> float:
        return self.duration_s - self.stopped_s

    def to_json(self) -> dict[str, Any]:
        """The stored and served form, with the derived times and the visits' time inside (rounded)."""
        return {
            "id": self.id,
            "device_id": self.device_id,
            "kind": self.kind.value,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "start_lon": self.start_lon,
            "start_lat": self.start_lat,
            "end_lon": self.end_lon,
            "end_lat": self.end_lat,
            "closed": self.closed,
            "end_reason": self.end_reason,
            "origin": self.origin,
            "destination": self.destination,
            "port": self.port,
            "distance_m": round(self.distance_m, 1),
            "max_away_m": round(self.max_away_m, 1),
            "duration_s": round(self.duration_s, 3),
            "moving_s": round(self.moving_s, 3),
            "stopped_s": round(self.stopped_s, 3),
            "stops": [s.to_json() for s in self.stops],
            "visits": [v.to_json(self.end) for v in self.visits],
            "alerts": list(self.alerts),
            "customs": self.customs.to_json(),
            "partners": list(self.partners),
            "truncated": self.truncated,
        }

    def extended(self, end: datetime, lon: float, lat: float, add_m: float, away_m: float, port: str | None) -> Trip:
        """The trip one fix further on (built directly: this runs on every fix, ``replace`` is slow)."""
        return Trip(
            self.id,
            self.device_id,
            self.kind,
            self.start,
            end,
            self.start_lon,
            self.start_lat,
            lon,
            lat,
            self.closed,
            self.end_reason,
            self.origin,
            self.destination,
            self.port or port,
            self.distance_m + add_m,
            max(self.max_away_m, away_m),
            self.stops,
            self.visits,
            self.alerts,
            self.customs,
            self.partners,
            self.truncated,
        )


class Standstill(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """The device's current stationary period as the motion model reports it (finalised into a Stop later)."""

    since: datetime
    last: datetime
    lon: float
    lat: float
    fences: tuple[str, ...]


class TripState(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """What the segmenter remembers about one device between steps (its slot in ``DeviceState``, stored by
    ``tracker.core.codec``; fields are only ever appended)."""

    open: Trip | None = None
    still: Standstill | None = None
    parked: bool = False  # in a long stop (truck) or set down (container): no trip opens until it moves
    aboard: bool = False  # a container reported loaded: no trip until it has been set down again
    paired: bool = False  # the last fix had a partner (a box on a truck is not set down by standing still)
    pending_customs: Customs = msgspec.field(default_factory=Customs)  # decisions heard while no trip was open
    emitted_at: datetime | None = None  # event time the open trip was last output


def trips_in(outputs: Iterable[Trip]) -> dict[str, Trip]:
    """The last output per trip id: what the store ends up holding after a batch (or a whole replay); a trip
    whose last output withdrew it is not held at all."""
    latest: dict[str, Trip] = {}
    for t in outputs:
        latest[t.id] = t
    return {k: t for k, t in latest.items() if not t.retracted}
