"""Many devices through one pipeline, in process: replays, the simulator and benchmarks.

The service does the same with a database between batches; here states live in a dict
and the clock is the replay's own (the newest event time seen), so a day of traffic
replays in seconds with timers firing where they would have fired live.

Both run the same batch processor (``tracker.core.batch``). Fed items are buffered and run as one
micro-batch at each tick boundary (every ``tick_every_s`` of replay clock), before that tick, or
when ``batch_max`` items are waiting: ticks fire at the same instants as if every item had been run
on arrival, and each batch gets one fence lookup and one due-time computation per device. As in the
service, a tick looks only at the devices whose due time (``Pipeline.next_due``, kept in a
:class:`~tracker.core.timers.DueQueue`) has come, and at those the batch changed.

Reading ``states``, ``emitted``, ``flags`` or ``trips`` (and ``pair``, ``restore``) first runs what is
buffered, so a caller sees every item it fed; a caller that reads after every item gets batches of one.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from tracker.core.batch import BatchOutcome, Work, run_batch
from tracker.core.model import DeviceKind, Event, Inspection, Ping
from tracker.core.pipeline import TICK_QUIET_S, Pipeline
from tracker.core.reorder import Reorderer
from tracker.core.state import DeviceState
from tracker.core.timers import DueQueue
from tracker.core.trips import Trip

BATCH_MAX = 2000
"""Items buffered before a batch runs without waiting for the tick boundary (bounds memory, not results)."""
_QUIET = timedelta(seconds=TICK_QUIET_S)

GC_THRESHOLD = (50_000, 20, 20)
"""Collector thresholds of a long-running process of the core (see :func:`tune_gc`)."""


def tune_gc() -> None:
    """Set the cyclic garbage collector up for the hot path, once start-up has built what stays: the service
    (``tracker run``) and the benchmarks' replays call this, so what is measured is what runs.

    Cycles are rare here: the per-device states and their parts are ``gc=False`` msgspec Structs (values only,
    freed by reference counting), yet every batch allocates tens of thousands of short-lived tracked objects
    (dicts, lists, dataclasses) and at the default 700-allocation threshold the collector ran so often that it
    took about a sixth of a replay's CPU, rescanning the fence index, the graphs and the loaded states each full
    pass. ``gc.freeze()`` moves everything alive now (fences, indexes, graphs, restored states) to a permanent
    generation no collection scans (what of it is replaced later, such as the index of a changed fence set, is
    still freed by reference counting: checked for the pipeline and its index). A young generation of 50,000
    objects collects about 70 times less often and still bounds what a rare cycle holds to a few MB. In a
    replay of 300 trucks over 4 h the collector's share fell from 18.7 to 1.5 µs per ping. Not called in
    tests: freezing there would keep every earlier test's objects alive.
    """
    gc.collect()  # what start-up left as garbage is freed now, not frozen for good
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


@dataclass
class Emitted:
    """Events in the order the engine produced them, with the replay clock at that moment."""

    at: datetime
    event: Event


class Engine:
    def __init__(
        self,
        pipeline: Pipeline,
        kinds: Mapping[str, DeviceKind] | None = None,
        containers: Mapping[str, list[str]] | None = None,  # container number -> device ids
        tick_every_s: float = 5.0,
        reorder_window_s: float = 30.0,
        batch_max: int = BATCH_MAX,
    ) -> None:
        self.pipeline = pipeline
        self.kinds: Mapping[str, DeviceKind] = kinds if kinds is not None else {}
        self.containers: Mapping[str, list[str]] = containers if containers is not None else {}
        self.tick_every_s = tick_every_s
        self.reorder_window_s = reorder_window_s
        self.batch_max = batch_max
        self.clock: datetime | None = None
        self._next_tick: datetime | None = None
        self.timers = DueQueue()
        self._states: dict[str, DeviceState] = {}
        self._flags: dict[str, int] = {}
        self._emitted: list[Emitted] = []
        self._trips: list[Trip] = []  # trip outputs in order (tracker.core.trips.trips_in folds them)
        self._pending: list[tuple[Work, datetime]] = []  # buffered items with the replay clock they came at
        self._oldest: datetime | None = None  # event time of the oldest buffered fix (see _idle)
        self._decided = False  # a customs decision is buffered
        self._seq = 0

    # ---- what callers read (every fed item run first) --------------------------------------------

    @property
    def states(self) -> dict[str, DeviceState]:
        self.flush()
        return self._states

    @property
    def flags(self) -> dict[str, int]:
        self.flush()
        return self._flags

    @property
    def emitted(self) -> list[Emitted]:
        self.flush()
        return self._emitted

    @emitted.setter
    def emitted(self, value: list[Emitted]) -> None:
        self.flush()  # what was fed before belongs to the list being replaced, not to the new one
        self._emitted = value

    @property
    def trips(self) -> list[Trip]:
        self.flush()
        return self._trips

    def state(self, device_id: str) -> DeviceState:
        self.flush()
        st = self._states.get(device_id)
        if st is None:
            st = self._states[device_id] = self._new_state(device_id)
        return st

    def _new_state(self, device_id: str) -> DeviceState:
        return DeviceState(device_id, self.kinds.get(device_id, DeviceKind.TRUCK))

    # ---- feeding ---------------------------------------------------------------------------------

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
        self._queue(ping.device_id, ping)

    def inspect(self, inspection: Inspection) -> None:
        self._advance(inspection.ts)
        for dev in self.containers.get(inspection.container_no, ()):
            self._queue(dev, inspection)

    def _queue(self, device_id: str, item: Ping | Inspection) -> None:
        assert self.clock is not None
        self._pending.append((Work(device_id, item, self._seq), self.clock))
        self._seq += 1
        if isinstance(item, Inspection):
            self._decided = True
        elif self._oldest is None or item.ts < self._oldest:
            self._oldest = item.ts
        if len(self._pending) >= self.batch_max:
            self.flush()

    def pair(self, container_id: str, truck_id: str | None, at: datetime) -> None:
        """Declare (``None``: end) the truck hauling a container from ``at`` on, through its reorder window
        (``Reorderer.declare``): a late fix that rewinds the container then replays the declaration too."""
        result = Reorderer(self.pipeline, self.reorder_window_s).declare(self.state(container_id), truck_id, at)
        self._states[container_id] = result.state
        self.timers.schedule(container_id, self.pipeline.next_due(result.state))

    def run(self, items: Iterable[Ping | Inspection], *, until: datetime | None = None) -> list[Emitted]:
        """Feed ``items``; with ``until``, move the clock there (ticks on the way) and run what is left.

        Returns the engine's list of emitted events. Without ``until`` the items fed since the last tick
        boundary may still be buffered (a replay calls this once per item: running each at once would make
        batches of one); ``emitted`` is the complete list.
        """
        for item in items:
            if isinstance(item, Inspection):
                self.inspect(item)
            else:
                self.feed(item)
        if until is not None:
            self._advance(until)
            self.flush()
        return self._emitted

    # ---- batches -----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Run what is buffered now, without a tick."""
        if self._pending:
            self._run(None)

    def tick(self, now: datetime) -> None:
        """Run what is buffered, then the timers of the devices due by ``now`` (every other device would come
        out unchanged); a tick that could do nothing leaves the buffer to grow (``_idle``)."""
        if self._idle(now):
            return
        self._run(now)

    def _idle(self, now: datetime) -> bool:
        """Whether a tick at ``now`` could not change any device, so the buffer may wait for a later tick.

        No queued device is due, and every buffered item is a fix less than ``TICK_QUIET_S`` old at ``now``:
        after it, its device's last accepted fix is at least that recent (a late fix is older than the last
        one, and one the integrity check refuses changes nothing a due time reads), and no tick runs that
        soon after a fix (``Pipeline.in_tick_range``). Running the buffer now or at a later boundary gives the
        same ticks; the larger batch is only sorted by event time over a longer span, as the service's
        batches are. A customs decision can open a timer at once, so it is never kept waiting.
        """
        if self._pending and (self._decided or self._oldest is None or self._oldest <= now - _QUIET):
            return False
        return not self.timers.due(now)

    def _run(self, now: datetime | None) -> None:
        pending, self._pending = self._pending, []
        self._oldest, self._decided = None, False
        fed_at = {w.seq: at for w, at in pending}
        out = run_batch(
            self.pipeline,
            [w for w, _at in pending],
            self._states,
            self._new_state,
            reorder_window_s=self.reorder_window_s,
            now=now,
            due=() if now is None else self.timers.due(now),
            rank=self.timers.rank,
        )
        if out.failures:
            raise out.failures[0].error  # no dead letters here: a replay that the core fails on is a bug to see
        if out.tick_failures:
            raise out.tick_failures[0].error
        self._adopt(out)
        for done in out.done:
            for flag in done.result.flags:
                self._flags[flag] = self._flags.get(flag, 0) + 1
            self._emit(done.result.alerts, fed_at[done.work.seq])
        for _dev, result in out.ticks:
            self._emit(result.alerts, now)
        self._trips.extend(out.trips)

    def _adopt(self, out: BatchOutcome) -> None:
        """Take the batch's states and schedule each device it touched once."""
        self._states.update(out.states)
        for dev, state in out.states.items():
            if dev in out.ticked:
                continue
            due = out.due[dev] if dev in out.due else self.pipeline.next_due(state)
            self.timers.schedule(dev, due)
        for dev in out.ticked:
            self.timers.schedule(dev, self.pipeline.next_due(self._states[dev], out.tick_at))

    def restore(self, states: Iterable[DeviceState]) -> None:
        """Take over saved states (a restart): the world view and the due times are rebuilt from them."""
        self.flush()
        for st in states:
            self._states[st.device_id] = st
        self.pipeline.restore(list(self._states.values()))
        self.timers.rebuild((d, self.pipeline.next_due(st)) for d, st in self._states.items())

    def _emit(self, events: Iterable[Event], at: datetime | None = None) -> None:
        when = at or self.clock
        assert when is not None
        for ev in events:
            self._emitted.append(Emitted(when, ev))
