"""The per-fix and per-tick conditions of the post-clearance access window (``tracker.core.inspection``).

One method per condition (silence, overrun, sensor, zone, stop, off route, alongside), each raising at
most one alert per occurrence through :meth:`AccessRules._emit`; the detector class mixes them in.

The stop, silence and meeting tests themselves are ``tracker.core.rules``, the ones ``stops``, ``dark`` and
``rendezvous`` apply: the window only decides what counts inside it (time outside authorised zones since the
clearance, its own thresholds, a neighbour's single slow fix), so a stop, a silence or a meeting is judged by
the same arithmetic whichever detector reports it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from shapely.geometry.base import BaseGeometry

from geofences import EARTH_RADIUS_M, FenceIndex, FenceKind, distance_m
from tracker.core.access_state import (
    KIND,
    ROUTE_KINDS,
    WATCHED_EVENTS,
    ZONE_KINDS,
    AccessWindowParams,
    Clearance,
    _fence_json,
    _fences_json,
    _fix_json,
    _iso,
    _port,
    _Run,
    _secs,
)
from tracker.core.detector import FixContext
from tracker.core.fix import Fix
from tracker.core.model import Alert, Ping, Severity
from tracker.core.rendezvous import position_stands
from tracker.core.rules import (
    median_interval,
    met,
    rolling,
    silence_limit,
    silent,
    standing_since,
    stood_long_enough,
    stop_ended,
    stop_evidence,
    together_since,
)
from tracker.core.world import Position

_Route = tuple[float, float, float, float, str, BaseGeometry]  # bounds (lon/lat), fence id, geometry
_ROUTES: WeakKeyDictionary[FenceIndex, dict[frozenset[str] | None, tuple[_Route, ...]]] = WeakKeyDictionary()
_M_PER_DEG = math.radians(1.0) * EARTH_RADIUS_M
_BOUND_SLACK_M = 1.0  # far more than the rounding between a box bound and the measured distance


class AccessRules:
    """The conditions watched while a window is open; needs ``params`` from the detector."""

    params: AccessWindowParams

    def dark_limit(self, intervals: tuple[float, ...]) -> float:
        """Seconds of silence after which a cleared container's tracker counts as dark."""
        p = self.params
        return silence_limit(median_interval(intervals), p.dark_k, p.dark_s)

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
                "expected_interval_s": median_interval(run.s.intervals),
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
        if "dark" not in run.s.open and silent(silent_since, ping.ts, self.dark_limit(run.s.intervals)):
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
        moving = rolling(ping.speed, ping.lon, ping.lat, ping.ts, ctx.previous, ctx.hop_m)
        if moving:
            run.update(rolled_at=ping.ts, stood_at=None)
        elif run.s.rolled_at is not None and run.s.stood_at is None:
            run.update(stood_at=ping.ts)
        if stop_ended(run.s.stop_since, ctx.motion):
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
            run.update(stop_since=since, stop_unauth_since=None, stop_standing_from=None)
        if since is None or moving or not stop_evidence(ctx.motion, ping.lon, ping.lat):
            # a fix outside the stop's cluster may be the departure, and one at road speed is a device on the move
            # whatever the cluster says: neither is evidence of more standing still
            return
        standing = run.s.stop_standing_from
        if standing is None:
            # fixed at the stop's first fix of evidence. A stop whose cluster began with fixes at road speed stands
            # from its first fix that does not roll, as for the unexpected-stop rule: timed from the rolling fix, a
            # box slowing to a halt beside the road had stood there for the seconds it was still driving
            rolled, stood = run.s.rolled_at, run.s.stood_at
            standing = since if rolled is None or rolled < since or stood is None else stood
            run.update(stop_standing_from=standing)
        outside = ctx.motion.outside_since
        if authorized or outside is None:
            run.update(stop_unauth_since=None)
            return
        # only the time outside authorised zones counts, as for every detector asking it (the motion model's
        # ``outside_since``: the first fix of the stop's current run outside them), never before the clearance and
        # never before the stop's first fix that stands
        start = max(outside, window.ts, standing)
        if run.s.stop_unauth_since != start:
            run.update(stop_unauth_since=start)  # kept in the state as before, for the record
        if not stood_long_enough(start, ping.ts, self.params.stop_s):
            return
        duration = ping.ts - start
        m = ctx.motion
        evidence = self._base(window, "stop", ping.ts, ctx.index, ctx.fences)
        evidence.update(
            {
                "started_at": since.isoformat(),
                "unauthorized_since": start.isoformat(),
                "standing_since": standing.isoformat(),
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

    def _routes(self, index: FenceIndex) -> tuple[_Route, ...]:
        """The route fences of ``index`` with their bounding boxes, kept per index (immutable) and route ids."""
        known = _ROUTES.setdefault(index, {})
        ids = self.params.route_fence_ids
        got = known.get(ids)
        if got is None:
            got = known[ids] = tuple(
                (*f.geometry.bounds, f.id, f.geometry) for f in index.fences if self._on_route(index, f.id)
            )
        return got

    def _nearest_route(self, index: FenceIndex, lon: float, lat: float) -> dict[str, Any] | None:
        """The nearest route fence (ties: the smallest id) and its distance.

        Measuring a fence projects it around the fix, and a port has dozens of route fences: each is first bounded
        from below by its bounding box in the same plane (the projection is linear, so the fence lies inside the
        projected box), nearest box first, and measured only while that bound could still beat the best so far.
        """
        kx = _M_PER_DEG * math.cos(math.radians(lat))
        routes = self._routes(index)
        bounded = sorted(
            (math.hypot(max(minx - lon, 0.0, lon - maxx) * kx, max(miny - lat, 0.0, lat - maxy) * _M_PER_DEG), k)
            for k, (minx, miny, maxx, maxy, _id, _geom) in enumerate(routes)
        )
        best: tuple[float, str] | None = None
        for bound, k in bounded:
            if best is not None and bound > best[0] + _BOUND_SLACK_M:
                break  # this fence and every later one lie farther than the best (rounding allowed for)
            fence_id, geometry = routes[k][4], routes[k][5]
            d = distance_m(geometry, lon, lat)
            if best is None or (d, fence_id) < best:
                best = (d, fence_id)
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
        if own_since is not None and not authorized and stop_evidence(ctx.motion, ping.lon, ping.lat):
            for dist, pos in ctx.world.near(ping.lon, ping.lat, p.alongside_m, exclude=ctx.device_id):
                # one fix so far: its own reported speed says whether it stands (``still_speed_ms``)
                standing = standing_since(pos, p.still_speed_ms)
                if pos.device_id == run.s.paired_truck or standing is None:
                    continue  # moving, or standing in an authorized zone (a quay, a yard) beside the box's edge
                if pos.stationary_since is not None and not position_stands(pos):
                    continue  # its newest fix is a departure passing by, not a stand (tracker.core.rendezvous)
                if abs((ping.ts - pos.ts).total_seconds()) > p.alongside_max_age_s:
                    continue
                # both have stood outside authorized zones since the later of the two, and not before clearance
                since = together_since(own_since, standing, window.ts)
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
            if not met(since, ping.ts, p.alongside_s) or slot in run.s.open:
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
