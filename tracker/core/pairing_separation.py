"""Whether a paired container is still on its truck: one reading of the gap between them, and the verdict on two.

Positions of two devices are never compared at different instants: a truck's latest fix is
often tens of seconds older than the container's, and at road speed that alone is a
hundred metres. The container keeps its own recent fixes and is placed where it was when
the truck's fix was taken (interpolated; extrapolated a little when the truck's fix is the
newer one); only when that is impossible is the gap widened by the distance the container
could have covered meanwhile.

A separation is raised only when two consecutive comparisons, sharing no fix of either device,
both find the container too far from its truck: a single multipath outlier (a fix hundreds of metres off, typical
right after a box is lifted among stacks) must not page anyone. The price is one reporting interval
of the slower device before a real separation is reported.

Pure functions over the pairing state (``tracker.core.pairing``, which calls them from its hooks) and the world
view's positions: no state of their own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec.structs import replace

from geofences import haversine_m
from tracker.core.detector import Motion
from tracker.core.model import Alert, AlertUpdate, Event, Severity
from tracker.core.motion import holds
from tracker.core.world import Position

if TYPE_CHECKING:  # the pairing module holds the state and thresholds and calls these rules: importing it is circular
    from tracker.core.pairing import PairingState, Params

SEPARATED = "container_separated"
MAX_PORT_SPEED_MS = 25.0
"""90 km/h: faster than anything drives inside a port, the bound on how far a box may have been from where it
was next seen standing, a few seconds earlier."""


class ContainerFix(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    ts: datetime
    lon: float
    lat: float
    speed: float | None = None  # m/s as the tracker reported it

    @classmethod
    def from_json(cls, data: list[Any]) -> ContainerFix:
        """The JSON form states were stored in before ``tracker.core.codec``."""
        speed = data[3] if len(data) > 3 else None
        return cls(
            datetime.fromisoformat(data[0]), float(data[1]), float(data[2]), None if speed is None else float(speed)
        )

    def evidence(self) -> dict[str, Any]:
        return {"ts": self.ts.isoformat(), "lon": self.lon, "lat": self.lat}


def seconds(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()


def speed_bound(a: ContainerFix, b: ContainerFix, span: float) -> float:
    """The fastest the container is known to have gone between two of its fixes: the chord, or what it reported."""
    chord = haversine_m(a.lon, a.lat, b.lon, b.lat) / span if span > 0 else 0.0
    return max(chord, a.speed or 0.0, b.speed or 0.0)


def position_at(
    history: tuple[ContainerFix, ...], ts: datetime, limit_s: float
) -> tuple[float, float, float, tuple[datetime, ...]] | None:
    """Where the container was at ``ts``, and how far off that may be: interpolated between its fixes, or
    extrapolated from the last two when ``ts`` is newer (by at most ``limit_s``); None when its fixes do not
    reach back that far. The last item names the fix the estimate rests on most (the nearer in time).

    A straight line between two fixes five minutes apart is a poor guess for a box that stood in a gate
    queue and then drove off: placed on that line it lies hundreds of metres from the truck it rides on.
    The uncertainty is the distance it could have covered, at the fastest speed it showed (chord or
    reported), from the nearer of the two fixes; a box that stood still has next to none.
    """
    if not history:
        return None
    last = history[-1]
    if ts >= last.ts:
        ahead = seconds(ts, last.ts)
        if ahead == 0:
            return last.lon, last.lat, 0.0, (last.ts,)
        if ahead > limit_s or len(history) < 2:
            return None
        prev = history[-2]
        span = seconds(last.ts, prev.ts)
        if span <= 0:
            return None
        k = ahead / span
        slack = speed_bound(prev, last, span) * ahead
        return last.lon + (last.lon - prev.lon) * k, last.lat + (last.lat - prev.lat) * k, slack, (last.ts,)
    for older, newer in zip(history[-2::-1], history[::-1], strict=False):
        if older.ts <= ts <= newer.ts:
            span = seconds(newer.ts, older.ts)
            k = 0.0 if span <= 0 else seconds(ts, older.ts) / span
            slack = speed_bound(older, newer, span) * min(seconds(ts, older.ts), seconds(newer.ts, ts))
            lon = older.lon + (newer.lon - older.lon) * k
            nearer = older if k < 0.5 else newer
            return lon, older.lat + (newer.lat - older.lat) * k, slack, (nearer.ts,)
    return None


def parked_at_its_fix(truck: Position, p: Params) -> bool:
    """Whether the truck's stop centre is where the truck is: stationary, not reporting road speed, and its last
    fix within ``moved_m`` of that centre.

    A stop lasts until a second fix outside it: the truck's first fix after it drove off (to the inspection area
    next door, a minute's drive) is held as a possible outlier, so the stop, and its centre, still stand back at
    the gate queue. Comparing a box parked at the new place with that centre finds them hundreds of metres apart
    while they stand side by side.
    """
    if truck.stationary_since is None:
        return False
    if truck.speed is not None and truck.speed > p.moving_speed_ms:
        return False
    return truck.centre is None or haversine_m(truck.lon, truck.lat, *truck.centre) <= p.moved_m


@dataclass(frozen=True, slots=True)
class Gap:
    """Distance between container and truck at the instant of the truck's fix, with its uncertainty."""

    distance_m: float
    slack_m: float  # how far off the distance may be because the instants could not be matched
    lag_s: float  # container fix time minus truck fix time
    container_lon: float
    container_lat: float
    container_fixes: tuple[datetime, ...] = ()  # the container's fix the placement rests on most


