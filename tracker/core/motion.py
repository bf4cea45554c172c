"""Stationary tracking: is the device standing still, since when, and where.

Several detectors ask the same question (an unexpected stop, two vehicles stopped
side by side), so the pipeline answers it once per fix and hands the answer to all
of them as a :class:`~tracker.core.detector.Motion`.

The model is a single cluster of fixes around a centre:

* a fix within ``radius_m`` of the centre joins the cluster and moves the centre
  (running mean of every in-cluster fix, so ±20 m of noise averages out instead of
  walking the centre away the way "last fix" or a short window would);
* the stationary period starts at the FIRST fix of the cluster, so a stop's duration
  counts from when the device really stopped, even with fixes five minutes apart;
* one fix outside the radius is held as *pending* and ignored for the centre: if the
  next fix is back inside, it was a multipath outlier and the stop goes on; if the
  next fix is also outside, the device left (and, when the two outside fixes are
  close together, a new cluster starts at the first of them).

The cluster also remembers since when it has been standing *outside* every zone where
stopping is authorized (the caller says per fix whether it is in one): the first fix of
the current run of in-cluster fixes outside such zones, reset by any in-cluster fix
inside one. The stop itself starts at its first fix, possibly deep in a yard; two trucks
that waited there side by side and leave together send their first fixes from the road
just outside, still within the cluster, and measured from the start of the stop they
would look like a long roadside meeting. Measured from ``outside_since`` they have been
outside for no time at all, while a truck that drives 40 m out of the yard and stops on
the shoulder is outside from its first fix there. Fence hysteresis keeps a device parked
near an edge inside, so noise does not restart the run.

State is a handful of numbers whatever the fix rate (no list of fixes is kept), so a
1 Hz tracker parked for a day costs the same as a seal reporting every five minutes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from geofences import haversine_m, within_m
from tracker.core.detector import Motion
from tracker.core.model import Ping

__all__ = ["MotionParams", "MotionState", "current", "holds", "update"]


@dataclass(frozen=True, slots=True)
class MotionParams:
    """Thresholds of the stationary model.

    ``radius_m``: 50 m is about 2.5 sigma of a consumer GPS receiver in a container
    stack (±20 m), so a parked device does not leave its own cluster on noise, while a
    truck that drives off is out of it within seconds.

    ``min_dwell_s``: how long fixes must have stayed together before the device is
    reported stationary. At 1 Hz two consecutive fixes of a truck rolling at 30 km/h
    are 8 m apart, which alone would make every moving truck "stationary" for a few
    seconds; 20 s of togetherness filters that. It does not move the start of the
    stationary period (still the first fix), and any two fixes at least 20 s apart
    within the radius (e.g. fixes every 5 min) satisfy it at once.

    ``max_gap_s``: beyond this silence nobody can vouch the device stayed put between
    the two fixes, so the cluster restarts at the new fix instead of spanning the hole.
    """

    radius_m: float = 50.0
    min_dwell_s: float = 20.0
    max_gap_s: float = 1800.0


class _Pending(msgspec.Struct, frozen=True, array_like=True, gc=False):
    ts: datetime
    lon: float
    lat: float
    authorized: bool = False  # the pending fix lay in an authorized stop zone


class MotionState(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """The current cluster, kept as is between fixes and stored by ``tracker.core.codec``."""

    since: datetime  # first fix of the cluster
    last: datetime  # last fix that joined the cluster
    lon: float  # centre: running mean of the in-cluster fixes
    lat: float
    n: int  # in-cluster fixes so far
    radius_m: float  # largest distance of an in-cluster fix from the centre when it joined
    stationary: bool
    last_seen: datetime  # last fix processed, in the cluster or not
    pending: _Pending | None = None
    outside_since: datetime | None = None  # first fix of the current run of in-cluster fixes outside such zones

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MotionState:
        """The JSON form states were stored in before ``tracker.core.codec`` (read once after an upgrade)."""
        p = data.get("pending")
        return cls(
            since=datetime.fromisoformat(data["since"]),
            last=datetime.fromisoformat(data["last"]),
            lon=float(data["lon"]),
            lat=float(data["lat"]),
            n=int(data["n"]),
            radius_m=float(data["radius_m"]),
            stationary=bool(data["stationary"]),
            last_seen=datetime.fromisoformat(data["last_seen"]),
            pending=None
            if not p
            else _Pending(
                datetime.fromisoformat(p["ts"]), float(p["lon"]), float(p["lat"]), bool(p.get("authorized", False))
            ),
            outside_since=None if not data.get("outside_since") else datetime.fromisoformat(data["outside_since"]),
        )

    def motion(self) -> Motion:
        if not self.stationary:
            return _MOVING
        return Motion(self.since, self.lon, self.lat, self.radius_m, self.outside_since)


_MOVING = Motion(None)
"""The motion of every moving device (immutable, so one value serves every fix)."""


def _seed(ts: datetime, lon: float, lat: float, authorized: bool) -> MotionState:
    return MotionState(
        since=ts,
        last=ts,
        lon=lon,
        lat=lat,
        n=1,
        radius_m=0.0,
        stationary=False,
        last_seen=ts,
        outside_since=None if authorized else ts,
    )


def _pair(p: _Pending, ping: Ping, params: MotionParams, authorized: bool) -> MotionState:
    """A new cluster from the pending fix and the one that confirmed the departure."""
    lon = (p.lon + ping.lon) / 2
    lat = (p.lat + ping.lat) / 2
    radius = max(haversine_m(p.lon, p.lat, lon, lat), haversine_m(ping.lon, ping.lat, lon, lat))
    dwell = (ping.ts - p.ts).total_seconds()
    return MotionState(
        since=p.ts,
        last=ping.ts,
        lon=lon,
        lat=lat,
        n=2,
        radius_m=radius,
        stationary=dwell >= params.min_dwell_s,
        last_seen=ping.ts,
        outside_since=None if authorized else (ping.ts if p.authorized else p.ts),
    )


def _join(st: MotionState, ping: Ping, params: MotionParams, authorized: bool) -> MotionState:
    n = st.n + 1
    lon = st.lon + (ping.lon - st.lon) / n
    lat = st.lat + (ping.lat - st.lat) / n
    radius = max(st.radius_m, haversine_m(ping.lon, ping.lat, lon, lat))
    if n == 2:
        # the first fix's distance to the new centre counts too, or a two-fix stop would claim radius 0
        radius = max(radius, haversine_m(st.lon, st.lat, lon, lat))
    dwell = (ping.ts - st.since).total_seconds()
    return MotionState(
        since=st.since,
        last=ping.ts,
        lon=lon,
        lat=lat,
        n=n,
        radius_m=radius,
        stationary=st.stationary or dwell >= params.min_dwell_s,
        last_seen=ping.ts,
        outside_since=None if authorized else (st.outside_since or ping.ts),
    )


def update(
    state: MotionState | None, ping: Ping, params: MotionParams, authorized: bool = False
) -> tuple[MotionState, Motion]:
    """Fold one accepted fix into the cluster. Fixes not newer than the last one change nothing.

    ``authorized``: whether this fix lies in a zone where stopping is authorized (see the module docstring).
    """
    st = state
    if st is None:
        new = _seed(ping.ts, ping.lon, ping.lat, authorized)
        return new, new.motion()
    if ping.ts <= st.last_seen:
        return st, st.motion()
    if (ping.ts - st.last_seen).total_seconds() > params.max_gap_s:
        new = _seed(ping.ts, ping.lon, ping.lat, authorized)
        return new, new.motion()
    inside = within_m(ping.lon, ping.lat, st.lon, st.lat, params.radius_m)
    if inside:
        # back inside: a pending fix, if any, was an outlier and is forgotten
        new = _join(st, ping, params, authorized)
    elif st.n < 2:
        # a single fix is no stop worth protecting against outliers: the device is simply moving
        new = _seed(ping.ts, ping.lon, ping.lat, authorized)
    elif st.pending is None:
        new = MotionState(
            since=st.since,
            last=st.last,
            lon=st.lon,
            lat=st.lat,
            n=st.n,
            radius_m=st.radius_m,
            stationary=st.stationary,
            last_seen=ping.ts,
            pending=_Pending(ping.ts, ping.lon, ping.lat, authorized),
            outside_since=st.outside_since,
        )
    elif within_m(ping.lon, ping.lat, st.pending.lon, st.pending.lat, params.radius_m):
        # two outside fixes together: it left and stopped again right away (or is creeping)
        new = _pair(st.pending, ping, params, authorized)
    else:
        new = _seed(ping.ts, ping.lon, ping.lat, authorized)
    return new, new.motion()


def current(state: MotionState | None) -> Motion:
    """The motion as of the last fix, for ticks: nothing is extrapolated from the clock."""
    return _MOVING if state is None else state.motion()


def holds(motion: Motion, lon: float, lat: float) -> bool:
    """Whether a fix belongs to the stationary period ``motion`` describes.

    Every in-cluster fix lies within ``radius_m`` of the centre (radius is the running
    maximum of exactly that distance), while a pending outlier lies beyond the cluster
    radius parameter, which is never smaller. Detectors use it so that the single fix
    that may be a departure does not count as more time spent standing still.
    """
    if motion.stationary_since is None or motion.centre_lon is None or motion.centre_lat is None:
        return False
    return within_m(lon, lat, motion.centre_lon, motion.centre_lat, motion.radius_m)
