"""Unexpected stop: a truck or container standing still where nobody should stop.

Loading a few bags into a cleared container takes minutes and needs the container to
stand still; trucks stop in terminals, at gates, in the waiting yards and at the
inspection area for legitimate reasons, and anywhere else in the port a stop of
several minutes is worth an officer's look. Whether the device stands still and since
when comes from ``ctx.motion`` (computed once per fix by ``tracker.core.motion``);
this module only decides which stops matter and how long they may last.

Choices:

* the duration counts only up to fixes that belong to the stop (``motion.holds``): the
  one fix that may be the departure is not taken as more time spent standing still;
* once any fix of a stop was in an authorized zone the whole stop is authorized, so GPS
  noise around a terminal's edge cannot turn a legitimate wait into an alert;
* only stops inside the port count: some fence of the port holds the fix or the stop's
  centre. Outside them a truck is parked in town between two jobs;
* ticks never raise or extend a stop. A tracker that stopped reporting while parked
  may be parked, switched off or jammed; claiming it "stood still for 20 minutes"
  from the clock alone would be a guess, and silence is ``tracker.core.dark``'s
  business. The price: an alert comes at the first fix at or after the threshold, so
  at most one reporting interval late.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from geofences import Fence, FenceKind, haversine_m
from tracker.core.detector import AUTHORIZED_STOP_KINDS, Detector, FixContext, TickContext
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Event, Ping, Severity
from tracker.core.rules import rolling as _rolling
from tracker.core.rules import stood_long_enough, stop_ended, stop_evidence

if TYPE_CHECKING:  # the device state holds this detector's state type: a runtime import would be circular
    from tracker.core.state import DeviceState

__all__ = ["DEFAULT_SPECIFICITY", "StopDetector", "StopParams"]

DEFAULT_SPECIFICITY: tuple[FenceKind, ...] = (
    FenceKind.RESTRICTED,
    FenceKind.GATE,
    FenceKind.INSPECTION_AREA,
    FenceKind.AUTHORIZED_PARKING,
    FenceKind.QUAY,
    FenceKind.CUSTOMS_YARD,
    FenceKind.CORRIDOR,
    FenceKind.TERMINAL,
    FenceKind.PORT_BOUNDARY,
)
"""Which zone kind wins when a stop lies in several fences, most specific first.

Restricted comes first because it is the reason to be stricter; port fence sets overlap
freely (a customs yard drawn on top of a terminal), so a fixed order is what makes the
applied threshold predictable and explainable in the evidence."""


def _zone_defaults() -> Mapping[FenceKind, float]:
    return MappingProxyType({FenceKind.RESTRICTED: 120.0, FenceKind.QUAY: 180.0, FenceKind.CUSTOMS_YARD: 180.0})


@dataclass(frozen=True, slots=True)
class StopParams:
    """Thresholds of the stop detector.

    ``min_duration_s`` (300 s): long enough for a truck waiting at a crossing or for a
    crane not to alarm, short enough to catch the few minutes a contamination takes.
    ``by_device``: per device kind (empty by default: containers and seals ride on
    trucks, so they stop when the truck stops). ``by_zone``: per fence kind, applied
    for the most specific zone of the stop (see ``specificity``) and preferred over the
    device kind, because where the stop happens says more than what stopped. Defaults:
    restricted 120 s (nobody has business there at all), quay and customs yard 180 s
    (cleared containers stand there, the very places the product watches). A zone
    kind not listed falls back to the device kind, then to ``min_duration_s``.
    """

    min_duration_s: float = 300.0
    by_device: Mapping[DeviceKind, float] = field(default_factory=lambda: MappingProxyType({}))
    by_zone: Mapping[FenceKind, float] = field(default_factory=_zone_defaults)
    specificity: tuple[FenceKind, ...] = DEFAULT_SPECIFICITY
    severity: Severity = Severity.MEDIUM
    restricted_severity: Severity = Severity.HIGH


class StopState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The stop being followed (stored by ``tracker.core.codec``)."""

    start: datetime
    last_in: datetime  # last fix that belonged to the stop
    authorized: bool
    alert: Alert | None  # the raised alert, exactly as raised, for its updates
    standing_from: datetime | None = None  # the stop is timed from here: the fix before it reported road speed
    rolling: bool = False  # no stop yet: ``start`` is a fix that reported road speed, kept in case it seeds one

    @classmethod
    def from_json(cls, data: Mapping[str, Any], device_id: str) -> StopState:
        """The JSON form states were stored in before ``tracker.core.codec`` (read once after an upgrade)."""
        raw = data.get("alert")
        return cls(
            start=datetime.fromisoformat(data["start"]),
            last_in=datetime.fromisoformat(data["last_in"]),
            authorized=bool(data["authorized"]),
            alert=None if raw is None else StopDetector._alert(raw, device_id),
        )


