"""Post-clearance access window: what touches a container between customs clearance and loading.

Cocaine is loaded into export containers after customs has cleared them, by insiders who
know the box will not be opened again. The interval from the clearance to the container
reaching the quay (or being reported on board) is therefore the one that matters: during
it a container has no business stopping outside authorised zones, leaving its route,
meeting other vehicles, opening its doors, going silent or changing seals. This detector
opens that window on a ``cleared`` result, watches it, and closes it on quay entry, on
``loaded``, or when customs calls the container back (``selected`` / ``held``).

Every opening and closing is an ``info`` alert so an officer reading the timeline can see
why a later alert was (or was not) raised. Each suspicious occurrence is raised once as
``post_inspection_access`` with the reason in its evidence; when the occurrence ends an
``AlertUpdate`` carries the end and the duration.

Pure: time comes from fixes, inspections and the ``now`` of a tick. Thresholds that a
tick can observe (silence, overrun) carry the instant the threshold was crossed as their
time, so a live run and a replay without ticks produce the same alert.

Choices:

* the window runs from the clearance up to the first fix inside a quay fence; that fix
  (and any sensor event on it) is already at the supervised loading zone. The silence
  before it and an overrun are still judged, since they happened inside the window;
* stops, zones, excursions, sensors and meetings are judged on fixes only: a tick cannot
  tell whether a silent tracker stands still, and silence is reported as ``dark``;
* a stop counts only the time spent outside authorised zones and only fixes that belong
  to it (``motion.holds``), so the fix that may be the departure adds no time;
* alert keys carry the clearance time: the same stop seen again in a later window is a
  new occurrence with its own id, while a redelivered fix or tick never raises twice;
* fence time windows are not applied: after clearance a restricted area is off limits
  at any hour.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import msgspec
from msgspec.structs import replace

from geofences import FenceIndex, FenceKind, distance_m
from tracker.core.detector import FixContext, TickContext
from tracker.core.fix import Fix
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Event, Inspection, InspectionResult, Ping, Severity
from tracker.core.motion import holds
from tracker.core.world import Position

__all__ = [
    "ROUTE_KINDS",
    "WATCHED_EVENTS",
    "ZONE_KINDS",
    "AccessState",
    "AccessWindowDetector",
    "AccessWindowParams",
    "Clearance",
    "Params",
]

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


class Clearance(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
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


class AccessState(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
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
    stop_unauth_since: datetime | None = None  # since when that stop is outside authorised zones
    authorized: bool = False  # whether the last fix was in an authorised stop zone
    off_since: datetime | None = None  # first fix of the current excursion off the route
    off_fix: Mapping[str, Any] | None = None
    open: Mapping[str, Alert] = msgspec.field(default_factory=dict)
    intervals: tuple[float, ...] = ()  # recent seconds between accepted fixes, windows or not: the tracker's rhythm

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


class AccessWindowDetector:
    """Watches a container from customs clearance until it reaches the quay or is loaded."""

    name: ClassVar[str] = "post_inspection_access"

    def __init__(self, params: AccessWindowParams | None = None) -> None:
        self.params = params or AccessWindowParams()

    # ---------------------------------------------------------------- pairing

    def pair(self, state: AccessState | None, truck_id: str | None) -> AccessState | None:
        """Record the truck hauling this container (None to unpair): it is expected alongside, always."""
        return _stored(replace(state or _EMPTY, paired_truck=truck_id))

    # ---------------------------------------------------------------- customs

    def on_inspection(
        self, state: AccessState | None, inspection: Inspection, ctx: TickContext
    ) -> tuple[AccessState | None, list[Event]]:
        if ctx.kind is not DeviceKind.CONTAINER:
            return state, []
        run = _Run(state or _EMPTY, ctx.device_id)
        record = {
            "result": inspection.result.value,
            "ts": inspection.ts.isoformat(),
            "facility": inspection.facility,
            "seal": inspection.seal,
            "inspection_id": inspection.inspection_id,
        }
        last = run.s.last_inspection
        if last is not None and (record == dict(last) or inspection.ts < datetime.fromisoformat(last["ts"])):
            # a redelivered or out-of-date customs message must not reopen or close anything
            return state, []
        run.update(last_inspection=record)
        window = run.s.window
        if window is not None and inspection.ts >= window.ts:
            self._check_seal(run, window, inspection, ctx)
        result = inspection.result
        if result is InspectionResult.CLEARED:
            if window is None and (run.s.closed_at is None or inspection.ts > run.s.closed_at):
                self._open(run, inspection, ctx)
        elif result is InspectionResult.LOADED:
            if window is not None:
                self._close(run, inspection.ts, ctx.index, ctx.fences, {"by": "loaded", "inspection": record})
        else:
            if window is not None:
                self._close(run, inspection.ts, ctx.index, ctx.fences, {"by": result.value, "inspection": record})
            self._recall(run, inspection, record, window, ctx)
        return _stored(run.s), run.events

    def _open(self, run: _Run, inspection: Inspection, ctx: TickContext) -> None:
        clearance = Clearance(
            ts=inspection.ts,
            container_no=inspection.container_no,
            facility=inspection.facility,
            seal=inspection.seal,
            inspection_id=inspection.inspection_id,
            port=_port(ctx.index, ctx.fences, None),
        )
        run.update(
            window=clearance,
            keys=(),
            counts={},
            stop_since=None,
            stop_unauth_since=None,
            off_since=None,
            off_fix=None,
            open={},
        )
        evidence: dict[str, Any] = {
            "clearance": clearance.evidence(),
            "last_fix": None if ctx.last is None else _fix_json(ctx.last.ts, ctx.last.lon, ctx.last.lat),
            "fences": _fences_json(ctx.index, ctx.fences),
            "stationary_since": _iso(ctx.motion.stationary_since),
            "paired_truck": run.s.paired_truck,
            "thresholds": self._thresholds(),
        }
        where = f" at {clearance.facility}" if clearance.facility else ""
        run.raise_alert(
            Alert(
                kind="access_window_opened",
                severity=Severity.INFO,
                device_id=run.device_id,
                ts=clearance.ts,
                message=f"Customs cleared container {clearance.container_no}{where}; its access window is open "
                "until it reaches the quay",
                port=clearance.port,
                evidence=evidence,
                key=clearance.ts.isoformat(),
            )
        )

    def _close(
        self, run: _Run, ts: datetime, index: FenceIndex, fences: frozenset[str], cause: Mapping[str, Any]
    ) -> None:
        window = run.s.window
        if window is None:
            return
        for slot in sorted(run.s.open):
            started = _dt(run.s.open[slot].evidence.get("started_at")) or window.ts
            run.end(
                slot, ts, {"ended_at": ts.isoformat(), "ended_by": "window_closed", "duration_s": _secs(ts - started)}
            )
        duration = _secs(ts - window.ts)
        counts = dict(run.s.counts)
        evidence: dict[str, Any] = {
            "clearance": window.evidence(),
            "closed_at": ts.isoformat(),
            "duration_s": duration,
            "closed_by": dict(cause),
            "alerts_raised": counts,
            "fences": _fences_json(index, fences),
        }
        how = {"quay": "reached the quay", "loaded": "was reported loaded"}.get(
            str(cause["by"]), f"was {cause['by']} by customs"
        )
        alert = Alert(
            kind="access_window_closed",
            severity=Severity.INFO,
            device_id=run.device_id,
            ts=ts,
            message=f"Access window of container {window.container_no} closed after {duration:.0f} s: it {how} "
            f"({sum(counts.values())} access alerts in the window)",
            port=_port(index, fences, window.port),
            fence_id=cause["fence"]["id"] if "fence" in cause else None,
            evidence=evidence,
            key=window.ts.isoformat(),
        )
        run.events.append(alert)
        run.update(
            window=None,
            keys=(),
            counts={},
            closed_at=ts,
            stop_since=None,
            stop_unauth_since=None,
            off_since=None,
            off_fix=None,
            open={},
        )

    def _recall(
        self,
        run: _Run,
        inspection: Inspection,
        record: Mapping[str, Any],
        window: Clearance | None,
        ctx: TickContext,
    ) -> None:
        kind = f"inspection_{inspection.result.value}"
        key = f"{inspection.ts.isoformat()}|{inspection.inspection_id or ''}"
        if f"{kind}:{key}" in run.s.recalls:
            return
        run.update(recalls=(*run.s.recalls, f"{kind}:{key}")[-MAX_RECALLS:])
        what = {"selected": "selected for a second inspection", "held": "held"}[inspection.result.value]
        where = f" at {inspection.facility}" if inspection.facility else ""
        run.events.append(
            Alert(
                kind=kind,
                severity=Severity.INFO,
                device_id=run.device_id,
                ts=inspection.ts,
                message=f"Customs {what} container {inspection.container_no}{where}",
                port=_port(ctx.index, ctx.fences, None if window is None else window.port),
                evidence={
                    "inspection": dict(record),
                    "container_no": inspection.container_no,
                    "window_closed": None if window is None else window.evidence(),
                    "last_fix": None if ctx.last is None else _fix_json(ctx.last.ts, ctx.last.lon, ctx.last.lat),
                    "fences": _fences_json(ctx.index, ctx.fences),
                },
                key=key,
            )
        )

    def _check_seal(self, run: _Run, window: Clearance, inspection: Inspection, ctx: TickContext) -> None:
        recorded, reported = _seal(window.seal), _seal(inspection.seal)
        if recorded is None or reported is None or recorded == reported:
            return
        where = f" at {inspection.facility}" if inspection.facility else ""
        evidence = self._base(window, "seal_mismatch", inspection.ts, ctx.index, ctx.fences)
        evidence.update(
            {
                "recorded_seal": window.seal,
                "reported_seal": inspection.seal,
                "inspection": {
                    "result": inspection.result.value,
                    "ts": inspection.ts.isoformat(),
                    "facility": inspection.facility,
                    "seal": inspection.seal,
                    "inspection_id": inspection.inspection_id,
                },
                "last_fix": None if ctx.last is None else _fix_json(ctx.last.ts, ctx.last.lon, ctx.last.lat),
            }
        )
        run.raise_alert(
            Alert(
                kind=KIND,
                severity=Severity.CRITICAL,
                device_id=run.device_id,
                ts=inspection.ts,
                message=f"Seal {inspection.seal!r} reported{where} on container {window.container_no} differs from "
                f"seal {window.seal!r} recorded at customs clearance",
                port=_port(ctx.index, ctx.fences, window.port),
                evidence=evidence,
                key=self._key(window, "seal_mismatch", inspection.ts, _seal(inspection.seal) or ""),
            ),
            reason="seal_mismatch",
        )

    # ---------------------------------------------------------------- fixes and ticks

    def on_fix(self, state: AccessState | None, ping: Ping, ctx: FixContext) -> tuple[AccessState | None, list[Event]]:
        if ctx.kind is not DeviceKind.CONTAINER:
            return state, []
        run = _Run(state or _EMPTY, ctx.device_id)
        # the rhythm is learned on every fix, before and between windows too, so it is known at clearance;
        # this fix's own gap is judged against the rhythm before it and only then learned
        learned = self._learn(run.s.intervals, ctx.previous, ping)
        self._fix(run, ping, ctx)
        if learned != run.s.intervals:
            run.update(intervals=learned)
        return _stored(run.s), run.events

    def _learn(self, intervals: tuple[float, ...], previous: Fix | None, ping: Ping) -> tuple[float, ...]:
        if previous is None or ping.ts <= previous.ts:
            return intervals
        p = self.params
        gap = min(p.dark_max_interval_s, _secs(ping.ts - previous.ts))
        return (*intervals, gap)[-p.dark_history :]

    def dark_limit(self, intervals: tuple[float, ...]) -> float:
        """Seconds of silence after which a cleared container's tracker counts as dark."""
        p = self.params
        if not intervals:
            return p.dark_s
        return max(p.dark_s, p.dark_k * float(statistics.median(intervals)))

    def _fix(self, run: _Run, ping: Ping, ctx: FixContext) -> None:
        window = run.s.window
        authorized = ctx.authorized_stop()
        if window is None or ping.ts < window.ts:
            # before clearance (or after loading) nothing a container does is this detector's concern
            if run.s.authorized != authorized:
                run.update(authorized=authorized)
            return
        # the interval before this fix belongs to the window even when this fix reaches the quay
        self._silence_ended(run, window, ping, ctx)
        self._overrun(run, window, ping.ts, ctx.index, ctx.fences_before)
        quays = sorted(f for f in ctx.fences if ctx.index.get(f).kind is FenceKind.QUAY)
        if quays:
            cause = {
                "by": "quay",
                "fence": _fence_json(ctx.index, quays[0]),
                "fix": _fix_json(ping.ts, ping.lon, ping.lat, ping.accuracy),
            }
            self._close(run, ping.ts, ctx.index, ctx.fences, cause)
            run.update(authorized=authorized)
            return
        self._sensor(run, window, ping, ctx)
        self._zones(run, window, ping, ctx)
        self._stop(run, window, ping, ctx, authorized)
        self._off_route(run, window, ping, ctx)
        self._alongside(run, window, ping, ctx, authorized)
        run.update(authorized=authorized)

    def next_due(self, state: AccessState | None, ctx: TickContext, after: datetime | None) -> datetime | None:
        """Only an open window has a silence or an overrun to time: the first instant either goes past its
        limit, unless its alert was already raised in this window (``on_tick`` would then change nothing)."""
        if ctx.kind is not DeviceKind.CONTAINER or state is None or state.window is None:
            return None
        s = state
        window: Clearance = state.window
        due: list[datetime] = []
        silent_since = window.ts if ctx.last is None or ctx.last.ts < window.ts else ctx.last.ts
        if "dark" not in s.open and self._key(window, "dark", silent_since) not in s.keys:
            due.append(silent_since + timedelta(seconds=self.dark_limit(s.intervals)) + _INSTANT)
        if self._key(window, "overrun", window.ts) not in s.keys:
            due.append(window.ts + timedelta(seconds=self.params.max_window_s) + _INSTANT)
        return min(due, default=None)

    def on_tick(
        self, state: AccessState | None, now: datetime, ctx: TickContext
    ) -> tuple[AccessState | None, list[Event]]:
        if ctx.kind is not DeviceKind.CONTAINER:
            return state, []
        run = _Run(state or _EMPTY, ctx.device_id)
        window = run.s.window
        if window is None or now < window.ts:
            return state, []
        silent_since = window.ts if ctx.last is None or ctx.last.ts < window.ts else ctx.last.ts
        if now - silent_since > timedelta(seconds=self.dark_limit(run.s.intervals)):
            self._dark(run, window, silent_since, ctx.last, ctx.index, ctx.fences)
        self._overrun(run, window, now, ctx.index, ctx.fences)
        if not run.events:
            return state, []
        return _stored(run.s), run.events

    # ---------------------------------------------------------------- sub-conditions

    def _key(self, window: Clearance, reason: str, start: datetime, detail: str = "") -> str:
        # the clearance is part of the key: the same stop or silence seen again in a later window is a
        # new occurrence and must get its own alert id
        suffix = f":{detail}" if detail else ""
        return f"{reason}@{start.isoformat()}{suffix}|cleared@{window.ts.isoformat()}"

    def _thresholds(self) -> dict[str, Any]:
        p = self.params
        return {
            "stop_s": p.stop_s,
            "off_route_grace_s": p.off_route_grace_s,
            "alongside_m": p.alongside_m,
            "alongside_s": p.alongside_s,
            "dark_s": p.dark_s,
            "max_window_s": p.max_window_s,
            "route_fence_ids": None if p.route_fence_ids is None else sorted(p.route_fence_ids),
        }

    def _base(
        self, window: Clearance, reason: str, ts: datetime, index: FenceIndex, fences: Iterable[str]
    ) -> dict[str, Any]:
        return {
            "reason": reason,
            "clearance": window.evidence(),
            "since_clearance_s": _secs(ts - window.ts),
            "fences": _fences_json(index, fences),
        }

    def _emit(
        self,
        run: _Run,
        window: Clearance,
        reason: str,
        ts: datetime,
        message: str,
        evidence: dict[str, Any],
        key: str,
        port: str | None,
        *,
        fence_id: str | None = None,
        slot: str | None = None,
    ) -> bool:
        alert = Alert(
            kind=KIND,
            severity=Severity.HIGH,
            device_id=run.device_id,
            ts=ts,
            message=message,
            port=port if port is not None else window.port,
            fence_id=fence_id,
            evidence=evidence,
            key=key,
        )
        return run.raise_alert(alert, reason=reason, slot=slot)

    def _dark(
        self,
        run: _Run,
        window: Clearance,
        silent_since: datetime,
        last: Fix | None,
        index: FenceIndex,
        fences: frozenset[str],
    ) -> None:
        if "dark" in run.s.open:
            return
        p = self.params
        limit = self.dark_limit(run.s.intervals)
        threshold = silent_since + timedelta(seconds=limit)
        evidence = self._base(window, "dark", threshold, index, fences)
        evidence.update(
            {
                "started_at": silent_since.isoformat(),
                "last_fix": None if last is None else _fix_json(last.ts, last.lon, last.lat),
                "silent_since": silent_since.isoformat(),
                "threshold_s": limit,
                "dark_s": p.dark_s,
                "dark_k": p.dark_k,
                "expected_interval_s": float(statistics.median(run.s.intervals)) if run.s.intervals else None,
            }
        )
        self._emit(
            run,
            window,
            "dark",
            threshold,
            f"Tracker of container {window.container_no} silent for more than {limit:.0f} s after customs clearance",
            evidence,
            self._key(window, "dark", silent_since),
            window.port,
            slot="dark",
        )

    def _silence_ended(self, run: _Run, window: Clearance, ping: Ping, ctx: FixContext) -> None:
        prev = ctx.previous
        silent_since = window.ts if prev is None or prev.ts < window.ts else prev.ts
        if "dark" not in run.s.open and ping.ts - silent_since > timedelta(seconds=self.dark_limit(run.s.intervals)):
            # no tick saw this silence (a replay, or ticks stalled): raise it now, as a tick would have
            self._dark(run, window, silent_since, prev, ctx.index, ctx.fences_before)
        if "dark" in run.s.open:
            run.end(
                "dark",
                ping.ts,
                {
                    "ended_at": ping.ts.isoformat(),
                    "duration_s": _secs(ping.ts - silent_since),
                    "resumed_fix": _fix_json(ping.ts, ping.lon, ping.lat, ping.accuracy),
                    "resumed_fences": _fences_json(ctx.index, ctx.fences),
                },
            )

    def _overrun(self, run: _Run, window: Clearance, now: datetime, index: FenceIndex, fences: frozenset[str]) -> None:
        limit = timedelta(seconds=self.params.max_window_s)
        if now - window.ts <= limit:
            return
        threshold = window.ts + limit
        evidence = self._base(window, "overrun", threshold, index, fences)
        evidence.update({"started_at": window.ts.isoformat(), "threshold_s": self.params.max_window_s})
        self._emit(
            run,
            window,
            "overrun",
            threshold,
            f"Access window of container {window.container_no} open for more than "
            f"{self.params.max_window_s / 3600:g} h without reaching the quay",
            evidence,
            self._key(window, "overrun", window.ts),
            window.port,
            slot="overrun",
        )

    def _sensor(self, run: _Run, window: Clearance, ping: Ping, ctx: FixContext) -> None:
        events = sorted(e for e in set(ping.events) if e in WATCHED_EVENTS)
        if not events:
            return
        evidence = self._base(window, "sensor", ping.ts, ctx.index, ctx.fences)
        evidence.update({"events": events, "fix": _fix_json(ping.ts, ping.lon, ping.lat, ping.accuracy)})
        self._emit(
            run,
            window,
            "sensor",
            ping.ts,
            f"Container {window.container_no} reported {' and '.join(events)} "
            f"{_secs(ping.ts - window.ts):.0f} s after customs clearance",
            evidence,
            self._key(window, "sensor", ping.ts),
            _port(ctx.index, ctx.fences, window.port),
        )

    def _zones(self, run: _Run, window: Clearance, ping: Ping, ctx: FixContext) -> None:
        index = ctx.index
        changes: list[tuple[str, str]] = []
        for fid in sorted(ctx.fences - ctx.fences_before):
            if index.get(fid).kind in ZONE_KINDS:
                changes.append((fid, "enter"))
        for fid in sorted(ctx.fences_before - ctx.fences):
            if fid in index and index.get(fid).kind is FenceKind.PORT_BOUNDARY:
                changes.append((fid, "exit"))
        for fid, transition in changes:
            fence = index.get(fid)
            evidence = self._base(window, "zone", ping.ts, index, ctx.fences)
            evidence.update(
                {
                    "fence": _fence_json(index, fid),
                    "transition": transition,
                    "fix": _fix_json(ping.ts, ping.lon, ping.lat, ping.accuracy),
                    "previous_fix": None
                    if ctx.previous is None
                    else _fix_json(ctx.previous.ts, ctx.previous.lon, ctx.previous.lat),
                }
            )
            verb = "entered" if transition == "enter" else "left"
            self._emit(
                run,
                window,
                "zone",
                ping.ts,
                f"Container {window.container_no} {verb} {fence.kind.value.replace('_', ' ')} {fence.name!r} "
                "after customs clearance",
                evidence,
                self._key(window, "zone", ping.ts, f"{transition}:{fid}"),
                fence.port,
                fence_id=fid,
            )

    def _stop(self, run: _Run, window: Clearance, ping: Ping, ctx: FixContext, authorized: bool) -> None:
        since = ctx.motion.stationary_since
        if since != run.s.stop_since:
            # a different stationary period (or none): the stop being followed is over
            if "stop" in run.s.open and run.s.stop_since is not None:
                run.end(
                    "stop",
                    ping.ts,
                    {
                        "ended_at": ping.ts.isoformat(),
                        "duration_s": _secs(ping.ts - run.s.stop_since),
                        "moved_fix": _fix_json(ping.ts, ping.lon, ping.lat, ping.accuracy),
                    },
                )
            run.update(stop_since=since, stop_unauth_since=None)
            fresh = True
        else:
            fresh = False
        if since is None or not holds(ctx.motion, ping.lon, ping.lat):
            # a fix outside the stop's cluster may be the departure: it is no evidence of more standing still
            return
        if authorized:
            run.update(stop_unauth_since=None)
            return
        start = run.s.stop_unauth_since
        if start is None:
            # the stop began at ``since``; it counts as unauthorised from then unless the fix before was in an
            # authorised zone, and never from before the clearance
            start = max(since, window.ts) if fresh and not run.s.authorized else ping.ts
            run.update(stop_unauth_since=start)
        duration = ping.ts - start
        if duration < timedelta(seconds=self.params.stop_s):
            return
        m = ctx.motion
        evidence = self._base(window, "stop", ping.ts, ctx.index, ctx.fences)
        evidence.update(
            {
                "started_at": since.isoformat(),
                "unauthorized_since": start.isoformat(),
                "duration_s": _secs(duration),
                "threshold_s": self.params.stop_s,
                "centre": None if m.centre_lon is None else {"lon": m.centre_lon, "lat": m.centre_lat},
                "radius_m": m.radius_m,
                "fix": _fix_json(ping.ts, ping.lon, ping.lat, ping.accuracy),
            }
        )
        self._emit(
            run,
            window,
            "stop",
            ping.ts,
            f"Container {window.container_no} has stood still for {duration.total_seconds():.0f} s outside "
            "any authorized zone after customs clearance",
            evidence,
            self._key(window, "stop", since),
            _port(ctx.index, ctx.fences, window.port),
            slot="stop",
        )

    def _on_route(self, index: FenceIndex, fence_id: str) -> bool:
        kind = index.get(fence_id).kind
        if kind not in ROUTE_KINDS:
            return False
        ids = self.params.route_fence_ids
        return kind is not FenceKind.CORRIDOR or ids is None or fence_id in ids

    def _nearest_route(self, index: FenceIndex, lon: float, lat: float) -> dict[str, Any] | None:
        best: tuple[float, str] | None = None
        for fence in index.fences:
            if not self._on_route(index, fence.id):
                continue
            d = distance_m(fence.geometry, lon, lat)
            if best is None or (d, fence.id) < best:
                best = (d, fence.id)
        if best is None:
            return None
        return {**_fence_json(index, best[1]), "distance_m": round(best[0], 1)}

    def _off_route(self, run: _Run, window: Clearance, ping: Ping, ctx: FixContext) -> None:
        fix = _fix_json(ping.ts, ping.lon, ping.lat, ping.accuracy)
        in_route = any(self._on_route(ctx.index, f) for f in ctx.fences)
        # the scan over route fences runs only for fixes outside all of them, and once per fix
        nearest = None if in_route else self._nearest_route(ctx.index, ping.lon, ping.lat)
        if in_route or (nearest is not None and nearest["distance_m"] <= self.params.off_route_margin_m):
            if run.s.off_since is not None:
                run.end(
                    "off_route",
                    ping.ts,
                    {
                        "ended_at": ping.ts.isoformat(),
                        "duration_s": _secs(ping.ts - run.s.off_since),
                        "back_on_route_fix": fix,
                        "fences": _fences_json(ctx.index, ctx.fences),
                    },
                )
                run.update(off_since=None, off_fix=None)
            return
        if run.s.off_since is None:
            run.update(off_since=ping.ts, off_fix=fix)
        start = run.s.off_since
        assert start is not None
        duration = ping.ts - start
        if ctx.motion.stationary_since is not None or duration <= timedelta(seconds=self.params.off_route_grace_s):
            return
        if "off_route" in run.s.open or self._key(window, "off_route", start) in run.s.keys:
            return
        evidence = self._base(window, "off_route", ping.ts, ctx.index, ctx.fences)
        evidence.update(
            {
                "started_at": start.isoformat(),
                "first_off_route_fix": dict(run.s.off_fix or {}),
                "fix": fix,
                "duration_s": _secs(duration),
                "threshold_s": self.params.off_route_grace_s,
                "nearest_route_fence": nearest,
                "route_fence_ids": None if self.params.route_fence_ids is None else sorted(self.params.route_fence_ids),
            }
        )
        distance = "" if nearest is None else f", {nearest['distance_m']:.0f} m from its route"
        self._emit(
            run,
            window,
            "off_route",
            ping.ts,
            f"Container {window.container_no} has been off its route for {duration.total_seconds():.0f} s"
            f"{distance}, after customs clearance",
            evidence,
            self._key(window, "off_route", start),
            _port(ctx.index, ctx.fences, window.port),
            slot="off_route",
        )

    def _alongside(self, run: _Run, window: Clearance, ping: Ping, ctx: FixContext, authorized: bool) -> None:
        p = self.params
        own_since = ctx.motion.stationary_since
        found: dict[str, tuple[float, Position, datetime]] = {}
        # own time alongside counts from when this stop left authorized zones (tracker.core.motion): the departure
        # fix of a box that waited beside others in the inspection area is no minute spent with them on the road
        own_since = ctx.motion.outside_since if own_since is not None else None
        if own_since is not None and not authorized and holds(ctx.motion, ping.lon, ping.lat):
            for dist, pos in ctx.world.near(ping.lon, ping.lat, p.alongside_m, exclude=ctx.device_id):
                standing = pos.outside_since
                if standing is None and pos.stationary_since is None and not pos.authorized:
                    # one fix so far: its own reported speed says whether it stands
                    still = pos.speed is not None and pos.speed <= p.still_speed_ms
                    standing = pos.ts if still else None
                if pos.device_id == run.s.paired_truck or standing is None:
                    continue  # moving, or standing in an authorized zone (a quay, a yard) beside the box's edge
                if abs((ping.ts - pos.ts).total_seconds()) > p.alongside_max_age_s:
                    continue
                # both have stood outside authorized zones since the later of the two, and not before clearance
                since = max(own_since, standing, window.ts)
                found[pos.device_id] = (dist, pos, since)
        for slot in sorted(s for s in run.s.open if s.startswith("alongside:")):
            other = slot.split(":", 1)[1]
            started = datetime.fromisoformat(run.s.open[slot].evidence["started_at"])
            if other in found and found[other][2] == started:
                continue
            run.end(
                slot,
                ping.ts,
                {
                    "ended_at": ping.ts.isoformat(),
                    "duration_s": _secs(ping.ts - started),
                    "fix": _fix_json(ping.ts, ping.lon, ping.lat, ping.accuracy),
                },
            )
        for other, (dist, pos, since) in sorted(found.items()):
            duration = ping.ts - since
            slot = f"alongside:{other}"
            if duration <= timedelta(seconds=p.alongside_s) or slot in run.s.open:
                continue
            evidence = self._base(window, "alongside", ping.ts, ctx.index, ctx.fences)
            evidence.update(
                {
                    "started_at": since.isoformat(),
                    "duration_s": _secs(duration),
                    "threshold_s": p.alongside_s,
                    "radius_m": p.alongside_m,
                    "distance_m": round(dist, 1),
                    "fix": _fix_json(ping.ts, ping.lon, ping.lat, ping.accuracy),
                    "stationary_since": own_since.isoformat() if own_since is not None else None,
                    "other": {
                        "device_id": pos.device_id,
                        "kind": pos.kind.value,
                        "fix": _fix_json(pos.ts, pos.lon, pos.lat),
                        "stationary_since": _iso(pos.stationary_since),
                        "authorized": pos.authorized,
                    },
                    "paired_truck": run.s.paired_truck,
                }
            )
            self._emit(
                run,
                window,
                "alongside",
                ping.ts,
                f"{pos.kind.value.capitalize()} {pos.device_id} has stood {dist:.0f} m from container "
                f"{window.container_no} for {duration.total_seconds():.0f} s after customs clearance",
                evidence,
                self._key(window, "alongside", since, other),
                _port(ctx.index, ctx.fences, window.port),
                slot=slot,
            )
