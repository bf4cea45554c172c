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

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from msgspec.structs import replace

from geofences import FenceIndex, FenceKind
from tracker.core.access_rules import AccessRules
from tracker.core.access_state import (
    _EMPTY,
    _INSTANT,
    KIND,
    MAX_RECALLS,
    ROUTE_KINDS,
    WATCHED_EVENTS,
    ZONE_KINDS,
    AccessState,
    AccessWindowParams,
    Clearance,
    Params,
    _dt,
    _fence_json,
    _fences_json,
    _fix_json,
    _iso,
    _port,
    _Run,
    _seal,
    _secs,
    _stored,
)
from tracker.core.detector import Detector, FixContext, TickContext
from tracker.core.fix import Fix
from tracker.core.model import Alert, DeviceKind, Event, Inspection, InspectionResult, Ping, Severity
from tracker.core.rules import learn_interval, silence_due, silent

if TYPE_CHECKING:  # the device state holds this detector's state type: a runtime import would be circular
    from tracker.core.state import DeviceState

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


_CONTAINER, _QUAY = DeviceKind.CONTAINER, FenceKind.QUAY
# (enum members read through their class cost several times a global's lookup: asked on every fix and due time)


class AccessWindowDetector(AccessRules, Detector[AccessState | None]):
    """Watches a container from customs clearance until it reaches the quay or is loaded."""

    name: ClassVar[str] = "post_inspection_access"

    def read(self, device: DeviceState) -> AccessState | None:
        return device.post_inspection_access

    def write(self, device: DeviceState, state: AccessState | None) -> None:
        device.post_inspection_access = state

    def __init__(self, params: AccessWindowParams | None = None) -> None:
        self.params = params or AccessWindowParams()

    # ---------------------------------------------------------------- pairing

    def pair(self, state: AccessState | None, truck_id: str | None) -> AccessState | None:
        """Record the truck hauling this container (None to unpair): it is expected alongside, always."""
        return _stored(replace(state or _EMPTY, paired_truck=truck_id))

    def on_pair(self, state: AccessState | None, truck_id: str | None, at: datetime) -> AccessState | None:
        return self.pair(state, truck_id)

    # ---------------------------------------------------------------- customs

    def on_inspection(
        self, state: AccessState | None, inspection: Inspection, ctx: TickContext
    ) -> tuple[AccessState | None, list[Event]]:
        if ctx.kind is not _CONTAINER:
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
        if ctx.kind is not _CONTAINER:
            return state, []
        st = state or _EMPTY
        # the rhythm is learned on every fix, before and between windows too, so it is known at clearance;
        # this fix's own gap is judged against the rhythm before it and only then learned
        learned = self._learn(st.intervals, ctx.previous, ping)
        window = st.window
        if window is None or ping.ts < window.ts:
            # no window open (most fixes of most boxes): ``_fix`` would only note whether the box stands in an
            # authorised zone, done here in one step with the rhythm learned
            authorized = ctx.authorized_stop()
            if st.authorized != authorized or learned != st.intervals:
                st = replace(st, authorized=authorized, intervals=learned)
            return _stored(st), []
        run = _Run(st, ctx.device_id)
        self._fix(run, ping, ctx)
        if learned != run.s.intervals:
            run.update(intervals=learned)
        return _stored(run.s), run.events

    def on_sensor(
        self, state: AccessState | None, ping: Ping, ctx: FixContext
    ) -> tuple[AccessState | None, list[Event]]:
        """Sensor events of a fix the integrity check rejected: the door opened even if the position is implausible.

        The pipeline hands over such a fix placed at the last accepted one (``ctx`` holds its fences). Only the
        sensor rule runs: nothing about stops, zones, meetings or the reporting rhythm is learned from it.
        """
        if ctx.kind is not _CONTAINER or state is None:
            return state, []
        run = _Run(state, ctx.device_id)
        window = run.s.window
        if window is None or ping.ts < window.ts:
            return state, []
        self._sensor(run, window, ping, ctx)
        if not run.events:
            return state, []
        return _stored(run.s), run.events

    def _learn(self, intervals: tuple[float, ...], previous: Fix | None, ping: Ping) -> tuple[float, ...]:
        if previous is None or ping.ts <= previous.ts:
            return intervals
        p = self.params
        # learned in milliseconds (the figure the evidence quotes), never clipped from below: the window has no floor
        gap = _secs(ping.ts - previous.ts)
        return learn_interval(intervals, gap, floor_s=0.0, ceiling_s=p.dark_max_interval_s, history=p.dark_history)

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
        quays = sorted(f for f in ctx.fences if ctx.index.get(f).kind is _QUAY)
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
        if ctx.kind is not _CONTAINER or state is None or state.window is None:
            return None
        s = state
        window: Clearance = state.window
        due: list[datetime] = []
        silent_since = window.ts if ctx.last is None or ctx.last.ts < window.ts else ctx.last.ts
        keys = s.keys  # (no alert raised in the window yet, as in most: no key to format and look for)
        if "dark" not in s.open and (not keys or self._key(window, "dark", silent_since) not in keys):
            due.append(silence_due(silent_since, self.dark_limit(s.intervals)))
        if not keys or self._key(window, "overrun", window.ts) not in keys:
            due.append(window.ts + timedelta(seconds=self.params.max_window_s) + _INSTANT)
        return min(due, default=None)

    def on_tick(
        self, state: AccessState | None, now: datetime, ctx: TickContext
    ) -> tuple[AccessState | None, list[Event]]:
        if ctx.kind is not _CONTAINER:
            return state, []
        run = _Run(state or _EMPTY, ctx.device_id)
        window = run.s.window
        if window is None or now < window.ts:
            return state, []
        silent_since = window.ts if ctx.last is None or ctx.last.ts < window.ts else ctx.last.ts
        if silent(silent_since, now, self.dark_limit(run.s.intervals)):
            self._dark(run, window, silent_since, ctx.last, ctx.index, ctx.fences)
        self._overrun(run, window, now, ctx.index, ctx.fences)
        if not run.events:
            return state, []
        return _stored(run.s), run.events