def measure(
    p: Params,
    history: tuple[ContainerFix, ...],
    fix: ContainerFix,
    speed: float,
    truck: Position,
    *,
    container_stationary: bool,
    centre: tuple[float, float] | None = None,
    stood_since: datetime | None = None,
    centre_rests_on: tuple[datetime, ...] | None = None,
) -> Gap | None:
    """How far the container is from ``truck``, both placed at the instant of the truck's fix.

    Comparing the container as it is now with a parked truck's last fix is right only while the container
    stands still too: a container on the move means the truck may have driven off with it since that fix
    (a parked truck's last fix can be a minute old), and the two would look apart while riding together.
    Two parked devices are compared by the centres of their stops (``centre``: the container's), which a
    multipath fix thrown 200 m off among the stacks does not move.

    ``centre_rests_on``: the container fixes the centre stands for when ``fix`` lies outside the stop.

    ``stood_since``: the container has stood at ``centre`` from then up to ``fix`` (this fix belongs to that
    stop). A truck fix taken in that span finds the container at its centre at the truck's own instant, so it
    is compared up to ``parked_stale_s`` old, with no uncertainty from the lag. A truck fix taken shortly before
    the stop's first fix (two trackers in step, a fraction of a second apart) finds the box within
    ``MAX_PORT_SPEED_MS`` times that fraction of its centre: that is the reading's uncertainty.
    """
    lag = seconds(fix.ts, truck.ts)
    early = 0.0 if stood_since is None else max(0.0, seconds(stood_since, truck.ts))
    covered = stood_since is not None and centre is not None and early <= p.stale_s and 0 <= lag <= p.parked_stale_s
    if abs(lag) > p.stale_s and not covered:
        return None
    if container_stationary and parked_at_its_fix(truck, p):
        # both parked: each is where its stop is
        c_lon, c_lat = centre or (fix.lon, fix.lat)
        t_lon, t_lat = truck.centre or (truck.lon, truck.lat)
        used = centre_rests_on if centre is not None and centre_rests_on is not None else (fix.ts,)
        return Gap(haversine_m(c_lon, c_lat, t_lon, t_lat), 0.0, lag, c_lon, c_lat, used)
    if covered and centre is not None:
        # the box stood at its stop throughout: that is where it was when the truck's fix was taken
        slack = early * MAX_PORT_SPEED_MS
        return Gap(haversine_m(centre[0], centre[1], truck.lon, truck.lat), slack, lag, *centre, (fix.ts,))
    at = position_at(history, truck.ts, p.stale_s)
    if at is not None:
        lon, lat, slack, used = at
        return Gap(haversine_m(lon, lat, truck.lon, truck.lat), slack, lag, lon, lat, used)
    distance = haversine_m(fix.lon, fix.lat, truck.lon, truck.lat)
    return Gap(distance, speed * abs(lag), lag, fix.lon, fix.lat, (fix.ts,))


def reread(p: Params, history: tuple[ContainerFix, ...], truck: Position, motion: Motion) -> Gap | None:
    """The reading of a standing container's last fix against a truck fix taken within ``recheck_lag_s`` of it,
    made on a tick because the truck's fix came after the container's had been judged; None when there is none.

    The container is placed as its fix's own reading would have placed it (its stop, by the stop's centre), and
    the lag between the two fixes counts in full as distance it may have covered at ``MAX_PORT_SPEED_MS``: a
    fix 41 ms later leaves a metre of doubt, one 5 s later 125 m. Which fixes it rests on is recorded as for any
    reading, so it confirms only a first reading it shares no fix with.
    """
    if not history or motion.stationary_since is None:
        return None
    fix = history[-1]
    lag = seconds(fix.ts, truck.ts)
    if abs(lag) > p.recheck_lag_s:
        return None
    centre = None if motion.centre_lon is None or motion.centre_lat is None else (motion.centre_lon, motion.centre_lat)
    at_stop = centre is not None and holds(motion, fix.lon, fix.lat)
    previous = history[-2] if len(history) > 1 else None
    gap = measure(
        p,
        history,
        fix,
        fix.speed or 0.0,
        truck,
        container_stationary=True,
        centre=centre,
        stood_since=motion.stationary_since if at_stop else None,
        centre_rests_on=None if at_stop or previous is None else (previous.ts,),
    )
    if gap is None:
        return None
    return dataclasses.replace(gap, slack_m=max(gap.slack_m, abs(lag) * MAX_PORT_SPEED_MS))


