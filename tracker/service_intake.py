"""What comes in, and how far behind it is: decoding messages, the batches in flight, ingest's health.

A part of ``Service`` (tracker/service.py). The ingest task runs one batch through the core while the
batch before it is being committed (``_Writing``); a message counts as waiting until the batch it is in
is committed and acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

from tracker.adapters.decode import Limits, decode_inspection, decode_mqtt
from tracker.adapters.errors import describe_error
from tracker.adapters.mqtt import Message
from tracker.adapters.store import Batch
from tracker.core.model import Ignored, Inspection, Ping, Rejected
from tracker.core.state import DeviceState
from tracker.service_base import Decoded, ServiceBase

Built = tuple[tuple[datetime, frozenset[str]] | None, dict[str, datetime | None]]
"""What ``build_batch`` leaves besides the batch: the ticked devices with their instant, and the due times."""


@dataclass(slots=True)
class _Writing:
    """A batch built and being committed (``task``) while the next one runs through the core."""

    messages: list[Message]
    decoded: list[Decoded]
    batch: Batch
    working: dict[str, DeviceState]
    built: Built
    task: asyncio.Task[bool] = field(init=False)
    acknowledged: bool = False

    @property
    def received(self) -> float | None:
        return min((m.received for m in self.messages), default=None)


class Intake(ServiceBase):
    """Decoding and ingest health (a part of ``Service``)."""

    limits: Limits
    _building_since: float | None  # monotonic receive time of the oldest message being run
    _writing: _Writing | None  # the batch being committed while the next one is run
    _held: _Writing | None  # a batch run but kept back until the one before it is settled
    _newest_fix_lag: float  # median fix age at commit in the last (well-filled) batch

    def decode(self, msg: Message, now: datetime) -> Decoded:
        """Bytes to a decoded item; total: whatever the payload, the answer is an item, never an exception."""
        item: Ping | Rejected | Ignored | Inspection
        if msg.retain:
            # a retained message would be replayed to every new subscriber: a poison published once would fire
            # on every reconnect, and a retained fix is a stale position presented as news
            item = Rejected("retained", "retained messages are refused on ingest topics")
        else:
            try:
                if msg.topic == self.settings.inspection_topic:
                    item = decode_inspection(msg.payload, now, self.limits)
                else:
                    item = decode_mqtt(msg.topic, msg.payload, now, self.limits)
            except Exception as exc:  # the decoders are total; this is the last line if one of them is not
                self.metrics.ingest_errors.labels("decode").inc()
                self._log_throttled("decode", f"decoder raised on {msg.topic}: {type(exc).__name__}")
                item = Rejected("decode_error", describe_error(exc))
        # a dead letter keeps at most max_payload_bytes of its payload: enough to diagnose, no DoS lever
        payload = msg.payload[: self.limits.max_payload_bytes]
        return item, msg.topic, payload

    def ingest_health(self) -> dict[str, float | int | bool]:
        """How far behind ingest is, from what this process can see (broker backlog is not visible here).

        ``wait_s`` is how long the oldest message not yet committed has waited since paho handed it over
        (queued, being run, being written or kept back: a write that hangs counts for as long as it hangs);
        ``fix_lag_s`` the median age of the fixes of the last batch at its commit, counted only when that batch
        was at least half full (a backlog is being drained).
        """
        loop_time = asyncio.get_running_loop().time()
        queue = self.link.messages if self.link is not None else None
        oldest = self._in_flight_since()
        if queue is not None and not queue.empty():
            head: Message = queue._queue[0]  # type: ignore[attr-defined]  # peek: asyncio.Queue keeps a deque
            oldest = head.received if oldest is None else min(oldest, head.received)
        wait_s = max(0.0, time.monotonic() - oldest) if oldest is not None else 0.0
        stalled_s = loop_time - self._stalled_since if self._stalled_since is not None else 0.0
        depth = queue.qsize() if queue is not None else 0
        # the fixes' age says we are behind only while there is something left to catch up on
        draining = depth > 0 or oldest is not None
        recent = loop_time - self._last_commit < self.settings.ingest_max_lag_s
        fix_lag = self._newest_fix_lag if recent and draining else 0.0
        self.metrics.ingest_wait.set(wait_s)
        self.metrics.queue_depth.set(depth)
        ok = (
            wait_s <= self.settings.ingest_max_lag_s
            and stalled_s <= self.settings.ingest_stall_s
            and fix_lag <= self.settings.ingest_max_lag_s
        )
        return {
            "ok": ok,
            "wait_s": round(wait_s, 3),
            "stalled_s": round(stalled_s, 3),
            "fix_lag_s": round(fix_lag, 3),
            "queued": depth,
        }

    def _in_flight_since(self) -> float | None:
        """The monotonic receive time of the oldest message being run or written (not yet acknowledged)."""
        writing, held = self._writing, self._held
        written = writing.received if writing is not None and not writing.acknowledged else None
        kept = held.received if held is not None else None
        times = [t for t in (self._building_since, written, kept) if t is not None]
        return min(times, default=None)
