"""The contract every detector module follows.

A detector is a stateless object holding its parameters plus pure functions over its
own typed state (an immutable msgspec Struct, or None when it has nothing to remember);
it subclasses :class:`Detector`, which declares every hook the pipeline calls, with
no-op defaults, and the detector's slot in the device state.
The state lives in memory between fixes exactly as the detector returned it; only the
store encodes it, once per batch, with ``tracker.core.codec``. The pipeline
computes what several detectors need exactly once per fix (fence membership,
motion, the world view) and passes it in a context; detectors never see the clock,
the database or the broker. Time comes from the fix, or from ``now`` on a tick.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar
from weakref import WeakKeyDictionary

import msgspec

from geofences import FenceIndex, FenceKind, haversine_m
from tracker.core.fix import Fix
from tracker.core.model import DeviceKind, Event, Inspection, Ping
from tracker.core.world import World

if TYPE_CHECKING:  # the device state holds every detector's state type: a runtime import would be circular
    from tracker.core.state import DeviceState

S = TypeVar("S")

AUTHORIZED_STOP_KINDS = frozenset(
    {
        FenceKind.TERMINAL,
        FenceKind.GATE,
        FenceKind.AUTHORIZED_PARKING,
        FenceKind.INSPECTION_AREA,
        FenceKind.CUSTOMS_YARD,
    }
)
"""Zones where a truck or container may stand still without anyone asking why.

