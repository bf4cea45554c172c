"""Run timestamped fix sequences through motion and one detector, the way the pipeline does, without it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

from geofences import FenceIndex, LocalProjection, load_port
from tracker.core import motion
from tracker.core.detector import Detector, FixContext, TickContext
from tracker.core.model import DeviceKind, Event, Ping
from tracker.core.motion import MotionParams
from tracker.core.state import Fix
from tracker.core.world import World

T = TypeVar("T")
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SANTOS = FenceIndex(load_port("santos").fences)

# Places in Santos, chosen from the real fence set (see the membership each test asserts)
OPEN = (-46.32, -23.926)  # inside the port boundary, more than 400 m from any other fence
TERMINAL = (-46.352831, -23.923073)  # santos-terminal-33 (Brasil Terminal Portuário), also customs yard 28
RESTRICTED = (-46.36274, -23.922719)  # santos-restricted-11, a vacant lot with no operator
OUTSIDE = (-46.33, -23.94)  # in town, outside every Santos fence


def stored(value: T) -> T:
    """``value`` after a trip through the store's codec (msgpack of the typed state), which must give it
    back unchanged: it is what a restart continues from."""
    if value is None:
        return value
    out = msgspec.msgpack.decode(msgspec.msgpack.encode(value), type=type(value))
    assert out == value
    return out


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def offset(place: tuple[float, float], east_m: float, north_m: float) -> tuple[float, float]:
    """A point ``east_m``/``north_m`` metres from ``place``."""
    proj = LocalProjection(place[0], place[1])
    lon, lat = proj.to_lonlat(east_m, north_m)
    return float(lon), float(lat)


@dataclass
class Runner:
    """One device's state as the pipeline would keep it, driving a single detector."""

    detector: Detector[Any]
    kind: DeviceKind = DeviceKind.TRUCK
    device_id: str = "TRK-1"
    index: FenceIndex = SANTOS
    motion_params: MotionParams = field(default_factory=MotionParams)
    world: World = field(default_factory=World)
    last: Fix | None = None
    fences: frozenset[str] = frozenset()
    motion_state: Any = None
    state: Any = None
    events: list[Event] = field(default_factory=list)

    def fix(
        self, seconds: float, lon: float, lat: float, accuracy: float | None = None, speed: float | None = None
    ) -> list[Event]:
        ping = Ping(self.device_id, at(seconds), lon, lat, speed=speed, accuracy=accuracy)
        fences = self.index.membership(lon, lat, self.fences)
        self.motion_state, m = motion.update(self.motion_state, ping, self.motion_params)
        ctx = FixContext(
            device_id=self.device_id,
            kind=self.kind,
            previous=self.last,
            fences_before=self.fences,
            fences=fences,
            motion=m,
            index=self.index,
            world=self.world,
        )
        self.state, out = self.detector.on_fix(self.state, ping, ctx)
        self.last, self.fences = Fix.of(ping), fences
        self.events.extend(out)
        return out

    def tick(self, seconds: float) -> list[Event]:
        ctx = TickContext(
            device_id=self.device_id,
            kind=self.kind,
            last=self.last,
            fences=self.fences,
            motion=motion.current(self.motion_state),
            index=self.index,
            world=self.world,
        )
        self.state, out = self.detector.on_tick(self.state, at(seconds), ctx)
        self.events.extend(out)
        return out

    def run(self, seq: Iterable[tuple[float, float, float]], tick_every: float | None = None) -> list[Event]:
        """Feed (seconds, lon, lat) fixes; with ``tick_every``, ticks run between fixes as in the service."""
        out: list[Event] = []
        next_tick: float | None = None
        for t, lon, lat in seq:
            if tick_every is not None and next_tick is not None:
                while next_tick < t:
                    out.extend(self.tick(next_tick))
                    next_tick += tick_every
            out.extend(self.fix(t, lon, lat))
            if tick_every is not None and next_tick is None:
                next_tick = t + tick_every
        return out
