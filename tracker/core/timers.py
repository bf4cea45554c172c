"""Due times of the device timers: which devices a tick at ``now`` has to look at.

Ticking every device every few seconds costs in proportion to the fleet, while only a handful of
devices have a timer running out at any moment. The pipeline says when each device next needs a tick
(``Pipeline.next_due``); this queue keeps those times in a heap so that a tick takes out only the
devices due by then, in the order the devices were first scheduled (the order the every-device loop
walked them, so a tick's alerts come out in the same order as before).

Lazy deletion: rescheduling a device does not search the heap for its old entry; an entry counts only
while it matches the device's current due time, stale ones are dropped when they reach the top, and the
heap is rebuilt when stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime

__all__ = ["DueQueue"]

_Entry = tuple[datetime, int, str]  # (due, rank, device id): ranks are unique, so entries never compare by id


class DueQueue:
    """Devices keyed by their next due time; pure data, one writer."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._due: dict[str, datetime] = {}
        self._rank: dict[str, int] = {}

    def __len__(self) -> int:
        """Devices with a due time (those that need no tick at all are not counted)."""
        return len(self._due)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._due

    def when(self, device_id: str) -> datetime | None:
        return self._due.get(device_id)

    def rank(self, device_id: str) -> int:
        """The device's place in tick order (first scheduled, first ticked); unknown devices come last."""
        return self._rank.get(device_id, len(self._rank))

    def schedule(self, device_id: str, due: datetime | None) -> None:
        """Set (or, with None, clear) the device's due time, replacing whatever it had."""
        rank = self._rank.setdefault(device_id, len(self._rank))
        if due is None:
            self._due.pop(device_id, None)
            return
        if self._due.get(device_id) == due:
            return
        self._due[device_id] = due
        heapq.heappush(self._heap, (due, rank, device_id))
        if len(self._heap) > 2 * len(self._due) + 64:
            self._compact()

    def rebuild(self, dues: Iterable[tuple[str, datetime | None]]) -> None:
        """Replace every due time (after a restart or a fence reload); the tick order of known devices stays."""
        self._due = {}
        for device_id, due in dues:
            self._rank.setdefault(device_id, len(self._rank))
            if due is not None:
                self._due[device_id] = due
        self._compact()

    def due(self, now: datetime) -> list[str]:
        """The devices due at or before ``now``, in tick order. They stay queued: the caller reschedules each
        one once its new state is adopted (a batch whose write fails is built again from the same queue)."""
        live: list[_Entry] = []
        seen: set[str] = set()
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            device_id = entry[2]
            if self._due.get(device_id) == entry[0] and device_id not in seen:
                seen.add(device_id)
                live.append(entry)
        for entry in live:
            heapq.heappush(heap, entry)
        return [entry[2] for entry in sorted(live, key=lambda e: e[1])]

    def _compact(self) -> None:
        self._heap = [(due, self._rank[d], d) for d, due in self._due.items()]
        heapq.heapify(self._heap)
