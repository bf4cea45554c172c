"""Implausible fixes: the pre-filter that keeps spoofed or jammed positions out of the detectors.

A GPS spoofer (or a jammer making the receiver fall back on garbage) can put a truck
back in the terminal while it stands at a warehouse. Every other detector trusts
positions, so implausible ones are caught first and never reach them. The pipeline
calls :meth:`IntegrityCheck.check` before anything else with ``previous`` = the last
ACCEPTED fix (``DeviceState.last``): a rejected fix is stored with its flags but is
never the reference for the next check, otherwise one spoofed fix would make the next
genuine fix look like a jump back.

Two traps the module avoids:

* a long gap is not a jump: a tracker off for 2 h that reappears 60 km away moved at
  30 km/h, and the speed check over the whole gap says so;
* rejecting forever: if the accepted reference itself was the bad fix (a cold-start
  fix, or the device really was carried away while off), every later genuine fix would
  be rejected. After ``reanchor_after`` consecutive implausible fixes that are
  consistent with each other (the device really is over there), the last of them is
  accepted with the flag ``reanchored`` and becomes the new reference.

Implausible fixes are also evidence of an attack: ``repeat_count`` of them within
the repeat window raise one ``gps_integrity`` alert for the burst. The window is
``repeat_window_s`` or ``repeat_count`` of the device's own reporting intervals (×1.5),
whichever is longer: a tracker reporting every 5 min can never put three fixes in
10 min, so a fixed window would let it be spoofed for ever without an alert. A single
``teleport`` (kilometres within minutes) raises the burst's alert at once: inside a
port no receiver error is that large, so waiting for more fixes only delays the alert
(and, with ``reanchor_after`` fixes, lets the spoofed position be believed first).

Re-anchoring moves the position every detector trusts, so it is always reported: with
``evidence.reanchored`` on the burst's alert when that is raised by the same fix, or
as its own ``gps_integrity`` alert when the burst was already reported.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar

import msgspec

from geofences import haversine_m
from tracker.core.fix import Fix
from tracker.core.model import Alert, DeviceKind, Event, Ping, Severity

__all__ = ["IMPLAUSIBLE", "REANCHORED", "IntegrityCheck", "IntegrityParams", "IntegrityState", "accepted"]

IMPLAUSIBLE = frozenset({"implausible_speed", "teleport", "duplicate_ts_moved", "outside_accuracy"})
"""Flags that keep a fix away from the detectors."""

REANCHORED = "reanchored"
KIND = "gps_integrity"


def accepted(flags: tuple[str, ...]) -> bool:
    """Whether the pipeline should feed a fix with these flags to the detectors."""
    return not IMPLAUSIBLE.intersection(flags)


def _default_speeds() -> Mapping[DeviceKind, float]:
    return MappingProxyType({DeviceKind.TRUCK: 200.0, DeviceKind.CONTAINER: 200.0, DeviceKind.SEAL: 200.0})


@dataclass(frozen=True, slots=True)
class IntegrityParams:
    """Thresholds of the plausibility check.

    ``max_speed_kmh`` (200 for every kind): no loaded truck does that; a margin over
    real highway speeds keeps honest fixes out of trouble. ``noise_m`` (30 m) is taken
    off every jump before the speed is computed, because at 1 Hz two honest fixes 40 m
    apart by noise alone would otherwise read as 144 km/h. ``teleport_m`` (5 km) within
    ``teleport_window_s`` (600 s) is a teleport whatever the speed: inside a port
    nothing covers that distance that quickly. ``accuracy_factor`` (3): a jump larger
    than the speed limit allows plus 3 sigma of both fixes' reported accuracy cannot be
    explained by the receiver's own error estimate. ``duplicate_tolerance_m`` (5 m):
    two fixes with one timestamp may differ by rounding, not by more.
    ``repeat_count`` (3) implausible fixes within ``repeat_window_s`` (600 s), stretched
    to ``repeat_count`` × ``interval_factor`` (1.5) learned reporting intervals for slow
    trackers, make a burst worth an alert; a teleport alone is one. The interval is the
    median of the last ``interval_history`` (8) gaps between accepted fixes, each clipped
    to ``max_interval_s`` (10 min) so one night off does not stretch the window for days.
    ``reanchor_after`` (3) consecutive, mutually consistent implausible fixes make the
    new position believed.
    """

    max_speed_kmh: Mapping[DeviceKind, float] = field(default_factory=_default_speeds)
    noise_m: float = 30.0
    teleport_m: float = 5000.0
    teleport_window_s: float = 600.0
    accuracy_factor: float = 3.0
    duplicate_tolerance_m: float = 5.0
    repeat_count: int = 3
    repeat_window_s: float = 600.0
    reanchor_after: int = 3
    interval_factor: float = 1.5
    interval_history: int = 8
    max_interval_s: float = 600.0
    max_evidence: int = 20  # flagged fixes kept per burst, so a long attack does not grow the state forever


class _Flagged(msgspec.Struct, frozen=True, array_like=True, gc=False):
    ts: datetime
    lon: float
    lat: float
    flags: tuple[str, ...]
    distance_m: float
    dt_s: float
    speed_kmh: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts.isoformat(),
            "lon": self.lon,
            "lat": self.lat,
            "flags": list(self.flags),
            "distance_m": self.distance_m,
            "dt_s": self.dt_s,
            "speed_kmh": self.speed_kmh,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> _Flagged:
        return cls(
            ts=datetime.fromisoformat(d["ts"]),
            lon=float(d["lon"]),
            lat=float(d["lat"]),
            flags=tuple(d["flags"]),
            distance_m=float(d["distance_m"]),
            dt_s=float(d["dt_s"]),
            speed_kmh=None if d["speed_kmh"] is None else float(d["speed_kmh"]),
        )


# gc=False: immutable values that hold no container able to point back at them (see DeviceState)
class IntegrityState(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """What the plausibility check remembers about one device (stored by ``tracker.core.codec``)."""

    accepted_ts: datetime | None  # last fix this check accepted, to pair ``previous`` with its accuracy
    accepted_acc: float | None
    rejected: tuple[_Flagged, ...]  # current run of consecutive, mutually consistent rejected fixes
    burst_start: datetime | None
    burst_last: datetime | None
    burst: tuple[_Flagged, ...]  # flagged fixes of the burst within the window
    burst_alerted: bool
    intervals: tuple[float, ...] = ()  # recent gaps between accepted fixes: the device's reporting rhythm

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> IntegrityState:
        """The JSON form states were stored in before ``tracker.core.codec`` (read once after an upgrade)."""
        if not d:
            return cls(None, None, (), None, None, (), False)

        def ts(key: str) -> datetime | None:
            v = d.get(key)
            return None if v is None else datetime.fromisoformat(v)

        acc = d.get("accepted_acc")
        return cls(
            accepted_ts=ts("accepted_ts"),
            accepted_acc=None if acc is None else float(acc),
            rejected=tuple(_Flagged.from_json(x) for x in d.get("rejected", ())),
            burst_start=ts("burst_start"),
            burst_last=ts("burst_last"),
            burst=tuple(_Flagged.from_json(x) for x in d.get("burst", ())),
            burst_alerted=bool(d.get("burst_alerted", False)),
            intervals=tuple(float(x) for x in d.get("intervals", ())),
        )


class IntegrityCheck:
    """Flags implausible fixes, re-anchors when the reference was the wrong one, alerts on bursts."""

    Params: ClassVar[type[IntegrityParams]] = IntegrityParams

    def __init__(self, params: IntegrityParams | None = None, kind: DeviceKind = DeviceKind.TRUCK) -> None:
        self.params = params or IntegrityParams()
        self.kind = kind

    def repeat_window(self, intervals: tuple[float, ...]) -> float:
        """Seconds within which ``repeat_count`` implausible fixes make a burst, for this device's rhythm."""
        p = self.params
        if not intervals:
            return p.repeat_window_s
        return max(p.repeat_window_s, p.repeat_count * float(statistics.median(intervals)) * p.interval_factor)

    def _vmax_ms(self, kind: DeviceKind) -> float:
        return self.params.max_speed_kmh.get(kind, 200.0) / 3.6

    def _judge(
        self,
        ping: Ping,
        ref: Fix,
        ref_acc: float | None = None,
        kind: DeviceKind | None = None,
        *,
        teleport: bool = True,
        hop_m: float | None = None,
    ) -> _Flagged:
        """Flags for ``ping`` against a reference fix (no state involved); ``hop_m``: the distance between them,
        when the caller measured it already."""
        p = self.params
        vmax = self._vmax_ms(kind or self.kind)
        d = haversine_m(ref.lon, ref.lat, ping.lon, ping.lat) if hop_m is None else hop_m
        dt = (ping.ts - ref.ts).total_seconds()
        flags: list[str] = []
        speed: float | None = None
        if dt == 0:
            if d > p.duplicate_tolerance_m:
                flags.append("duplicate_ts_moved")
        elif dt > 0:
            speed = d / dt * 3.6
            if max(0.0, d - p.noise_m) / dt > vmax:
                flags.append("implausible_speed")
            if teleport and d > p.teleport_m and dt < p.teleport_window_s:
                flags.append("teleport")
        if ping.accuracy is not None and dt >= 0:
            allowance = p.accuracy_factor * (ping.accuracy + (ref_acc or 0.0))
            if d - allowance > vmax * dt:
                flags.append("outside_accuracy")
        return _Flagged(ping.ts, ping.lon, ping.lat, tuple(flags), d, dt, speed)

    def check(
        self,
        state: IntegrityState | None,
        ping: Ping,
        previous: Fix | None,
        kind: DeviceKind | None = None,
        hop_m: float | None = None,
    ) -> tuple[IntegrityState, tuple[str, ...], list[Event]]:
        """Flags for one fix and the alert a burst of them raises.

        ``previous`` must be the last accepted fix. A fix older than it is not judged
        (the pipeline marks it late), nor is the device's first fix. ``hop_m``: the distance from ``previous`` to
        ``ping`` when the caller measured it (``haversine_m``, the pipeline's once per fix).
        """
        p = self.params
        st = _EMPTY if state is None else state
        if previous is None or ping.ts < previous.ts:
            if previous is None:
                st = _accept(st, ping)
            return st, (), []
        ref_acc = st.accepted_acc if st.accepted_ts == previous.ts else None
        verdict = self._judge(ping, previous, ref_acc, kind, hop_m=hop_m)
        if not verdict.flags:
            # ``_accept(self._learn(st, previous, ping), ping)`` in one copy of the state (every plausible fix)
            if verdict.dt_s > 0:
                intervals = (*st.intervals, min(verdict.dt_s, p.max_interval_s))[-p.interval_history :]
                return (
                    _with(st, intervals=intervals, accepted_ts=ping.ts, accepted_acc=ping.accuracy, rejected=()),
                    (),
                    [],
                )
            return _accept(st, ping), (), []

        # consecutive rejected fixes that agree with each other (speed only: a fast convoy of
        # far-apart fixes is still one consistent track) point at a wrong reference
        run: tuple[_Flagged, ...] = (verdict,)
        if st.rejected:
            last = st.rejected[-1]
            between = self._judge(ping, Fix(last.ts, last.lon, last.lat), None, kind, teleport=False)
            if between.dt_s > 0 and not between.flags:
                run = (*st.rejected, verdict)[-p.reanchor_after :]
        reanchor = len(run) >= p.reanchor_after

        events: list[Event] = []
        window = self.repeat_window(st.intervals)
        st = _burst(st, verdict, p, window)
        teleport = "teleport" in verdict.flags
        if not st.burst_alerted and (len(st.burst) >= p.repeat_count or teleport):
            events.append(self._alert(ping.device_id, st, reanchor, window, teleport=teleport))
            st = _with(st, burst_alerted=True)
        elif reanchor:
            # the burst was reported before; the move of the trusted position is a new fact for the officer
            events.append(self._alert(ping.device_id, st, reanchor, window, teleport=False, reanchor_only=True))
        if reanchor:
            # the fixes of the run agree with each other: the run's own rhythm is the device's rhythm from now on
            return _with(_accept(st, ping), rejected=()), (REANCHORED,), events
        return _with(st, rejected=run), verdict.flags, events

    def _learn(self, st: IntegrityState, previous: Fix, ping: Ping) -> IntegrityState:
        dt = (ping.ts - previous.ts).total_seconds()
        if dt <= 0:
            return st
        p = self.params
        return _with(st, intervals=(*st.intervals, min(dt, p.max_interval_s))[-p.interval_history :])

    def _alert(
        self,
        device_id: str,
        st: IntegrityState,
        reanchor: bool,
        window: float,
        *,
        teleport: bool,
        reanchor_only: bool = False,
    ) -> Alert:
        assert st.burst_start is not None
        fixes = [f.to_json() for f in st.burst]
        fastest = max((f.speed_kmh for f in st.burst if f.speed_kmh is not None), default=None)
        last = st.burst[-1]
        if reanchor_only:
            message = (
                f"{device_id} is now believed at a position it jumped to ({last.distance_m / 1000:.1f} km from the "
                f"last trusted fix) after {self.params.reanchor_after} consistent implausible fixes: check it is "
                "really there"
            )
            key = f"reanchored@{last.ts.isoformat()}"
        elif teleport:
            message = (
                f"{device_id} jumped {last.distance_m / 1000:.1f} km in {last.dt_s:.0f} s: GPS spoofing, "
                "jamming or a faulty tracker"
            )
            key = st.burst_start.isoformat()
        else:
            message = (
                f"{device_id} reported {len(fixes)} physically impossible positions within {window / 60:.0f} min: "
                "GPS spoofing, jamming or a faulty tracker"
            )
            key = st.burst_start.isoformat()
        return Alert(
            kind=KIND,
            severity=Severity.HIGH,
            device_id=device_id,
            ts=last.ts,
            message=message,
            key=key,
            evidence={
                "flagged_fixes": fixes,
                "burst_started_at": st.burst_start.isoformat(),
                "fastest_kmh": fastest,
                "reanchored": reanchor,
                "trigger": "reanchored" if reanchor_only else "teleport" if teleport else "repeat",
                "repeat_window_s": window,
                "reporting_interval_s": float(statistics.median(st.intervals)) if st.intervals else None,
                "thresholds": {
                    "max_speed_kmh": {k.value: v for k, v in self.params.max_speed_kmh.items()},
                    "noise_m": self.params.noise_m,
                    "teleport_m": self.params.teleport_m,
                    "teleport_window_s": self.params.teleport_window_s,
                    "accuracy_factor": self.params.accuracy_factor,
                    "repeat_count": self.params.repeat_count,
                    "repeat_window_s": self.params.repeat_window_s,
                    "interval_factor": self.params.interval_factor,
                    "reanchor_after": self.params.reanchor_after,
                },
            },
        )


_EMPTY = IntegrityState(None, None, (), None, None, (), False)


def _with(st: IntegrityState, **changes: Any) -> IntegrityState:
    return msgspec.structs.replace(st, **changes)


def _accept(st: IntegrityState, ping: Ping) -> IntegrityState:
    return _with(st, accepted_ts=ping.ts, accepted_acc=ping.accuracy, rejected=())


def _burst(st: IntegrityState, f: _Flagged, p: IntegrityParams, window: float) -> IntegrityState:
    """Add a flagged fix to the burst; a flagged fix after a quiet window starts a new burst."""
    if st.burst_last is None or st.burst_start is None or (f.ts - st.burst_last).total_seconds() > window:
        return _with(st, burst_start=f.ts, burst_last=f.ts, burst=(f,), burst_alerted=False)
    recent = tuple(x for x in st.burst if (f.ts - x.ts).total_seconds() <= window)
    return _with(st, burst_last=f.ts, burst=(*recent, f)[-p.max_evidence :])