Customs-bonded yards are included: containers wait there for clearance under customs
supervision, and in Santos nearly every one lies inside a leased terminal anyway."""


_AUTHORIZED: WeakKeyDictionary[FenceIndex, dict[frozenset[str], bool]] = WeakKeyDictionary()
_LAST_AUTHORIZED: tuple[FenceIndex | None, dict[frozenset[str], bool]] = (None, {})


def in_authorized_zone(index: FenceIndex, fences: frozenset[str]) -> bool:
    """Whether any of ``fences`` is a zone of :data:`AUTHORIZED_STOP_KINDS` (ids no longer indexed are ignored).

    Asked several times per fix (motion, world view, most detectors) about a few hundred distinct fence
    sets: the answer is remembered per index, which is immutable.
    """
    global _LAST_AUTHORIZED
    last_index, known = _LAST_AUTHORIZED
    if last_index is not index:
        known = _AUTHORIZED.get(index) or _AUTHORIZED.setdefault(index, {})
        _LAST_AUTHORIZED = (index, known)
    found = known.get(fences)
    if found is None:
        found = known[fences] = any(index.get(f).kind in AUTHORIZED_STOP_KINDS for f in fences if f in index)
    return found


class Motion(msgspec.Struct, frozen=True, gc=False):
    """Whether the device is standing still, computed once per fix by ``tracker.core.motion``.

    This and the two contexts are built for every fix and due time: msgspec Structs, which build several
    times faster than frozen dataclasses and stay out of the cyclic collector (they hold no cycle)."""

    stationary_since: datetime | None  # first fix of the current stationary period; None while moving
    centre_lon: float | None = None
    centre_lat: float | None = None
    radius_m: float = 0.0  # how far the fixes of this stationary period spread
    outside_since: datetime | None = None  # standing outside every authorized stop zone since (tracker.core.motion)


class FixContext(msgspec.Struct, frozen=True, gc=False):
    """Everything a detector may read for one fix besides its own state."""

    device_id: str
    kind: DeviceKind
    previous: Fix | None  # last accepted fix before this one
    fences_before: frozenset[str]
    fences: frozenset[str]  # membership after this fix (hysteresis applied)
    motion: Motion
    index: FenceIndex
    world: World  # other devices' latest positions (this device not yet updated)
    params_port: str | None = None  # port of the fences the device is in, when any
    paired_with: str | None = None  # the truck this container rides on (or the container this truck hauls)
    hop_m: float | None = None  # haversine_m from ``previous`` to this fix, when the pipeline worked it out

    def authorized_stop(self) -> bool:
        return in_authorized_zone(self.index, self.fences)

    def hop_from(self, before: Fix, ping: Ping) -> float:
        """``haversine_m(before.lon, before.lat, ping.lon, ping.lat)`` for ``ping``, the fix of this context.

        Integrity, motion, going dark, trips and pairing all measure the hop from the last accepted fix: the
        pipeline measures it once (``hop_m``) and a detector whose own remembered fix lies where ``previous``
        does gets that very value; any other start point is measured afresh."""
        hop = self.hop_m
        prev = self.previous
        if hop is not None and prev is not None and before.lon == prev.lon and before.lat == prev.lat:
            return hop
        return haversine_m(before.lon, before.lat, ping.lon, ping.lat)


class TickContext(msgspec.Struct, frozen=True, gc=False):
    """A timer tick for one device: lets timeouts fire without a new fix."""

    device_id: str
    kind: DeviceKind
    last: Fix | None
    fences: frozenset[str]
    motion: Motion
    index: FenceIndex
    world: World


class Detector(ABC, Generic[S]):
    """One declared step of the pipeline: a detector with its typed state ``S`` and its hooks.

    The pipeline walks a tuple of these and calls every hook of every step; nothing is found by name or by
    type. A hook a detector has no rule for keeps its explicit default here (the state unchanged, no event),
    so adding a hook to the contract means adding its default, not a lookup in the pipeline.

    ``read`` / ``write`` are the detector's slot in :class:`~tracker.core.state.DeviceState`: a field of its
    own, typed ``S`` (``None`` until it has something to remember). ``write`` is only ever called on a
    copy the pipeline is filling (see ``tracker.core.state``).
    """

    name: ClassVar[str]
    """The alert kind the detector raises and its section in the thresholds (``tracker.core.params``)."""

    @abstractmethod
    def read(self, device: DeviceState) -> S: ...

    @abstractmethod
    def write(self, device: DeviceState, state: S) -> None: ...

    @abstractmethod
    def on_fix(self, state: S, ping: Ping, ctx: FixContext) -> tuple[S, list[Event]]: ...

    def on_tick(self, state: S, now: datetime, ctx: TickContext) -> tuple[S, list[Event]]:
        """A timer tick without a fix; the default has no timer rule."""
        return state, []

    def next_due(self, state: S, ctx: TickContext, after: datetime | None) -> datetime | None:
        """When ``on_tick`` could next change anything (the contract is :class:`Timed`'s).

        The default is never late: the next tick, as every device was ticked before due times existed. A
        detector with a timer rule says better; one without (the default ``on_tick``) says None.
        """
        return None if ctx.last is None else next_instant(after, ctx.last.ts)

    def on_inspection(self, state: S, inspection: Inspection, ctx: TickContext) -> tuple[S, list[Event]]:
        """A customs decision about the device's container; the default ignores it."""
        return state, []

    def on_pair(self, state: S, truck_id: str | None, at: datetime) -> S:
        """A declared pairing of this container with ``truck_id`` (None: unpaired); the default ignores it."""
        return state

    def on_sensor(self, state: S, ping: Ping, ctx: FixContext) -> tuple[S, list[Event]]:
        """The sensor events of a fix the integrity check rejected, placed at the last accepted fix (``ctx``
        holds its fences); the default ignores them. Only a rule about what the tracker sensed (a door, a
        seal) belongs here: nothing about the implausible position may be learned from it."""
        return state, []


class Timed(Protocol):
    """Detectors that can tell, from their own state alone, when a tick could next do anything.

    A port holds thousands of silent devices (boxes asleep in yards, trucks gone home between jobs);
    ticking every one every few seconds to find the few whose timer ran out is most of the work of a
    quiet port. Each detector instead names the earliest instant at which ``on_tick`` could change its
    state or emit an event; the pipeline keeps one due time per device and ticks only those that fell due.

    ``after``: the time of a tick already run with this very state (None right after a fix, an inspection
    or a restart), so a rule that may fire at any moment of a window can say "the next tick" and a window
    that has passed can say None. The answer may be early (a wasted tick) but never late (a late alert):
    ``on_tick`` at any time before it must return no event and the state unchanged (but for housekeeping
    that every evaluation repeats first anyway, such as forgetting expired keys). It must not depend on
    ``ctx.world``, which changes with other devices' fixes without this device being asked again.
    """

    def next_due(self, state: Any, ctx: TickContext, after: datetime | None) -> datetime | None: ...


_TICK = timedelta(microseconds=1)
_EPOCH = datetime(2000, 1, 1)
_AFTER: dict[float, timedelta] = {}  # threshold (s) -> the first offset beyond it, see first_after()


def first_after(start: datetime, seconds: float) -> datetime:
    """The first instant ``t`` (to the microsecond) with ``(t - start).total_seconds() > seconds``.

    Detectors compare silences as floats; ``start + timedelta(seconds=...)`` rounds to the microsecond, so
    the exact crossing is found by stepping from that estimate (a step or two at most).
    """
    step = _AFTER.get(seconds)
    if step is None:
        # whether ``t`` qualifies depends only on ``t - start``, an exact count of microseconds: the count is
        # found once per threshold (detectors ask about a handful of them, at every fix and due time)
        t = _EPOCH + timedelta(seconds=seconds)
        while (t - _TICK - _EPOCH).total_seconds() > seconds:
            t -= _TICK
        while not (t - _EPOCH).total_seconds() > seconds:
            t += _TICK
        step = t - _EPOCH
        if len(_AFTER) >= 4096:
            _AFTER.clear()
        _AFTER[seconds] = step
    return start + step


def next_instant(after: datetime | None, last: datetime) -> datetime:
    """The next tick, for a rule that may fire at any moment: just after ``after``, or at once after a fix.

    ``last`` is the device's last fix, before which (and for some time after) no tick runs anyway.
    """
    return last if after is None else max(last, after + _TICK)
