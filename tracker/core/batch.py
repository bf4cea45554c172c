"""One micro-batch through the core: the loop the service, the replays, the simulator and the benchmarks share.

A batch is a list of work items (fixes and customs decisions, already routed to the devices they are about),
the states the devices had before it (read-only: nothing handed in is changed) and, optionally, the instant
the device timers run at. The order of work, the same wherever the batch comes from:

1. every item in event-time order across devices (the caller's sequence breaks ties), so cross-device rules
   (pairing, rendezvous) compare a device with the others' positions as they were at that moment, and a
   clearance inside a batch of replayed fixes lands where it happened;
2. the raw fence membership of all the batch's fixes, and the fences each hop between consecutive fixes of
   a device may cross, in one vectorised lookup (``Pipeline.prefetch``);
3. each fix through the reorder window (``tracker.core.reorder``; the window travels in the state), each
   customs decision through ``Pipeline.inspect``. An item the core raises on is a :class:`Failure`: its
   device keeps the state it had before that item and the rest of the batch goes on;
4. with ``now``, the timers of the devices that fall due: those the caller's queue says are due, and every
   device this batch changed (its queued time was its old state's), each judged on its newest state.

The result holds the states to adopt (only once the caller has stored what the batch produced) and the due
times the batch already had to compute, so a caller schedules each device once per batch, not once per fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from tracker.core.model import Alert, AlertUpdate, Event, Inspection, Ping
from tracker.core.pipeline import Pipeline, StepResult
from tracker.core.reorder import Reorderer
from tracker.core.state import DeviceState
from tracker.core.trips import Trip

__all__ = ["BatchOutcome", "Done", "Failure", "TickFailure", "Work", "run_batch"]


class Work(msgspec.Struct, frozen=True, gc=False):
    """One item for one device. ``seq``: the caller's position for it (ties in event time keep that order,
    and a failure names it); an inspection routed to two devices is two items with the same ``seq``."""

    device_id: str
    item: Ping | Inspection
    seq: int


class Done(msgspec.Struct, frozen=True, gc=False):
    """What one item came to (``result.state`` is its device's state after it)."""

    work: Work
    result: StepResult


@dataclass(frozen=True, slots=True)
class Failure:
    """An item the core raised on; its device was left as it was before the item."""

    work: Work
    error: Exception


@dataclass(frozen=True, slots=True)
class TickFailure:
    """A device whose timers raised; it was left as it was, the other devices were still ticked."""

    device_id: str
    error: Exception


@dataclass(slots=True)
class BatchOutcome:
    states: dict[str, DeviceState] = field(default_factory=dict)
    """Every device the batch stepped or ticked, as the batch left it (the caller adopts these)."""
    dirty: dict[str, DeviceState] = field(default_factory=dict)
    """Those of ``states`` that are not the very state handed in (what the store has to write)."""
    done: list[Done] = field(default_factory=list)  # per item, in the order they were run
    ticks: list[tuple[str, StepResult]] = field(default_factory=list)  # per ticked device, in tick order
    alerts: list[Alert] = field(default_factory=list)  # new alerts, in the order raised (items, then ticks)
    updates: list[AlertUpdate] = field(default_factory=list)
    trips: list[Trip] = field(default_factory=list)
    fixes: list[tuple[Ping, tuple[str, ...]]] = field(default_factory=list)  # each fix run, with its flags
    failures: list[Failure] = field(default_factory=list)
    tick_failures: list[TickFailure] = field(default_factory=list)
    prefetch_error: Exception | None = None  # the batch lookup failed: every fix was looked up on its own
    tick_at: datetime | None = None
    ticked: frozenset[str] = frozenset()
    """Devices whose timers ran at ``tick_at`` (or that had nothing left to time): due again after it."""
    due: dict[str, datetime | None] = field(default_factory=dict)
    """Next due times computed by the batch for the state it leaves (``Pipeline.next_due``, no tick run)."""

    def collect(self, events: Iterable[Event]) -> None:
        for ev in events:
            if isinstance(ev, AlertUpdate):
                self.updates.append(ev)
            else:
                self.alerts.append(ev)


def run_batch(
    pipeline: Pipeline,
    work: Iterable[Work],
    states: Mapping[str, DeviceState],
    new_state: Callable[[str], DeviceState],
    *,
    reorder_window_s: float = 30.0,
    now: datetime | None = None,
    due: Iterable[str] = (),
    rank: Callable[[str], int] | None = None,
) -> BatchOutcome:
    """Run one micro-batch (see the module docstring).

    ``new_state``: the state of a device not in ``states`` (its first fix). ``due``: the devices whose
    queued due time is at or before ``now``; ``rank`` orders the ticks (``DueQueue.rank``; devices it does
    not know keep the order the batch met them in).
    """
    out = BatchOutcome(tick_at=now)
    ordered = sorted(work, key=lambda w: (w.item.ts, w.seq, w.device_id))
    working = out.states
    try:
        # one vectorised fence lookup (membership and the hops' crossings) for the whole batch; each fix
        # falls back to its own lookup without it, so this changes how fast answers come, never what they are
        fixes = [w.item for w in ordered if isinstance(w.item, Ping)]
        before = {p.device_id: st.last for p in fixes if (st := states.get(p.device_id)) is not None}
        pipeline.prefetch(fixes, before)
    except Exception as exc:
        out.prefetch_error = exc
        pipeline.prefetch(())
    reorderer = Reorderer(pipeline, reorder_window_s)
    for w in ordered:
        dev, item = w.device_id, w.item
        state = working.get(dev) or states.get(dev) or new_state(dev)
        try:
            result = pipeline.inspect(state, item) if isinstance(item, Inspection) else reorderer.step(state, item)
        except Exception as exc:
            # one item the core cannot judge must not take its batch down with it
            out.failures.append(Failure(w, exc))
            continue
        if not isinstance(item, Inspection):
            out.fixes.append((item, result.flags))
        working[dev] = result.state
        out.done.append(Done(w, result))
        out.collect(result.alerts)
        out.trips.extend(result.trips)
    if now is not None:
        _tick(pipeline, out, states, now, due, rank)
    out.dirty = {d: s for d, s in working.items() if s is not states.get(d)}
    return out


def _tick(
    pipeline: Pipeline,
    out: BatchOutcome,
    states: Mapping[str, DeviceState],
    now: datetime,
    due: Iterable[str],
    rank: Callable[[str], int] | None,
) -> None:
    """Only the devices due by ``now``: the others would come out of a tick unchanged."""
    working = out.states
    met = {d: i for i, d in enumerate(working)}  # the order the batch met its devices in
    candidates = set(due) | set(working)

    def order(dev: str) -> tuple[int, int]:
        return (0 if rank is None else rank(dev), met.get(dev, -1))

    ticked: set[str] = set()
    for dev in sorted(candidates, key=order):
        current = working.get(dev) or states.get(dev)
        if current is None:
            continue
        try:
            if dev in working:
                # changed by this batch: judged on its new state, whose due time is computed here, once
                at = pipeline.next_due(current)
                if at is None or at > now or not pipeline.in_tick_range(current, now):
                    out.due[dev] = at
                    continue
            elif not pipeline.in_tick_range(current, now):
                ticked.add(dev)  # due again after ``now``: nothing is left to time before the horizon
                continue
            result = pipeline.tick(current, now)
        except Exception as exc:
            out.tick_failures.append(TickFailure(dev, exc))
            continue
        ticked.add(dev)
        out.due.pop(dev, None)
        if result.state is not current:
            working[dev] = result.state
        out.ticks.append((dev, result))
        out.collect(result.alerts)
        out.trips.extend(result.trips)
    out.ticked = frozenset(ticked)