def _begin(stop: StopState) -> datetime:
    """When the stop began to stand: its first fix, unless that one was still rolling."""
    return stop.standing_from or stop.start


def _fence_json(f: Fence) -> dict[str, str]:
    return {"id": f.id, "name": f.name, "kind": f.kind.value}


def _fix_json(ts: datetime, lon: float, lat: float) -> dict[str, Any]:
    return {"ts": ts.isoformat(), "lon": lon, "lat": lat}


class StopDetector(Detector[StopState | None]):
    """Raises ``unexpected_stop`` once per stop and closes it when the device moves on."""

    name: ClassVar[str] = "unexpected_stop"
    Params: ClassVar[type[StopParams]] = StopParams

    def read(self, device: DeviceState) -> StopState | None:
        return device.unexpected_stop

    def write(self, device: DeviceState, state: StopState | None) -> None:
        device.unexpected_stop = state

    def __init__(self, params: StopParams | None = None) -> None:
        self.params = params or StopParams()

    # -- helpers -------------------------------------------------------------------------

    def threshold(self, kind: DeviceKind, fences: list[Fence]) -> tuple[float, str, Fence | None]:
        """Threshold for a stop of ``kind`` in ``fences``, why it applies, and the zone that set it."""
        p = self.params
        rank = {k: i for i, k in enumerate(p.specificity)}
        zoned = sorted(
            (f for f in fences if f.kind in p.by_zone),
            key=lambda f: (rank.get(f.kind, len(rank)), f.id),
        )
        if zoned:
            f = zoned[0]
            return float(p.by_zone[f.kind]), f"zone kind {f.kind.value}", f
        if kind in p.by_device:
            return float(p.by_device[kind]), f"device kind {kind.value}", None
        return float(p.min_duration_s), "default", None

    @staticmethod
    def _alert(data: Mapping[str, Any], device_id: str) -> Alert:
        return Alert.from_state({**data, "kind": StopDetector.name, "device_id": device_id})

    def _raise(
        self, stop: StopState, ping: Ping, ctx: FixContext, fences: list[Fence], rule: tuple[float, str, Fence | None]
    ) -> dict[str, Any]:
        m = ctx.motion
        assert m.centre_lon is not None and m.centre_lat is not None
        threshold, reason, zone = rule
        duration = (ping.ts - _begin(stop)).total_seconds()
        restricted = any(f.kind is FenceKind.RESTRICTED for f in fences)
        severity = self.params.restricted_severity if restricted else self.params.severity
        named = zone or next((f for f in fences if f.kind is not FenceKind.PORT_BOUNDARY), None)
        port = next((f.port for f in fences), None)
        where = f"in {named.kind.value.replace('_', ' ')} {named.name!r}" if named else "outside any named zone"
        data: dict[str, Any] = {
            "severity": severity.value,
            "ts": ping.ts.isoformat(),
            "message": f"{ctx.device_id} has been standing still {where} for {duration / 60:.0f} min "
            f"(limit {threshold / 60:.0f} min)",
            "port": port,
            "fence_id": named.id if named else None,
            "key": stop.start.isoformat(),
            "evidence": {
                "centre": {"lon": m.centre_lon, "lat": m.centre_lat},
                "started_at": _begin(stop).isoformat(),
                "duration_s": duration,
                "radius_m": m.radius_m,
                "fix": _fix_json(ping.ts, ping.lon, ping.lat),
                "fences": [_fence_json(f) for f in fences],
                "threshold_s": threshold,
                "threshold_reason": reason,
                "threshold_fence": None if zone is None else _fence_json(zone),
                "device_kind": ctx.kind.value,
            },
        }
        return data

    @staticmethod
    def _fences(ctx: FixContext) -> list[Fence]:
        """Fences of the stop: where the fix is (with hysteresis) and where the stop's centre is."""
        ids = set(ctx.fences)
        m = ctx.motion
        if m.centre_lon is not None and m.centre_lat is not None:
            ids |= ctx.index.fences_at([m.centre_lon], [m.centre_lat])[0]
        return [ctx.index.get(i) for i in sorted(ids) if i in ctx.index]

    # -- detector protocol ---------------------------------------------------------------

    def on_fix(self, state: StopState | None, ping: Ping, ctx: FixContext) -> tuple[StopState | None, list[Event]]:
        stop = state
        events: list[Event] = []
        since = ctx.motion.stationary_since
        if stop is not None and stop_ended(stop.start, ctx.motion):
            if stop.alert is not None:
                alert = stop.alert
                centre = alert.evidence["centre"]
                events.append(
                    AlertUpdate(
                        alert=alert,
                        ts=ping.ts,
                        fields={
                            "ended_at": stop.last_in.isoformat(),
                            "duration_s": (stop.last_in - stop.start).total_seconds(),
                            "moved_fix": _fix_json(ping.ts, ping.lon, ping.lat),
                            "moved_m": haversine_m(ping.lon, ping.lat, centre["lon"], centre["lat"]),
                        },
                        closes=True,
                    )
                )
            stop = None
        rolling = _rolling(ping.speed, ping.lon, ping.lat, ping.ts, ctx.previous, ctx.hop_m)
        if since is None:
            # a rolling fix is remembered in case it seeds the stop that follows (see below)
            return (StopState(ping.ts, ping.ts, False, None, None, True) if rolling else None), events
        # a fix reporting road speed is a device on the move whatever the cluster says: a sparse tracker's fixes just
        # before and just after a gate queue lie 50 m and five minutes apart, both at 10 m/s (edge-style benchmark)
        in_stop = stop_evidence(ctx.motion, ping.lon, ping.lat) and not rolling
        if stop is not None and stop.rolling:
            # the cluster was seeded by a rolling fix (a truck slowing into a quay beside a restricted lot, its fix 12 m
            # off): it stands from the first fix that does not roll; timed from the rolling one, a two-minute
            # hand-over was a restricted-zone stop (edge-style benchmark, Santos seed 4)
            if rolling:
                return stop, events
            stop = StopState(since, since, False, None, ping.ts)
        if stop is None:
            if rolling:
                return None, events  # still rolling: the stop starts at a fix that stands
            stop = StopState(since, since, False, None)
        if in_stop:
            stop = StopState(stop.start, ping.ts, stop.authorized, stop.alert, stop.standing_from)
        if stop.alert is not None or stop.authorized:
            return stop, events
        fences = self._fences(ctx)
        if ctx.authorized_stop() or any(f.kind in AUTHORIZED_STOP_KINDS for f in fences):
            return StopState(stop.start, stop.last_in, True, None, stop.standing_from), events
        if not fences:
            # outside every fence of the port: a truck parked in town between two jobs is nobody's alarm (a cleared
            # box leaving the port is the access window's business, which watches it wherever it goes)
            return stop, events
        if in_stop:
            rule = self.threshold(ctx.kind, fences)
            if stood_long_enough(_begin(stop), ping.ts, rule[0]):
                alert = self._alert(self._raise(stop, ping, ctx, fences, rule), ctx.device_id)
                stop = StopState(stop.start, stop.last_in, stop.authorized, alert, stop.standing_from)
                events.append(alert)
        return stop, events

    def next_due(self, state: StopState | None, ctx: TickContext, after: datetime | None) -> datetime | None:
        """Never: ticks do nothing here (see ``on_tick``)."""
        return None

    def on_tick(self, state: StopState | None, now: datetime, ctx: TickContext) -> tuple[StopState | None, list[Event]]:
        """Nothing: a stop is only ever measured between fixes (see the module docstring)."""
        return state, []
