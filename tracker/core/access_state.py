"""The post-clearance access window's parameters, state and shared helpers (``tracker.core.inspection``).

Split from the detector so each module stays readable: what the window remembers per container
(:class:`AccessState`, stored by ``tracker.core.codec``), the clearance that opened it, the thresholds,
and the small evidence builders both the customs side and the per-fix rules use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from msgspec.structs import replace

from geofences import FenceIndex, FenceKind
from tracker.core.model import Alert, AlertUpdate, Event

ROUTE_KINDS = frozenset(
    {
        FenceKind.CORRIDOR,
        FenceKind.TERMINAL,
        FenceKind.CUSTOMS_YARD,
        FenceKind.INSPECTION_AREA,
        FenceKind.GATE,
        FenceKind.QUAY,
    }
)
"""Where a cleared container may legitimately be while driven to the quay."""

ZONE_KINDS = frozenset({FenceKind.RESTRICTED, FenceKind.AUTHORIZED_PARKING})
"""Zones a cleared container has no reason to enter: parking is authorised for trucks waiting to be
called, not for a container that customs has just released for loading."""

WATCHED_EVENTS = frozenset({"door_open", "seal_tamper"})
"""Sensor events that mean someone may have reached into the container."""

KIND = "post_inspection_access"
_INSTANT = timedelta(microseconds=1)  # on_tick compares timedeltas: the first instant past a limit
MAX_RECALLS = 20  # a container is sent back to customs a handful of times in its life, not twenty


@dataclass(frozen=True, slots=True)
class AccessWindowParams:
    """Thresholds of the access window; one instance per port when ports need different values.

    Every "longer than" comparison is strict and every "at least" is inclusive, exactly as named,
    so the figures in an alert's evidence can be checked by hand.
    """

    stop_s: float = 120.0
    """A stop outside authorised zones lasting at least this long is raised. Two minutes is longer than
    any traffic light or gate queue inside the port and shorter than opening a door and moving bags."""
    off_route_grace_s: float = 30.0
    """Moving outside every route fence for longer than this is an excursion. Fences are already read with
    the index's hysteresis; the grace absorbs a multipath blip that outlasts it (a few fixes)."""
    off_route_margin_m: float = 25.0
    """A fix this close to a route fence is on the route: corridor bands drawn from road centre lines leave
    gaps at junctions and bends, and a fence is only entered from inside it (left 25 m beyond it)."""
    alongside_m: float = 30.0
    """Another device within this distance counts as alongside: two vehicles parked door to door, with
    room for GPS error, but not the next lane of a yard."""
    alongside_s: float = 60.0
    """Both standing still together for longer than this is a meeting; a minute is enough to pass a bag."""
    alongside_max_age_s: float = 330.0
    """The other device's last fix must be at most this old, so a tracker that left (or died) long ago
    does not stay "alongside" forever; one five-minute report and some jitter, since the accomplice's
    tracker is as likely as any other to be a battery-saving one."""
    still_speed_ms: float = 0.5
    """A neighbour whose only fix here reports at most this speed is standing (GNSS Doppler speed of a parked
    receiver stays below it); a tracker reporting every five minutes gives no second fix to prove it."""
    dark_s: float = 180.0
    """Tracker silent for longer than this during the window (or longer than ``dark_k`` of its own reporting
    intervals, whichever is longer). Hauled trackers report every 10-30 s, so three minutes is several missed
    reports, not one lost packet."""
    dark_k: float = 3.0
    """Silence is also measured in the container's own rhythm: a tracker that reports every 60 or 300 s (a box
    cleared while standing in a yard saves battery) has said nothing wrong 180 s after its last fix, so the limit
    is ``max(dark_s, dark_k × median interval)``: three missed reports, as for the signal-lost rule."""
    dark_history: int = 8
    """How many recent intervals the median looks at: enough that one tunnel or one retry burst does not move it,
    few enough that a tracker switching to its parked rhythm is followed within a few fixes."""
    dark_max_interval_s: float = 600.0
    """Intervals are clipped to this before they are learned, so a box unseen for hours before its clearance
    cannot stretch the silence limit beyond ``dark_k`` × 10 min."""
    max_window_s: float = 6 * 3600.0
    """The window open longer than this (clearance to loading normally takes hours, not a shift)."""
    route_fence_ids: frozenset[str] | None = None
    """When customs gives the container a route, only these corridors count as route; None = every
    corridor of the port. Terminals, yards, inspection areas, gates and quays always count."""


Params = AccessWindowParams


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def _dt(raw: Any) -> datetime | None:
    return None if raw is None else datetime.fromisoformat(raw)


def _secs(delta: timedelta) -> float:
    return round(delta.total_seconds(), 3)


def _seal(raw: str | None) -> str | None:
    """Seals are read off a bolt by people: compare them without case or layout."""
    if raw is None:
        return None
    norm = "".join(ch for ch in raw if not ch.isspace() and ch != "-").upper()
    return norm or None


