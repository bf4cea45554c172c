"""Many devices through one pipeline, in process: replays, the simulator and benchmarks.

The service does the same with a database between batches; here states live in a dict
and the clock is the replay's own (the newest event time seen), so a day of traffic
replays in seconds with timers firing where they would have fired live. As in the service,
a tick looks only at the devices whose due time (``Pipeline.next_due``, kept in a
:class:`~tracker.core.timers.DueQueue`) has come; the rest could not change anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tracker.core.model import DeviceKind, Event, Inspection, Ping
from tracker.core.pipeline import Pipeline
from tracker.core.reorder import Reorderer
from tracker.core.state import DeviceState
from tracker.core.timers import DueQueue


@dataclass
class Emitted:
    """Events in the order the engine produced them, with the replay clock at that moment."""

    at: datetime
    event: Event


@dataclass
class Engine:
    pipeline: Pipeline
    kinds: Mapping[str, DeviceKind] = field(default_factory=dict)
    containers: Mapping[str, list[str]] = field(default_factory=dict)  # container number -> device ids
    tick_every_s: float = 5.0
    reorder_window_s: float = 30.0
    states: dict[str, DeviceState] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)
    emitted: list[Emitted] = field(default_factory=list)
    clock: datetime | None = None
    _next_tick: datetime | None = None
    _reorderer: Reorderer | None = None
    timers: DueQueue = field(default_factory=DueQueue)

    def state(self, device_id: str) -> DeviceState:
        st = self.states.get(device_id)
        if st is None:
            st = DeviceState(device_id, self.kinds.get(device_id, DeviceKind.TRUCK))
            self.states[device_id] = st
        return st

    def _advance(self, now: datetime) -> None:
        """Move the replay clock forward, running every timer tick that falls due on the way."""
        if self.clock is None or now > self.clock:
            self.clock = now
        if self._next_tick is None:
            self._next_tick = now + timedelta(seconds=self.tick_every_s)
            return
        while self._next_tick <= self.clock:
            self.tick(self._next_tick)
            self._next_tick += timedelta(seconds=self.tick_every_s)

    def feed(self, ping: Ping, *, now: datetime | None = None) -> None:
        self._advance(now or ping.received or ping.ts)
        if self._reorderer is None:
            self._reorderer = Reorderer(self.pipeline, self.reorder_window_s)
        result = self._reorderer.step(self.state(ping.device_id), ping)
        self._adopt(ping.device_id, result.state)
        for flag in result.flags:
            self.flags[flag] = self.flags.get(flag, 0) + 1
        self._emit(result.alerts)

    def inspect(self, inspection: Inspection) -> None:
        self._advance(inspection.ts)
        for dev in self.containers.get(inspection.container_no, ()):
            result = self.pipeline.inspect(self.state(dev), inspection)
            self._adopt(dev, result.state)
            self._emit(result.alerts)

    def pair(self, container_id: str, truck_id: str | None, at: datetime) -> None:
        result = self.pipeline.pair(self.state(container_id), truck_id, at)
        self._adopt(container_id, result.state)

    def _adopt(self, device_id: str, state: DeviceState, ticked_at: datetime | None = None) -> None:
        self.states[device_id] = state
        self.timers.schedule(device_id, self.pipeline.next_due(state, ticked_at))

    def restore(self, states: Iterable[DeviceState]) -> None:
        """Take over saved states (a restart): the world view and the due times are rebuilt from them."""
        for st in states:
            self.states[st.device_id] = st
        self.pipeline.restore(list(self.states.values()))
        self.timers.rebuild((d, self.pipeline.next_due(st)) for d, st in self.states.items())

    def tick(self, now: datetime) -> None:
        """Run the timers of the devices due by ``now`` (every other device would come out unchanged)."""
        for dev in self.timers.due(now):
            st = self.states[dev]
            if not self.pipeline.in_tick_range(st, now):
                self.timers.schedule(dev, self.pipeline.next_due(st, now))
                continue
            result = self.pipeline.tick(st, now)
            self._adopt(dev, result.state, now)
            self._emit(result.alerts, now)

    def run(self, items: Iterable[Ping | Inspection], *, until: datetime | None = None) -> list[Emitted]:
        for item in items:
            if isinstance(item, Inspection):
                self.inspect(item)
            else:
                self.feed(item)
        if until is not None:
            self._advance(until)
        return self.emitted

    def _emit(self, events: Iterable[Event], at: datetime | None = None) -> None:
        when = at or self.clock
        assert when is not None
        for ev in events:
            self.emitted.append(Emitted(when, ev))
