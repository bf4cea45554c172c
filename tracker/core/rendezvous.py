"""Rendezvous: two devices standing still next to each other where nobody has a reason to stop.

Cocaine is moved into cleared containers during short meetings on road shoulders, in
corridors and in unused corners of the port; a truck parked beside another truck or beside
a container for minutes, outside every zone where stopping is authorized, is the tell-tale.

Each device evaluates its own fixes against the latest positions of the devices near it
(``World.near``), so the cost is proportional to the neighbours, never to all pairs. Both
devices of a meeting reach the same alert id: the alert is filed under the alphabetically
first device and keyed by the pair and the moment they were first both standing there, so
the store keeps one alert whichever side noticed first.

A device counts as standing only while its newest fix shows it at its stop (:func:`stands_at_fix`): a stop
lasts until a second fix outside it, so a tracker that has just driven off still carries its stop's start
while its newest fix is wherever it has got to. A sparse tracker passing a parked truck at road speed puts
one fix beside it, and the stop it left 600 m back made the pair look ten minutes old (measured: most false
meetings of the detection benchmark's edge style, and its false "alongside" alerts, were this).

Time together counts from when both were standing *outside* authorized zones
(``Motion.outside_since``), not from the start of their stops: two trucks that waited side by
side in a yard and leave together send their first fixes from the road just outside, while
their stationary periods, begun in the yard, still run.

A container and its own truck (paired by dispatch or inferred from moving together) standing
side by side are a haul waiting in a queue or at a loading spot, not a meeting; a truck beside
some other truck's container still is one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from geofences import FenceIndex, FenceKind, haversine_m
from tracker.core.detector import (
    Detector,
    FixContext,
    Motion,
    TickContext,
    first_after,
    in_authorized_zone,
    next_instant,
)
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Event, Ping, Severity
from tracker.core.rules import believed_speed, met, standing_since, together_since
from tracker.core.world import Position, World

if TYPE_CHECKING:  # the device state holds this detector's state type: a runtime import would be circular
    from tracker.core.state import DeviceState

KIND = "rendezvous"


@dataclass(frozen=True, slots=True)
class Params:
    """Thresholds of the rendezvous rule."""

    distance_m: float = 30.0
    """Two vehicles side by side, or a truck beside a container, are within this; lanes of moving traffic
    and neighbouring parking bays of a lot are usually further apart than the GPS noise allows to blur."""
    release_m: float = 50.0
    """A raised meeting ends only beyond this distance, so GPS jitter around ``distance_m`` does not end
    and restart it; it matches the 50 m within which a device still counts as stationary."""
    min_duration_s: float = 300.0
    """Standing together for longer than this is a meeting; a traffic jam or a short wait at a junction is not."""
    stale_s: float = 600.0
    """A neighbour whose latest fix is older than this (relative to the evaluated time) is not known to be
    there any more; stationary trackers report sparsely, hence a generous value."""
    port_area_only: bool = True
    """Only meetings of a device inside some fence of the port (terminals, corridors, the port boundary)
    are ours; what happens out in the city is for the police."""
    stop_radius_m: float = 50.0
    """A fix further than this from its stop's centre is the device leaving (or an outlier), not standing
    there: the stationary model's own cluster radius (``[detectors.motion] radius_m``)."""
    moving_speed_ms: float = 2.0
    """A fix reporting more than this (m/s) is a device on the move, whatever its stop still says; a parked
    tracker's Doppler speed stays well below it."""


@dataclass(frozen=True, slots=True)
class _Self:
    """The evaluating device as seen at the evaluated time (its new fix, or its last fix on a tick)."""

    device_id: str
    kind: DeviceKind
    ts: datetime
    lon: float
    lat: float
    stationary_since: datetime | None
    outside_since: datetime | None
    authorized: bool
    in_port: bool
    port: str | None
    fence_id: str | None
    fences: tuple[str, ...]
    paired_with: str | None = None  # its own container (or truck): standing together is expected
    standing: bool = True  # its fix lies at its stop and reports no road speed (``stands_at_fix``)