# gc=False: immutable values that hold no container able to point back at them (see DeviceState)
class Clearance(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """The customs clearance that opened the current window; quoted in every alert of that window."""

    ts: datetime
    container_no: str
    facility: str | None = None
    seal: str | None = None
    inspection_id: str | None = None
    port: str | None = None  # port of the fences the container was in when cleared

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts.isoformat(),
            "container_no": self.container_no,
            "facility": self.facility,
            "seal": self.seal,
            "inspection_id": self.inspection_id,
            "port": self.port,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Clearance:
        return cls(
            ts=datetime.fromisoformat(data["ts"]),
            container_no=data["container_no"],
            facility=data.get("facility"),
            seal=data.get("seal"),
            inspection_id=data.get("inspection_id"),
            port=data.get("port"),
        )

    def evidence(self) -> dict[str, Any]:
        out = self.to_json()
        out.pop("port")
        return out


# gc=False: its dicts hold strings, counts, JSON values and alerts, never a state (see DeviceState)
class AccessState(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """What the detector remembers about one container, between fixes and across restarts.

    ``open`` holds each occurrence that has been raised and has not ended yet, with the alert
    exactly as it was raised: its end is reported against the same alert id. ``keys`` are the
    alert keys raised in the current window, so an occurrence seen again (a replayed fix, a
    tracker that flickers in and out of sight) is never raised twice.
    """

    paired_truck: str | None = None
    window: Clearance | None = None
    keys: tuple[str, ...] = ()
    counts: Mapping[str, int] = msgspec.field(default_factory=dict)  # alerts raised in this window, by reason
    closed_at: datetime | None = None  # end of the last window: a clearance not after it is a replay
    last_inspection: Mapping[str, Any] | None = None
    recalls: tuple[str, ...] = ()  # keys of the latest selected/held alerts, so a redelivery is not raised again
    stop_since: datetime | None = None  # stationary_since of the stop being followed
    stop_unauth_since: datetime | None = None  # since when that stop counts (``motion.outside_since``, clipped)
    authorized: bool = False  # whether the last fix was in an authorised stop zone (kept for the record)
    off_since: datetime | None = None  # first fix of the current excursion off the route
    off_fix: Mapping[str, Any] | None = None
    open: Mapping[str, Alert] = msgspec.field(default_factory=dict)
    intervals: tuple[float, ...] = ()  # recent seconds between accepted fixes, windows or not: the tracker's rhythm
    stop_standing_from: datetime | None = None  # the followed stop is timed from here: its first fix that stands
    rolled_at: datetime | None = None  # the last fix in a window that reported road speed (``rules.rolling``)
    stood_at: datetime | None = None  # the first fix after that one that did not

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, device_id: str) -> AccessState:
        """The JSON form states were stored in before ``tracker.core.codec`` (read once after an upgrade)."""
        if not data:
            return cls()
        window = data.get("window")
        return cls(
            paired_truck=data.get("paired_truck"),
            window=None if not window else Clearance.from_json(window),
            keys=tuple(data.get("keys", ())),
            counts=dict(data.get("counts", {})),
            closed_at=_dt(data.get("closed_at")),
            last_inspection=data.get("last_inspection"),
            recalls=tuple(data.get("recalls", ())),
            stop_since=_dt(data.get("stop_since")),
            stop_unauth_since=_dt(data.get("stop_unauth_since")),
            authorized=bool(data.get("authorized", False)),
            off_since=_dt(data.get("off_since")),
            off_fix=data.get("off_fix"),
            open={k: _alert_from_json(device_id, v) for k, v in data.get("open", {}).items()},
            intervals=tuple(float(x) for x in data.get("intervals", ())),
        )


_EMPTY = AccessState()


def _alert_from_json(device_id: str, data: Mapping[str, Any]) -> Alert:
    return Alert.from_state({"device_id": device_id, **data})


def _fix_json(ts: datetime, lon: float, lat: float, accuracy: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ts": ts.isoformat(), "lon": lon, "lat": lat}
    if accuracy is not None:
        out["accuracy_m"] = accuracy
    return out


def _fence_json(index: FenceIndex, fence_id: str) -> dict[str, Any]:
    fence = index.get(fence_id)
    return {"id": fence.id, "name": fence.name, "kind": fence.kind.value}


def _fences_json(index: FenceIndex, ids: Iterable[str]) -> list[dict[str, Any]]:
    return [_fence_json(index, f) for f in sorted(ids) if f in index]


def _port(index: FenceIndex, ids: Iterable[str], fallback: str | None) -> str | None:
    for f in sorted(ids):
        if f in index:
            return index.get(f).port
    return fallback


def _stored(state: AccessState) -> AccessState | None:
    """What the device state keeps: nothing at all for a container never cleared nor paired."""
    return None if state == _EMPTY else state


class _Run:
    """One call's working copy: the state being rebuilt and the events it produced, in order."""

    def __init__(self, state: AccessState, device_id: str) -> None:
        self.s = state
        self.device_id = device_id
        self.events: list[Event] = []

    def update(self, **changes: Any) -> None:
        self.s = replace(self.s, **changes)

    def raise_alert(self, alert: Alert, *, reason: str | None = None, slot: str | None = None) -> bool:
        """Emit an alert unless its key was already raised in this window; remember it if it can end."""
        if alert.key in self.s.keys:
            return False
        self.events.append(alert)
        counts = dict(self.s.counts)
        if reason is not None:
            counts[reason] = counts.get(reason, 0) + 1
        self.update(keys=(*self.s.keys, alert.key), counts=counts)
        if slot is not None:
            self.update(open={**self.s.open, slot: alert})
        return True

    def end(self, slot: str, ts: datetime, fields: Mapping[str, Any]) -> None:
        """Report the end of an open occurrence against the alert exactly as raised."""
        alert = self.s.open.get(slot)
        if alert is None:
            return
        self.events.append(AlertUpdate(alert=alert, ts=ts, fields=dict(fields), closes=True))
        remaining = {k: v for k, v in self.s.open.items() if k != slot}
        self.update(open=remaining)
