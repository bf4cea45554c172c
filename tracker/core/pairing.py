"""Pairing of a container with the truck hauling it, and the alerts when that bond breaks.

A container that leaves its truck on the way (dropped on a road shoulder, swapped onto
another truck) or that moves with no truck known to haul it is how loaded containers get
opened after customs clearance. The pair is declared by the API (gate-in, dispatch) or
inferred when a truck and the container move together for a while.

This module holds the pairing state, the API side, inference and the unpaired-movement rule; whether a paired
container is still on its truck (the reading of the gap at one instant and the two-reading verdict) is
``tracker.core.pairing_separation``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from msgspec.structs import replace

from geofences import haversine_m
from tracker.core.detector import Detector, FixContext, TickContext, first_after, in_authorized_zone
from tracker.core.model import Alert, DeviceKind, Event, Ping, Severity
from tracker.core.motion import holds
from tracker.core.pairing_separation import SEPARATED, ContainerFix, end, measure, reread, seconds, verdict

if TYPE_CHECKING:  # the device state holds this detector's state type: a runtime import would be circular
    from tracker.core.state import DeviceState

__all__ = ["MOVING_UNPAIRED", "SEPARATED", "PairingDetector", "PairingState", "Params"]

MOVING_UNPAIRED = "container_moving_unpaired"


@dataclass(frozen=True, slots=True)
class Params:
    """Thresholds of the pairing rules."""

    infer_m: float = 25.0
    """A truck hauling the container carries it within its own length of GPS noise; passing traffic in the
    next lane is also this close, but not for ``infer_s``."""
    infer_s: float = 120.0
    """Moving together this long makes the pair (two minutes of convoy is no coincidence)."""
    separated_m: float = 100.0
    """Further than this from its truck, the container is no longer on it."""
    rejoin_m: float = 50.0
    """A separation ends only this close, so a reading oscillating around ``separated_m`` does not flap."""
    stale_s: float = 120.0
    """Fixes of the truck and the container further apart in time than this are not compared at all."""
    confirm_within_s: float = 900.0
    """A second too-far reading confirms a first one up to this much later: a parked container tracker
    reports every few minutes, so its next fix (the confirming one) can come that late."""
    moved_m: float = 50.0
    """Leaving the centre of its last stationary period by more than this is a movement (GPS noise of a
    parked tracker stays within it)."""
    moving_speed_ms: float = 2.0
    """Faster than this (m/s, reported or derived) is a movement even before ``moved_m`` is covered."""
    max_search_m: float = 1000.0
    """Cap of the radius searched for candidate trucks (the gap a lagging fix can open at road speed)."""
    stationary_trust_s: float = 900.0
    """On a tick, how long a stationary container's last fix is trusted as where it still is; parked
    trackers report every few minutes."""
    parked_stale_s: float = 600.0
    """A truck fix up to this old is still compared with a container that has stood at one spot since
    before that fix was taken (its position at the truck's instant is its stop, whatever the lag). Two
    trackers reporting every five minutes in step, the truck's fix delivered a second after the box's,
    are otherwise never within ``stale_s`` of each other, and a box dropped on a shoulder is never
    compared with the truck that left it (edge-style benchmark at Santos: three separations missed)."""
    recheck_lag_s: float = 5.0
    """A standing container's reading that found no truck fix within this of its own fix is taken again on the
    next tick, against the truck's fix if that was taken within this of the container's (see
    ``pairing_separation.reread``). Fixes are judged in event-time order, so with two trackers in step the box's
    fix is otherwise always compared with the truck's fix of one interval earlier. Within a few seconds of its
    fix a silent box cannot have gone far (the lag is counted at ``MAX_PORT_SPEED_MS``); later, its silence may
    be a pick-up, which is why there is no other timer rule here."""


# gc=False: ``suspect`` holds JSON values and the rest is immutable, never a state (see DeviceState)
class PairingState(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """What the pairing rules remember about one container (stored by ``tracker.core.codec``)."""

    truck: str | None = None
    inferred: bool = False
    paired_at: datetime | None = None
    unpaired_at: datetime | None = None
    candidate: str | None = None  # truck moving alongside, not yet for ``infer_s``
    candidate_since: datetime | None = None
    anchor: tuple[float, float] | None = None  # centre of the last stationary period
    moving_since: datetime | None = None
    history: tuple[ContainerFix, ...] = ()  # the container's own recent fixes, to compare at the truck's fix time
    separation: Alert | None = None  # open container_separated alert
    unpaired_move: Alert | None = None  # open container_moving_unpaired alert
    unverified_since: datetime | None = None  # the paired truck could not be compared (stale or unknown)
    suspect: dict[str, Any] | None = None  # a first too-far comparison, waiting for a second to confirm it
    recheck: datetime | None = None  # the container fix whose reading had no truck fix of its instant (a tick)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> PairingState:
        """The JSON form states were stored in before ``tracker.core.codec`` (read once after an upgrade)."""
        if not data:
            return cls()

        def ts(key: str) -> datetime | None:
            value = data.get(key)
            return None if value is None else datetime.fromisoformat(value)

        anchor = data.get("anchor")
        sep = data.get("separation")
        mov = data.get("unpaired_move")
        return cls(
            truck=data.get("truck"),
            inferred=bool(data.get("inferred", False)),
            paired_at=ts("paired_at"),
            unpaired_at=ts("unpaired_at"),
            candidate=data.get("candidate"),
            candidate_since=ts("candidate_since"),
            anchor=None if anchor is None else (float(anchor[0]), float(anchor[1])),
            moving_since=ts("moving_since"),
            history=tuple(ContainerFix.from_json(f) for f in data.get("history", ())),
            separation=None if sep is None else _alert_from_json(SEPARATED, sep),
            unpaired_move=None if mov is None else _alert_from_json(MOVING_UNPAIRED, mov),
            unverified_since=ts("unverified_since"),
            suspect=data.get("suspect"),
        )


_EMPTY = PairingState()
_CONTAINER = DeviceKind.CONTAINER  # (an enum member read through its class costs several global lookups: every fix)


def _alert_from_json(kind: str, data: Mapping[str, Any]) -> Alert:
    return Alert.from_state({"kind": kind, "severity": Severity.HIGH.value, **data})


class PairingDetector(Detector[PairingState | None]):
    name: ClassVar[str] = "pairing"

    def read(self, device: DeviceState) -> PairingState | None:
        return device.pairing

    def write(self, device: DeviceState, state: PairingState | None) -> None:
        device.pairing = state

    def __init__(self, params: Params | None = None) -> None:
        self.params = params or Params()

    # -- API side -------------------------------------------------------------------------------------------

    def pair(self, state: PairingState | None, truck_id: str, ts: datetime) -> PairingState:
        """Declared pairing; it overrides any inferred one."""
        st = state or _EMPTY
        return replace(
            st,
            truck=truck_id,
            inferred=False,
            paired_at=ts,
            unpaired_at=None,
            candidate=None,
            candidate_since=None,
            suspect=None,
            recheck=None,
        )

    def unpair(self, state: PairingState | None, ts: datetime) -> PairingState:
        """Declared end of the haul (delivered, dropped at a yard): the truck leaving is then expected.

        The container's next fix becomes the place a later movement is measured from, since it was just
        set down wherever the haul ended.
        """
        st = state or _EMPTY
        return replace(
            st,
            truck=None,
            inferred=False,
            paired_at=None,
            unpaired_at=ts,
            candidate=None,
            candidate_since=None,
            anchor=None,
            moving_since=None,
            suspect=None,
            recheck=None,
        )

    def on_pair(self, state: PairingState | None, truck_id: str | None, at: datetime) -> PairingState | None:
        return self.unpair(state, at) if truck_id is None else self.pair(state, truck_id, at)

    @staticmethod
    def paired_truck(state: PairingState | None) -> str | None:
        return None if state is None else state.truck

    # -- detector contract ----------------------------------------------------------------------------------

    def on_fix(
        self, state: PairingState | None, ping: Ping, ctx: FixContext
    ) -> tuple[PairingState | None, list[Event]]:
        if ctx.kind != _CONTAINER:
            return state, []
        p = self.params
        st = state or _EMPTY
        fix = ContainerFix(ping.ts, ping.lon, ping.lat, ping.speed)
        history = st.history
        if history and history[-1].ts >= ping.ts:  # kept in time order: only then is there anything to drop
            history = tuple(f for f in history if f.ts < ping.ts)
        # the first fix not older than ``stale_s`` (or none): a plain loop, as only the few oldest are ever passed over
        keep_from, n, now, stale_s = 0, len(history), ping.ts, p.stale_s
        while keep_from < n and (now - history[keep_from].ts).total_seconds() > stale_s:
            keep_from += 1

        speed = self._speed(ping, ctx)
        stationary = ctx.motion.stationary_since is not None
        anchor = st.anchor
        if stationary and ctx.motion.centre_lon is not None and ctx.motion.centre_lat is not None:
            anchor = (ctx.motion.centre_lon, ctx.motion.centre_lat)
        elif stationary or anchor is None:
            # a container first seen on the move is measured from where it was first seen
            anchor = (ping.lon, ping.lat)
        st = replace(st, history=(*history[max(0, keep_from - 1) :], fix), recheck=None, anchor=anchor)
        events: list[Event] = []
        port = ctx.params_port or next((ctx.index.get(f).port for f in sorted(ctx.fences)), None)

        # a pairing replaced or withdrawn through the API ends the separation it was about
        if st.separation is not None and st.separation.evidence.get("truck", {}).get("id") != st.truck:
            events.append(end(st.separation, ping.ts, "unpaired" if st.truck is None else "re-paired"))
            st = replace(st, separation=None)

        if st.truck is not None:
            still = stationary or speed <= p.moving_speed_ms
            st, more = self._check_separation(st, fix, speed, still, stationary, ping.ts, ctx, port)
            events.extend(more)
        if st.truck is None:
            st = self._infer(st, fix, speed, stationary, ctx)

        moving = not stationary and self._moving(st, ping, ctx)
        st, more = self._check_unpaired_move(st, fix, speed, stationary, moving, ctx, port)
        events.extend(more)
        return st, events

    def next_due(self, state: PairingState | None, ctx: TickContext, after: datetime | None) -> datetime | None:
        """Only to read a standing container's last fix again, once the truck's fix of that instant may have come
        (``recheck_lag_s`` after it); otherwise never (see ``on_tick``)."""
        return None if state is None or state.recheck is None else self._recheck_due(state.recheck)

    def on_tick(
        self, state: PairingState | None, now: datetime, ctx: TickContext
    ) -> tuple[PairingState | None, list[Event]]:
        """Separation is judged on the container's own fixes only, never on a timer.

        A silent container may have been picked up: container trackers sleep while parked and
        report minutes apart, so "its truck drove 300 m away since its last fix" is exactly what
        a normal pick-up looks like until the container speaks again (measured: most of the
        false separations of the detection benchmark came from this rule). The cost is at most
        one container reporting interval of delay; a container that stays silent is the
        going-dark detectors' business.

        The one exception is about the container's last fix, not its silence: a standing container whose
        reading had no truck fix of its instant (fixes are judged in event-time order, and the truck's, taken
        a fraction of a second later, came after it) is read again against the truck's fix once, if that fix
        was taken within ``recheck_lag_s`` of the container's (``pairing_separation.reread``). That reading
        may only raise: a truck fix timed seconds after the box's widens the reading, and must not clear a
        far reading waiting for its second.
        """
        if state is None or state.recheck is None or now < self._recheck_due(state.recheck):
            return state, []
        st = replace(state, recheck=None)
        fix = st.history[-1] if st.history else None
        truck = None if st.truck is None else ctx.world.get(st.truck)
        if fix is None or fix.ts != state.recheck or truck is None or st.separation is not None:
            return st, []
        gap = reread(self.params, st.history, truck, ctx.motion)
        if gap is None or gap.distance_m - gap.slack_m <= self.params.separated_m:
            return st, []
        port = next((ctx.index.get(f).port for f in sorted(ctx.fences) if f in ctx.index), None)
        authorized = in_authorized_zone(ctx.index, ctx.fences)
        return verdict(self.params, ctx.device_id, st, fix, gap, truck, True, authorized, max(fix.ts, truck.ts), port)

    def _recheck_due(self, fix_ts: datetime) -> datetime:
        return first_after(fix_ts, self.params.recheck_lag_s)

    # -- rules ----------------------------------------------------------------------------------------------

    def _moving(self, st: PairingState, ping: Ping, ctx: FixContext) -> bool:
        """Away from where it stood, or fast by its own Doppler speed, or by a hop no GPS noise makes; a speed
        derived from two jittery fixes of a parked tracker easily exceeds 2 m/s and proves nothing."""
        p = self.params
        if st.anchor is not None and haversine_m(st.anchor[0], st.anchor[1], ping.lon, ping.lat) > p.moved_m:
            return True
        if ping.speed is not None:
            return ping.speed > p.moving_speed_ms
        prev = ctx.previous
        if prev is None or ctx.hop_from(prev, ping) <= p.moved_m:
            return False
        return self._speed(ping, ctx) > p.moving_speed_ms

    def _speed(self, ping: Ping, ctx: FixContext) -> float:
        if ping.speed is not None:
            return max(0.0, ping.speed)
        prev = ctx.previous
        if prev is None:
            return 0.0
        dt = seconds(ping.ts, prev.ts)
        return 0.0 if dt <= 0 else ctx.hop_from(prev, ping) / dt

    def _check_separation(
        self,
        st: PairingState,
        fix: ContainerFix,
        speed: float,
        still: bool,
        stationary: bool,
        at: datetime,
        ctx: FixContext,
        port: str | None,
    ) -> tuple[PairingState, list[Event]]:
        assert st.truck is not None
        truck = ctx.world.get(st.truck)
        m = ctx.motion
        centre = (
            None if m.centre_lon is None or m.centre_lat is None or not stationary else (m.centre_lon, m.centre_lat)
        )
        at_stop = centre is not None and holds(m, fix.lon, fix.lat)
        stood_since = m.stationary_since if at_stop else None
        # a fix outside the stop (held as an outlier or the departure) is compared by the stop's centre, which rests on
        # the fixes before it: the reading shares the previous fix, so a centre that rests on a multipath jump cannot
        # confirm the reading that jump made (clear-style benchmark, Santos seed 1: two readings of one such centre)
        rests_on = None if at_stop or ctx.previous is None else (ctx.previous.ts,)
        gap = (
            None
            if truck is None
            else measure(
                self.params,
                st.history,
                fix,
                speed,
                truck,
                container_stationary=stationary,
                centre=centre,
                stood_since=stood_since,
                centre_rests_on=rests_on,
            )
        )
        # judged before the truck's fix of this instant came (or with none): a tick reads it again (``on_tick``)
        fresh = truck is not None and abs(seconds(fix.ts, truck.ts)) <= self.params.recheck_lag_s
        if not fresh and stationary and st.separation is None:
            st = replace(st, recheck=fix.ts)
        if truck is None or gap is None:
            # nothing to compare with: no verdict either way, but remember since when it is unverified
            return replace(st, unverified_since=st.unverified_since or at), []
        return verdict(self.params, ctx.device_id, st, fix, gap, truck, still, ctx.authorized_stop(), at, port)

    def _infer(
        self, st: PairingState, fix: ContainerFix, speed: float, stationary: bool, ctx: FixContext
    ) -> PairingState:
        p = self.params
        best: tuple[float, str] | None = None
        if not stationary:
            search = self._search_m(speed)
            for _, pos in ctx.world.near(fix.lon, fix.lat, search, exclude=ctx.device_id, kind=DeviceKind.TRUCK):
                if pos.stationary_since is not None:
                    continue
                gap = measure(self.params, st.history, fix, speed, pos, container_stationary=False)
                if gap is None or gap.distance_m + gap.slack_m > p.infer_m:
                    continue
                if best is None or (gap.distance_m, pos.device_id) < best:
                    best = (gap.distance_m, pos.device_id)
        if best is None:
            if st.candidate is None and st.candidate_since is None:
                return st  # (nothing to forget, as at most fixes: no copy)
            return replace(st, candidate=None, candidate_since=None)
        truck_id = best[1]
        if st.candidate != truck_id or st.candidate_since is None:
            return replace(st, candidate=truck_id, candidate_since=fix.ts)
        if seconds(fix.ts, st.candidate_since) >= p.infer_s:
            return replace(st, truck=truck_id, inferred=True, paired_at=fix.ts, candidate=None, candidate_since=None)
        return st

    def _search_m(self, speed: float) -> float:
        return min(self.params.infer_m + speed * self.params.stale_s, self.params.max_search_m)

    def _truck_alongside(self, st: PairingState, fix: ContainerFix, speed: float, ctx: FixContext) -> bool:
        """Whether some truck may be within ``infer_m`` (uncertainty counted in its favour).

        A parked truck is taken to be still where it stands: a container rolling away from it is leaving it,
        which is what this rule is about."""
        search = self._search_m(speed)
        for _, pos in ctx.world.near(fix.lon, fix.lat, search, exclude=ctx.device_id, kind=DeviceKind.TRUCK):
            gap = measure(self.params, st.history, fix, speed, pos, container_stationary=True)
            if gap is not None and gap.distance_m - gap.slack_m <= self.params.infer_m:
                return True
        return False

    def _check_unpaired_move(
        self,
        st: PairingState,
        fix: ContainerFix,
        speed: float,
        stationary: bool,
        moving: bool,
        ctx: FixContext,
        port: str | None,
    ) -> tuple[PairingState, list[Event]]:
        p = self.params
        if stationary:
            events: list[Event] = []
            if st.unpaired_move is not None:
                events.append(end(st.unpaired_move, fix.ts, "stopped", where=fix))
            elif st.moving_since is None:
                return st, events  # (nothing to forget, as at most standing fixes: no copy)
            return replace(st, moving_since=None, unpaired_move=None), events
        if not moving:
            return st, []
        moved = None if st.anchor is None else haversine_m(st.anchor[0], st.anchor[1], fix.lon, fix.lat)
        st = replace(st, moving_since=st.moving_since or fix.ts)
        if st.truck is not None:
            if st.unpaired_move is not None:
                return replace(st, unpaired_move=None), [end(st.unpaired_move, fix.ts, "paired", where=fix)]
            return st, []
        if st.unpaired_move is not None or self._truck_alongside(st, fix, speed, ctx):
            return st, []
        if not ctx.fences:
            # outside every fence of the port the box is on a public road, delivered: not ours to watch
            return st, []
        assert st.moving_since is not None
        alert = Alert(
            kind=MOVING_UNPAIRED,
            severity=Severity.HIGH,
            device_id=ctx.device_id,
            ts=fix.ts,
            message=f"container is moving ({speed:.1f} m/s) with no truck paired or alongside",
            port=port,
            evidence={
                "container_fix": fix.evidence(),
                "previous_fix": None
                if ctx.previous is None
                else {"ts": ctx.previous.ts.isoformat(), "lon": ctx.previous.lon, "lat": ctx.previous.lat},
                "stationary_centre": None if st.anchor is None else {"lon": st.anchor[0], "lat": st.anchor[1]},
                "moved_m": None if moved is None else round(moved, 1),
                "speed_ms": round(speed, 2),
                "moving_since": st.moving_since.isoformat(),
                "unpaired_at": None if st.unpaired_at is None else st.unpaired_at.isoformat(),
                "fences": sorted(ctx.fences),
                "thresholds": {"moved_m": p.moved_m, "moving_speed_ms": p.moving_speed_ms, "infer_m": p.infer_m},
            },
            key=st.moving_since.isoformat(),
        )
        return replace(st, unpaired_move=alert), [alert]
