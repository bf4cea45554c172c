"""Late fixes inside a reorder window are fed to the detectors in event-time order.

Waiting for stragglers would delay every alert by the window, so fixes are processed
as they arrive and a short log remembers, per device, the state before each recent
fix. When a fix arrives late but inside the window, the device is rewound to the state
before the first newer fix and the log is replayed in event-time order. Alerts the
replay raises anew are emitted; alerts the speculative run raised that the replay no
longer raises are retracted with an update, so what stands is exactly what in-order
delivery would have produced. Older stragglers are only stored and flagged ``late``.

The log is part of the device's state (``DeviceState.log``, stored with it by ``tracker.core.codec``),
so a restart, or another process taking the device over, still replays a late fix instead of flagging
it. Each entry keeps the state before its fix without that state's own log.

The window is bounded by fix count as well as by time (``MAX_FIXES``): a tracker reporting twice a second
would otherwise keep 60 entries, and each costs its share of every state write (diffed, packed and deflated
by the codec), of the state row and of the process's memory, all for stragglers that are late by more
fixes than a reordering broker delivery ever produces. A fix older than the oldest entry of a full window is
flagged ``late`` like one older than the window's time.

A pairing declaration (``Reorderer.declare``: the API's, or a replay's) is an entry of the window too
(``state.Declared``), in time order with the fixes. Applied to the state alone, it was lost whenever a late fix
rewound the device to a state from before it: the replay restored the pairing the declaration had replaced and
judged every later fix on it (in the detection benchmark, a container unpaired from its truck got a late fix two
seconds after and, an hour later, a false "container is 4110 m from its declared truck"). In the window, a replay
re-applies it at its place, and a fix older than the declaration but newer than every fix is a late fix like any
other (it is judged on the pairing of its own time, then the declaration is applied again). So a late, or
deliberately delayed, fix can neither undo a declaration nor bring back the one it replaced. A declaration is
placed at its own time, or after the newest fix already judged if it is backdated before it: it never re-judges
fixes already judged (a backdated declaration cannot retract what they raised).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from msgspec.structs import replace

from tracker.core.model import Alert, AlertUpdate, Event, Ping
from tracker.core.pipeline import Pipeline, StepResult
from tracker.core.state import Declared, DeviceState, Entry
from tracker.core.trips import Trip

REORDERED = "reordered"
_US = timedelta(microseconds=1)
MAX_FIXES = 12
"""Entries a window keeps at most. Trackers reporting every 10 s or slower never reach it within 30 s; at one or
two fixes a second it keeps the window's state row near a kibibyte (about 60 B per entry after deflate) and a
replay at 12 fixes."""

Log = tuple[Entry | Declared, ...]


def _ts(e: Entry | Declared) -> datetime:
    """An entry's place in the window's time order."""
    return e.ts if isinstance(e, Declared) else e.ping.ts


def _order(item: Ping | Declared) -> tuple[datetime, bool]:
    """Replay order: by time, a declaration before a fix of its instant (it holds from its time on)."""
    return item.ts, not isinstance(item, Declared)


def _after(e: Entry | Declared, ts: datetime) -> bool:
    """Whether a window entry comes after a fix taken at ``ts`` (or is that fix)."""
    return e.ts > ts if isinstance(e, Declared) else e.ping.ts >= ts


def _key(ev: Event) -> tuple[object, ...]:
    if isinstance(ev, AlertUpdate):
        return ("update", ev.alert.id, ev.ts, ev.closes)
    return ("alert", ev.id)


class Reorderer:
    def __init__(self, pipeline: Pipeline, window_s: float = 30.0, max_fixes: int = MAX_FIXES) -> None:
        self.pipeline = pipeline
        self.window = timedelta(seconds=window_s)
        self.max_fixes = max(1, max_fixes)

    def _trim(self, log: Log) -> Log:
        if not log:
            return log
        newest = max(map(_ts, log))
        oldest = newest - self.window
        if _ts(log[0]) >= oldest and len(log) <= self.max_fixes:
            return log  # (the common case: nothing to drop, no copy)
        kept = tuple(e for e in log if _ts(e) >= oldest)
        return kept[-self.max_fixes :] if len(kept) > self.max_fixes else kept

    def step(self, state: DeviceState, ping: Ping) -> StepResult:
        """One fix through the pipeline, in event-time order within the window; the log travels in the state."""
        log = state.log
        bare = replace(state, log=()) if log else state  # entries keep states without their own log
        new_log, result = self._step(log, bare, ping)
        out = result.state
        if out is bare and new_log is log:
            return StepResult(state, result.alerts, result.flags, result.trips)  # nothing changed
        if out is state or out is not bare:
            out = replace(out)  # never change a state handed out before (the input, or one kept in the log)
        out.log = new_log
        return StepResult(out, result.alerts, result.flags, result.trips)

    def declare(self, state: DeviceState, truck_id: str | None, at: datetime) -> StepResult:
        """A pairing declaration (``Pipeline.pair``; ``None``: the haul ended), logged in the window so that a
        replay re-applies it (see the module docstring). It raises nothing and changes only this state."""
        if self.window.total_seconds() <= 0:
            return self.pipeline.pair(state, truck_id, at)
        log = state.log
        bare = replace(state, log=()) if log else state
        # its place: its own time, unless a fix of that time or later was judged already (the window is in order,
        # so the newest entry is the last; a declaration comes before a fix of its instant, hence the µs)
        floors = [] if bare.last is None else [bare.last.ts + _US]
        if log:
            floors.append(log[-1].ts if isinstance(log[-1], Declared) else log[-1].ping.ts + _US)
        place = max([at, *floors])
        result = self.pipeline.pair(bare, truck_id, at)
        out = result.state
        if out is bare:
            out = replace(out)  # never change a state handed out before
        out.log = self._trim((*log, Declared(place, truck_id, bare, at)))
        return StepResult(out, result.alerts, result.flags, result.trips)

    def _step(self, log: Log, state: DeviceState, ping: Ping) -> tuple[Log, StepResult]:
        # "newest" counts rejected (implausible) fixes too: they changed the integrity state, so a fix
        # older than them must be replayed before them, even if it is newer than the last accepted fix; and
        # declarations (the window is in time order: the newest entry is the last), as a fix older than one was
        # taken on the pairing before it
        newest = _ts(log[-1]) if log else None
        if state.last is not None and (newest is None or state.last.ts > newest):
            newest = state.last.ts
        fresh = (not log or not _after(log[-1], ping.ts)) and (state.last is None or ping.ts > state.last.ts)
        if fresh or newest is None or self.window.total_seconds() <= 0:
            result = self.pipeline.step(state, ping)
            if result.state is state:
                return log, result
            return self._trim((*log, Entry.of(ping, state, result.alerts))), result
        k = next((i for i, e in enumerate(log) if _after(e, ping.ts)), None)
        if k is not None and isinstance(hit := log[k], Entry) and hit.ping.ts == ping.ts:
            return log, StepResult(state, (), ("duplicate_ts",))  # a redelivery of a fix already judged
        if k is None or newest - ping.ts > self.window or (k == 0 and len(log) >= self.max_fixes):
            # too late to matter: stored and flagged only (a full window may have dropped newer fixes than this one,
            # so replaying it from the oldest entry kept could put it after them)
            return log, self.pipeline.step(state, ping)
        current = log[k].before
        replayed: list[Entry | Declared] = []
        new_events: list[Event] = []
        trips: list[Trip] = []  # the replay's trip outputs; ids come from device and start, so rewrites are upserts
        items: list[Ping | Declared] = [ping]
        items.extend(e if isinstance(e, Declared) else e.ping for e in log[k:])
        for p in sorted(items, key=_order):
            if isinstance(p, Declared):
                # re-applied at its place: what it declared holds for every fix after it, whatever came late
                replayed.append(replace(p, before=current))
                current = self.pipeline.pair(current, p.truck, p.at).state
                continue
            result = self.pipeline.step(current, p)
            if result.state is not current:
                replayed.append(Entry.of(p, current, result.alerts))
            new_events.extend(result.alerts)
            trips.extend(result.trips)
            current = result.state
        rewound = [*(e.before.trips for e in log[k:]), state.trips]  # what the speculative run stored trips from
        trips.extend(self.pipeline.trips.after_rewind(rewound, current.trips, trips))
        old_events = [ev for e in log[k:] if isinstance(e, Entry) for ev in e.events]
        old_keys = {_key(ev) for ev in old_events}
        new_keys = {_key(ev) for ev in new_events}
        out: list[Event] = [ev for ev in new_events if _key(ev) not in old_keys]
        for ev in old_events:
            if isinstance(ev, Alert) and _key(ev) not in new_keys:
                out.append(
                    AlertUpdate(
                        alert=ev,
                        ts=ping.ts,
                        fields={"retracted": True, "reason": "a fix that arrived late changed the verdict"},
                        closes=True,
                    )
                )
        return self._trim((*log[:k], *replayed)), StepResult(current, tuple(out), (REORDERED,), tuple(trips))


def effective_alerts(events: list[Event]) -> dict[str, Alert]:
    """Alerts raised and not retracted, by id: what an operator is left with."""
    raised: dict[str, Alert] = {}
    for ev in events:
        if isinstance(ev, Alert):
            raised[str(ev.id)] = ev
        elif ev.fields.get("retracted"):
            raised.pop(str(ev.alert.id), None)
    return raised