# gc=False: immutable values that hold no container able to point back at them (see DeviceState)
class _Meeting(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A raised meeting; the alert is kept field by field so that updates refer to it unchanged."""

    partner: str
    since: datetime
    alert: Alert


class RendezvousState(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """Meetings this device is part of (stored by ``tracker.core.codec``)."""

    open: tuple[_Meeting, ...] = ()
    closed: tuple[tuple[str, datetime], ...] = ()
    """Keys of meetings already closed, with when: a meeting flapping around ``release_m`` is not raised twice."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RendezvousState:
        """The JSON form states were stored in before ``tracker.core.codec`` (read once after an upgrade)."""
        if not data:
            return cls()
        return cls(
            open=tuple(
                _Meeting(m["partner"], datetime.fromisoformat(m["since"]), _alert_from_json(m["alert"]))
                for m in data.get("open", ())
            ),
            closed=tuple((k, datetime.fromisoformat(t)) for k, t in data.get("closed", ())),
        )


def _alert_from_json(data: Mapping[str, Any]) -> Alert:
    return Alert.from_state({"kind": KIND, "severity": Severity.HIGH.value, **data})


def stands_at_fix(
    lon: float,
    lat: float,
    speed: float | None,
    stationary_since: datetime | None,
    centre: tuple[float, float] | None,
    params: Params | None = None,
) -> bool:
    """Whether a device's newest fix shows it standing at its stop, not merely carrying the stop's start.

    The stationary model holds one fix outside a stop as a possible outlier before it ends the stop, so
    the first fix after a departure still has ``stationary_since`` (and ``outside_since``) of the stop it
    left, wherever it lies. Standing needs that fix to be within ``stop_radius_m`` of the stop's centre
    and not to report road speed. Shared by every rule that asks "who stood next to whom" (meetings here,
    the access window's "alongside").
    """
    p = params or _DEFAULT_PARAMS
    if stationary_since is None:
        return False
    if speed is not None and speed > p.moving_speed_ms:
        return False
    return centre is None or haversine_m(lon, lat, centre[0], centre[1]) <= p.stop_radius_m


def position_stands(pos: Position, params: Params | None = None) -> bool:
    """:func:`stands_at_fix` for a device's latest position in the world view."""
    return stands_at_fix(pos.lon, pos.lat, pos.speed, pos.stationary_since, pos.centre, params)


_DEFAULT_PARAMS = Params()


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def _device_evidence(d: _Self | Position) -> dict[str, Any]:
    """One side of a meeting as the alert shows it: where and since when it stood."""
    return {
        "id": d.device_id,
        "kind": d.kind.value,
        "fix": {"ts": d.ts.isoformat(), "lon": d.lon, "lat": d.lat},
        "stationary_since": _iso(d.stationary_since),
        "outside_since": _iso(d.outside_since),
    }


def meeting_key(a: str, b: str, since: datetime) -> str:
    """The same string from either side of the meeting."""
    first, second = sorted((a, b))
    return f"{first}+{second}@{since.isoformat()}"


def _fence_context(index: FenceIndex, fences: frozenset[str], port: str | None) -> tuple[str | None, str | None]:
    """The port and the most specific fence to file the alert under (a corridor says more than the boundary)."""
    if not fences:
        return port, None
    ranked = sorted(fences, key=lambda f: (index.get(f).kind == FenceKind.PORT_BOUNDARY, f))
    return port or index.get(ranked[0]).port, ranked[0]


def _centre(m: Motion) -> tuple[float, float] | None:
    return None if m.centre_lon is None or m.centre_lat is None else (m.centre_lon, m.centre_lat)


def _seconds(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()


_EMPTY = RendezvousState()


class RendezvousDetector(Detector[RendezvousState | None]):
    name: ClassVar[str] = KIND

    def read(self, device: DeviceState) -> RendezvousState | None:
        return device.rendezvous

    def write(self, device: DeviceState, state: RendezvousState | None) -> None:
        device.rendezvous = state

    def __init__(self, params: Params | None = None) -> None:
        self.params = params or Params()

    def on_fix(
        self, state: RendezvousState | None, ping: Ping, ctx: FixContext
    ) -> tuple[RendezvousState | None, list[Event]]:
        m = ctx.motion
        if state is None and (
            m.stationary_since is None
            or m.outside_since is None
            or (self.params.port_area_only and not ctx.fences)
            or ctx.authorized_stop()
        ):
            # nothing open, nothing closed to prune, and no meeting may start (see ``_evaluate``'s ``may_start``):
            # most fixes of a port, moving or parked in a yard, end here without building the device's picture
            return None, []
        port, fence_id = _fence_context(ctx.index, ctx.fences, ctx.params_port)
        me = _Self(
            device_id=ctx.device_id,
            kind=ctx.kind,
            ts=ping.ts,
            lon=ping.lon,
            lat=ping.lat,
            stationary_since=ctx.motion.stationary_since,
            outside_since=ctx.motion.outside_since,
            authorized=ctx.authorized_stop(),
            in_port=bool(ctx.fences),
            port=port,
            fence_id=fence_id,
            fences=tuple(sorted(ctx.fences)),
            paired_with=ctx.paired_with,
            standing=stands_at_fix(
                ping.lon,
                ping.lat,
                believed_speed(ping.speed, ping.lon, ping.lat, ping.ts, ctx.previous, ctx.hop_m),
                ctx.motion.stationary_since,
                _centre(ctx.motion),
                self.params,
            ),
        )
        return self._evaluate(state or _EMPTY, me, ping.ts, ctx.world)

    def next_due(self, state: RendezvousState | None, ctx: TickContext, after: datetime | None) -> datetime | None:
        """When a tick could raise or close a meeting, judged without the world (which moves on its own).

        An open meeting may end at any moment (the partner moves off, falls silent, or this device does), so
        it is due at every tick. A meeting may start only while this device stands outside authorized zones
        inside the port and its own last fix is fresh, and only once it has stood there ``min_duration_s``
        (a meeting's start is never earlier than this device's ``outside_since``): within that window it is
        due at every tick, since a neighbour may turn up at any one. Pruning the closed keys waits for the
        next evaluation, which prunes first.
        """
        p = self.params
        last = ctx.last
        if last is None:
            return None
        soon = next_instant(after, last.ts)
        if state is not None and state.open:
            return soon
        m = ctx.motion
        if (
            m.stationary_since is None
            or m.outside_since is None
            or in_authorized_zone(ctx.index, ctx.fences)
            or (p.port_area_only and not ctx.fences)
        ):
            return None
        due = max(first_after(m.outside_since, p.min_duration_s), soon)
        return None if due >= first_after(last.ts, p.stale_s) else due

    def on_tick(
        self, state: RendezvousState | None, now: datetime, ctx: TickContext
    ) -> tuple[RendezvousState | None, list[Event]]:
        """Lets a meeting be raised or closed while both trackers report sparsely, as parked trackers do."""
        if ctx.last is None:
            return state, []
        port, fence_id = _fence_context(ctx.index, ctx.fences, None)
        own = ctx.world.get(ctx.device_id)  # on a tick the world already holds this device's last fix
        me = _Self(
            device_id=ctx.device_id,
            kind=ctx.kind,
            ts=ctx.last.ts,
            lon=ctx.last.lon,
            lat=ctx.last.lat,
            stationary_since=ctx.motion.stationary_since,
            outside_since=ctx.motion.outside_since,
            authorized=in_authorized_zone(ctx.index, ctx.fences),
            in_port=bool(ctx.fences),
            port=port,
            fence_id=fence_id,
            fences=tuple(sorted(ctx.fences)),
            paired_with=None if own is None else own.paired_with,
            standing=stands_at_fix(
                ctx.last.lon,
                ctx.last.lat,
                None if own is None else own.speed,
                ctx.motion.stationary_since,
                _centre(ctx.motion),
                self.params,
            ),
        )
        return self._evaluate(state or _EMPTY, me, now, ctx.world)

    def _evaluate(
        self, st: RendezvousState, me: _Self, at: datetime, world: World
    ) -> tuple[RendezvousState | None, list[Event]]:
        p = self.params
        events: list[Event] = []
        closed = [(k, t) for k, t in st.closed if _seconds(at, t) <= p.stale_s]
        self_fresh = _seconds(at, me.ts) <= p.stale_s
        still_open: list[_Meeting] = []
        for meeting in st.open:
            reason = self._ended(meeting, me, at, world) if self_fresh else "signal_lost"
            if reason is None:
                still_open.append(meeting)
                continue
            events.append(self._close(meeting, me, at, reason, world.get(meeting.partner)))
            closed.append((meeting.alert.key, at))

        may_start = (
            self_fresh
            and me.stationary_since is not None
            and me.outside_since is not None
            and me.standing
            and not me.authorized
            and (me.in_port or not p.port_area_only)
        )
        if may_start and me.outside_since is not None:
            partners = {m.partner for m in still_open}
            done = {k for k, _ in closed}
            for distance, other in world.near(me.lon, me.lat, p.distance_m, exclude=me.device_id):
                standing = standing_since(other)
                if other.device_id in partners or standing is None:
                    continue
                if not position_stands(other, p):
                    continue  # its newest fix is a departure (or an outlier) that happens to lie here
                if me.paired_with == other.device_id or other.paired_with == me.device_id:
                    continue  # a haul standing together: the box on its own truck
                if _seconds(at, other.ts) > p.stale_s:
                    continue
                since = together_since(me.outside_since, standing)
                if not met(since, at, p.min_duration_s):
                    continue
                key = meeting_key(me.device_id, other.device_id, since)
                if key in done:
                    continue
                alert = self._alert(me, other, distance, since, at, key)
                events.append(alert)
                still_open.append(_Meeting(other.device_id, since, alert))

        if not still_open and not closed:
            return None, events
        new = RendezvousState(open=tuple(sorted(still_open, key=lambda m: m.partner)), closed=tuple(closed))
        return (st if new == st else new), events

    def _ended(self, meeting: _Meeting, me: _Self, at: datetime, world: World) -> str | None:
        """Why a raised meeting is over, or None while it goes on."""
        if me.outside_since is None or me.outside_since > meeting.since:
            return "moved_on"
        other = world.get(meeting.partner)
        if other is None or _seconds(at, other.ts) > self.params.stale_s:
            return "partner_signal_lost"
        if other.outside_since is None or other.outside_since > meeting.since:
            return "partner_moved_on"
        if haversine_m(me.lon, me.lat, other.lon, other.lat) > self.params.release_m:
            return "apart"
        return None

    def _close(self, meeting: _Meeting, me: _Self, at: datetime, reason: str, other: Position | None) -> AlertUpdate:
        fields: dict[str, Any] = {
            "ended_at": at.isoformat(),
            "duration_s": round(_seconds(at, meeting.since), 1),
            "reason": reason,
            "observed_by": me.device_id,
            "fix": {"ts": me.ts.isoformat(), "lon": me.lon, "lat": me.lat},
        }
        if other is not None:
            fields["partner_fix"] = {"ts": other.ts.isoformat(), "lon": other.lon, "lat": other.lat}
        return AlertUpdate(alert=meeting.alert, ts=at, fields=fields, closes=True)

    def _alert(self, me: _Self, other: Position, distance: float, since: datetime, at: datetime, key: str) -> Alert:
        p = self.params
        devices = sorted([_device_evidence(me), _device_evidence(other)], key=lambda d: str(d["id"]))
        duration = _seconds(at, since)
        first, second = str(devices[0]["id"]), str(devices[1]["id"])
        return Alert(
            kind=KIND,
            severity=Severity.HIGH,
            device_id=first,
            ts=at,
            message=(
                f"{first} and {second} have been standing {distance:.0f} m apart outside any authorized zone "
                f"for {duration / 60:.1f} min"
            ),
            port=me.port,
            fence_id=me.fence_id,
            evidence={
                "devices": devices,
                "distance_m": round(distance, 1),
                "together_since": since.isoformat(),
                "duration_s": round(duration, 1),
                "observed_by": me.device_id,
                "fences": list(me.fences),
                "thresholds": {
                    "distance_m": p.distance_m,
                    "min_duration_s": p.min_duration_s,
                    "stale_s": p.stale_s,
                },
            },
            key=key,
        )
