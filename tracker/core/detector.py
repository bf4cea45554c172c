"""The contract every detector module follows.

A detector is a stateless object holding its parameters plus pure functions over its
own typed state (an immutable msgspec Struct, or None when it has nothing to remember).
The state lives in memory between fixes exactly as the detector returned it; only the
store encodes it, once per batch, with ``tracker.core.codec``. The pipeline
computes what several detectors need exactly once per fix (fence membership,
motion, the world view) and passes it in a context; detectors never see the clock,
the database or the broker. Time comes from the fix, or from ``now`` on a tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol
from weakref import WeakKeyDictionary

from geofences import FenceIndex, FenceKind
from tracker.core.fix import Fix
from tracker.core.model import DeviceKind, Event, Inspection, Ping
from tracker.core.world import World

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


@dataclass(frozen=True, slots=True)
class Motion:
    """Whether the device is standing still, computed once per fix by ``tracker.core.motion``."""

    stationary_since: datetime | None  # first fix of the current stationary period; None while moving
    centre_lon: float | None = None
    centre_lat: float | None = None
    radius_m: float = 0.0  # how far the fixes of this stationary period spread
    outside_since: datetime | None = None  # standing outside every authorized stop zone since (tracker.core.motion)


@dataclass(frozen=True, slots=True)
class FixContext:
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

    def authorized_stop(self) -> bool:
        return in_authorized_zone(self.index, self.fences)


@dataclass(frozen=True, slots=True)
class TickContext:
    """A timer tick for one device: lets timeouts fire without a new fix."""

    device_id: str
    kind: DeviceKind
    last: Fix | None
    fences: frozenset[str]
    motion: Motion
    index: FenceIndex
    world: World


class Detector(Protocol):
    """``state``: the detector's own state type (typed in each detector; ``Any`` here only because a
    protocol cannot name each implementation's type); None until it has something to remember."""

    name: ClassVar[str]

    def on_fix(self, state: Any, ping: Ping, ctx: FixContext) -> tuple[Any, list[Event]]: ...

    def on_tick(self, state: Any, now: datetime, ctx: TickContext) -> tuple[Any, list[Event]]: ...


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


def first_after(start: datetime, seconds: float) -> datetime:
    """The first instant ``t`` (to the microsecond) with ``(t - start).total_seconds() > seconds``.

    Detectors compare silences as floats; ``start + timedelta(seconds=...)`` rounds to the microsecond, so
    the exact crossing is found by stepping from that estimate (a step or two at most).
    """
    t = start + timedelta(seconds=seconds)
    while (t - _TICK - start).total_seconds() > seconds:
        t -= _TICK
    while not (t - start).total_seconds() > seconds:
        t += _TICK
    return t


def next_instant(after: datetime | None, last: datetime) -> datetime:
    """The next tick, for a rule that may fire at any moment: just after ``after``, or at once after a fix.

    ``last`` is the device's last fix, before which (and for some time after) no tick runs anyway.
    """
    return last if after is None else max(last, after + _TICK)


class InspectionAware(Protocol):
    """Detectors that also react to customs decisions about the device's container."""

    def on_inspection(self, state: Any, inspection: Inspection, ctx: TickContext) -> tuple[Any, list[Event]]: ...