def verdict(
    p: Params,
    device_id: str,
    st: PairingState,
    fix: ContainerFix,
    gap: Gap,
    truck: Position,
    still: bool,
    authorized: bool,
    at: datetime,
    port: str | None,
) -> tuple[PairingState, list[Event]]:
    unverified = st.unverified_since
    st = replace(st, unverified_since=None)
    if st.separation is not None:
        if gap.distance_m + gap.slack_m <= p.rejoin_m:
            update = end(st.separation, at, "rejoined", gap=gap, truck=truck)
            return replace(st, separation=None), [update]
        return st, []
    if gap.distance_m - gap.slack_m <= p.separated_m:
        return replace(st, suspect=None), []
    if st.inferred and still and authorized:
        # an inferred haul ends where containers are dropped: no one declared it, no one undeclares it
        # and where it is dropped is where a later movement is measured from
        return replace(
            st,
            truck=None,
            inferred=False,
            paired_at=None,
            unpaired_at=at,
            anchor=(fix.lon, fix.lat),
            moving_since=None,
            suspect=None,
        ), []
    assert st.truck is not None
    seen = [fix.ts.isoformat(), truck.ts.isoformat(), [t.isoformat() for t in gap.container_fixes]]
    first = st.suspect
    if (
        first is None
        or first.get("truck") != st.truck
        or seconds(at, datetime.fromisoformat(first["at"])) > p.confirm_within_s
    ):
        # a first reading: an outlier of either tracker looks just like this, so wait for a second one
        # (the next reading: a close one in between clears this; two outliers an hour apart do not
        # confirm each other)
        suspect = {
            "truck": st.truck,
            "fixes": seen,
            "at": at.isoformat(),
            "distance_m": round(gap.distance_m, 1),
            "container_fix": fix.evidence(),
            "unverified_since": None if unverified is None else unverified.isoformat(),
        }
        return replace(st, suspect=suspect), []
    fixes = first.get("fixes") or [None, None, []]
    used_before = set(fixes[2] if len(fixes) > 2 else [fixes[0]])
    if fixes[0] == seen[0] or fixes[1] == seen[1] or used_before & set(seen[2]):
        # a fix of either device shared with the first reading makes this no independent second one: a truck
        # reporting once a minute is compared with two container fixes in a row, and one multipath jump of
        # either tracker would otherwise confirm itself (a box placed between two fixes rests on the nearer).
        # Wait for both trackers to have spoken again.
        return replace(st, unverified_since=unverified), []
    if unverified is None and first.get("unverified_since") is not None:
        unverified = datetime.fromisoformat(first["unverified_since"])
    alert = Alert(
        kind=SEPARATED,
        severity=Severity.HIGH,
        device_id=device_id,
        ts=at,
        message=(
            f"container is {gap.distance_m:.0f} m from its {'inferred' if st.inferred else 'declared'} truck {st.truck}"
        ),
        port=port,
        evidence={
            "container_fix": fix.evidence(),
            "container_at_truck_fix": {"lon": gap.container_lon, "lat": gap.container_lat},
            "truck": {
                "id": truck.device_id,
                "fix": {"ts": truck.ts.isoformat(), "lon": truck.lon, "lat": truck.lat},
            },
            "distance_m": round(gap.distance_m, 1),
            "uncertainty_m": round(gap.slack_m, 1),
            "lag_s": gap.lag_s,
            "pairing": {
                "inferred": st.inferred,
                "since": None if st.paired_at is None else st.paired_at.isoformat(),
            },
            "container_still": still,
            "first_reading": {k: first[k] for k in ("at", "distance_m", "container_fix")},
            "unverified_since": None if unverified is None else unverified.isoformat(),
            "thresholds": {"separated_m": p.separated_m, "rejoin_m": p.rejoin_m, "stale_s": p.stale_s},
        },
        key=f"{st.truck}@{at.isoformat()}",
    )
    return replace(st, separation=alert, suspect=None), [alert]


def end(
    alert: Alert,
    at: datetime,
    reason: str,
    *,
    gap: Gap | None = None,
    truck: Position | None = None,
    where: ContainerFix | None = None,
) -> AlertUpdate:
    fields: dict[str, Any] = {
        "ended_at": at.isoformat(),
        "duration_s": round(seconds(at, alert.ts), 1),
        "reason": reason,
    }
    if gap is not None:
        fields["distance_m"] = round(gap.distance_m, 1)
    if truck is not None:
        fields["truck_fix"] = {"ts": truck.ts.isoformat(), "lon": truck.lon, "lat": truck.lat}
    if where is not None:
        fields["container_fix"] = where.evidence()
    return AlertUpdate(alert=alert, ts=at, fields=fields, closes=True)
