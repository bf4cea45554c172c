"""What the parts of the service share: its typed state as they see it, the timer queue's upkeep, throttled logs.

``Service`` (tracker/service.py) is assembled from parts, each a mixin in a module of its own (fences,
commands, audit anchoring); each part declares here, once, the state it reads and writes, so a reader
of one part sees what it touches without reading the composition root. ``Service.__init__`` assigns
all of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tracker.adapters.mqtt import MqttLink
from tracker.adapters.store import Store
from tracker.adapters.store_fences import FenceStore
from tracker.adapters.store_orgs import OrgStore
from tracker.audit import Signer
from tracker.commands import Command, Item
from tracker.config import Settings
from tracker.core.model import DeviceKind
from tracker.core.pipeline import Pipeline
from tracker.core.state import DeviceState
from tracker.core.timers import DueQueue
from tracker.metrics import Metrics

if TYPE_CHECKING:
    from tracker.service_fences import Fences

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Decoded = tuple[Item, str | None, bytes | None]
"""A decoded input with the topic it came on and, for dead letters, the raw payload."""


@dataclass(frozen=True, slots=True)
class _Queued:
    """A command waiting for the single writer, with its caller's future and deadline (``loop.time()``)."""

    command: Command
    done: asyncio.Future[None]
    deadline: float
    dead_letter: bool


def _source(item: object) -> str:
    return str(getattr(item, "source", "native"))


def utcnow() -> datetime:
    return datetime.now(UTC)


class ServiceBase:
    """The state the service's parts share (assigned by ``Service.__init__``) and helpers they all call."""

    settings: Settings
    clock: Clock
    metrics: Metrics
    store: Store | None
    fence_store: FenceStore | None
    orgs: OrgStore | None
    link: MqttLink | None
    signer: Signer | None
    fences: Fences
    pipeline: Pipeline
    devices: dict[str, DeviceKind]
    states: dict[str, DeviceState]
    containers: dict[str, list[str]]
    device_orgs: dict[str, str]
    deactivated: set[str]
    timers: DueQueue
    commands: asyncio.Queue[_Queued]
    _stalled_since: float | None
    _last_commit: float
    _throttle: dict[str, float]
    _tasks: list[asyncio.Task[None]]
    _stopping: bool

    def _reschedule(self, device_id: str, ticked_at: datetime | None = None) -> None:
        """Queue the device's next tick from its adopted state (``ticked_at``: a tick just ran on it)."""
        if device_id in self.deactivated:  # a deactivated tracker is silent by decision: no timer alerts
            self.timers.schedule(device_id, None)
            return
        state = self.states[device_id]
        try:
            due = self.pipeline.next_due(state, ticked_at)
        except Exception:
            # a due time that cannot be computed must not lose the timer: tick the device at every tick
            self.metrics.ingest_errors.labels("tick").inc()
            self._log_throttled("next_due", f"due time failed for {device_id}; ticked at every tick")
            due = None if state.last is None else state.last.ts
        self.timers.schedule(device_id, due)

    def _reschedule_all(self) -> None:
        """Rebuild the due-time queue from the states (at start, and when the fence index changes)."""
        self.timers.rebuild((dev, None) for dev in self.states)
        for dev in self.states:
            self._reschedule(dev)

    def _stalled(self, stalled: bool) -> None:
        loop_time = asyncio.get_running_loop().time()
        if stalled:
            if self._stalled_since is None:
                self._stalled_since = loop_time
                log.error("the database refuses writes; ingest waits (messages stay unacknowledged)")
            self.metrics.store_stalled.set(1)
        else:
            if self._stalled_since is not None:
                log.warning("the database takes writes again after %.1f s", loop_time - self._stalled_since)
            self._stalled_since = None
            self._last_commit = loop_time
            self.metrics.store_stalled.set(0)

    def _log_throttled(self, key: str, message: str, every_s: float = 60.0) -> None:
        """Poison can repeat thousands of times a second; the log says so once a minute per kind, with a count.

        Called from the worker thread that runs a batch through the core too, hence no event-loop clock."""
        now = time.monotonic()
        if now - self._throttle.get(key, -every_s) >= every_s:
            self._throttle[key] = now
            log.error("%s (further ones counted in tracker_ingest_errors, logged once a minute)", message)

    async def _cancel_tasks(self, timeout: float = 15.0) -> None:
        """Cancel the background loops, again while one is still running.

        A single ``cancel()`` is not enough on Python 3.11: ``asyncio.wait_for`` returns its result and
        swallows the cancellation when its inner future completes at the same moment (a message arriving
        just as the service stops), and the loop then runs on, so ``stop()`` would wait for ever.
        """
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = {t for t in self._tasks if not t.done()}
        while pending:
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=0.5)
            if pending and loop.time() > deadline:
                log.warning("tasks still running after %.0f s: %s", timeout, sorted(t.get_name() for t in pending))
                break
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("task %s had ended with %r", task.get_name(), task.exception())
