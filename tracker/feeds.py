"""The live feeds' fan-out: alert events and device positions handed to every open viewer.

Each viewer (an SSE response or a WebSocket) is a ``Subscriber`` with a bounded queue of alert
events and a bounded list of positions waiting for its next batch. Nothing here ever waits for a
viewer: the delivery task and the single writer only append. A viewer that cannot keep up (its
queue or its positions overflow because its connection does not drain) is marked ``slow`` and its
handler disconnects it with a reason; a feed never silently skips what it owes a viewer.

Scope is not decided here: each subscriber carries its own ``sees_alert`` / ``sees_position``
predicates (one call per object), built by the HTTP layer from the viewer's principal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge

from tracker.metrics import Metrics


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One announced alert event; ``seq`` is its event id on SSE and the WebSocket (``str(seq)``)."""

    seq: int
    event: str  # raised | updated
    alert: Mapping[str, Any]  # the alert as GET /v1/alerts serialises it
    update: Mapping[str, Any] | None = None  # what a detector's "updated" event says changed
    change: Mapping[str, Any] | None = None  # an operator's change (ack, resolve, reopen, assign): who, when

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.update is not None:
            out["update"] = dict(self.update)
        if self.change is not None:
            out["change"] = dict(self.change)
        return out

    @property
    def id(self) -> str:
        return str(self.seq)

    def to_json(self) -> dict[str, Any]:
        return {"type": "alert", "id": self.id, "event": self.event, "alert": dict(self.alert), **self.details()}


@dataclass(frozen=True, slots=True)
class PositionItem:
    """A committed fix as the live map needs it."""

    device_id: str
    kind: str
    ts: datetime
    lon: float
    lat: float
    speed: float | None
    heading: float | None
    port: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "kind": self.kind,
            "ts": self.ts.isoformat(),
            "lon": self.lon,
            "lat": self.lat,
            "speed": self.speed,
            "heading": self.heading,
            "port": self.port,
        }


def _everything(_item: object) -> bool:
    return True


@dataclass(eq=False)
class Subscriber:
    """One viewer. ``wake`` is set whenever something was added or the viewer turned slow."""

    transport: str  # sse | ws
    max_queue: int
    max_positions: int
    alerts: bool = True
    positions: bool = False
    sees_alert: Callable[[FeedEvent], bool] = _everything
    sees_position: Callable[[PositionItem], bool] = _everything
    queue: asyncio.Queue[FeedEvent] = field(init=False)
    pending_positions: list[PositionItem] = field(default_factory=list)
    slow: str | None = None  # why the viewer is being disconnected
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    turned_slow: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.max_queue)

    def offer_alert(self, event: FeedEvent) -> bool:
        """Queue an event the viewer may see; False when the viewer just turned (or already was) slow."""
        if self.slow is not None:
            return False
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self._too_slow(f"more than {self.max_queue} alert events waiting")
            return False
        self.wake.set()
        return True

    def offer_positions(self, items: list[PositionItem]) -> bool:
        if self.slow is not None:
            return False
        if len(self.pending_positions) + len(items) > self.max_positions:
            self._too_slow(f"more than {self.max_positions} positions waiting")
            return False
        self.pending_positions.extend(items)
        self.wake.set()
        return True

    def take_positions(self) -> list[PositionItem]:
        out, self.pending_positions = self.pending_positions, []
        return out

    def _too_slow(self, reason: str) -> None:
        self.slow = reason
        self.wake.set()
        self.turned_slow.set()


class Hub:
    """Who is watching, and the one place events and positions are handed to them."""

    def __init__(self, metrics: Metrics) -> None:
        self.subscribers: set[Subscriber] = set()
        r = metrics.registry
        self.clients = Gauge("tracker_feed_clients", "open live-feed viewers", ["transport"], registry=r)
        self.slow_consumers = Counter(
            "tracker_feed_slow_consumers",
            "viewers disconnected because they did not keep up",
            ["transport"],
            registry=r,
        )
        self.events_sent = Counter("tracker_feed_events", "alert events queued to viewers", ["transport"], registry=r)
        self.replayed = Counter("tracker_feed_replayed", "alert events replayed after Last-Event-ID", registry=r)
        self.resets = Counter("tracker_feed_resets", "reconnections told to reload (missed more than kept)", registry=r)
        for transport in ("sse", "ws"):
            self.clients.labels(transport).set(0)
            self.slow_consumers.labels(transport)

    @property
    def wants_positions(self) -> bool:
        return any(s.positions for s in self.subscribers)

    def publish_alert(self, event: FeedEvent) -> None:
        for sub in list(self.subscribers):
            # a viewer turning slow here is counted and closed by its handler
            if sub.alerts and sub.sees_alert(event) and sub.offer_alert(event):
                self.events_sent.labels(sub.transport).inc()

    def publish_positions(self, items: list[PositionItem]) -> None:
        if not items:
            return
        for sub in list(self.subscribers):
            if sub.positions:
                mine = [p for p in items if sub.sees_position(p)]
                if mine:
                    sub.offer_positions(mine)

    @contextlib.contextmanager
    def subscribe(self, sub: Subscriber) -> Iterator[Subscriber]:
        self.subscribers.add(sub)
        self.clients.labels(sub.transport).inc()
        try:
            yield sub
        finally:
            self.subscribers.discard(sub)
            self.clients.labels(sub.transport).dec()
            if sub.slow is not None:
                self.slow_consumers.labels(sub.transport).inc()
