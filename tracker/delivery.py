"""Delivery: stored alerts announced to the broker, to webhooks and to the live feeds.

The store writes an outbox row in the same transaction as the alert it announces, so nothing is
announced before it is saved; this module drains those rows. Each MQTT row is first recorded as a
numbered feed event (tracker/adapters/store_feeds.py) and handed to the open live feeds (SSE and
WebSocket viewers, tracker/feeds.py) and to the per-organisation webhook worker
(tracker/webhook_worker.py), whether or not the broker is up; then a round's MQTT rows are written at
once, in order, and their PUBACKs awaited together; a row that failed is retried once the broker is back
(the round then waits for it), one confirmed after it is delivered. A row refused because
the broker is away keeps no back-off: when the link is back the rows go out at once, in order, instead
of each waiting out a delay that grew with the outage. Rows of the
fleet-wide ``TRACKER_WEBHOOK_URLS`` are delivered independently, each retried with back-off by the
store. Positions of each committed batch reach the live feeds through ``positions()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from tracker.adapters.feed_scope import webhook_judge
from tracker.adapters.mqtt import MqttLink, PublishError
from tracker.adapters.ports import ApiService
from tracker.adapters.store import Store
from tracker.adapters.store_feeds import FeedStore
from tracker.adapters.store_webhooks import WebhookStore
from tracker.adapters.webhooks import WebhookError, deliver
from tracker.config import Settings
from tracker.core.model import DeviceKind, Ping
from tracker.core.state import DeviceState
from tracker.feeds import Hub, PositionItem
from tracker.metrics import Metrics
from tracker.webhook_worker import WebhookWorker

log = logging.getLogger(__name__)


class Delivery:
    """The outbox loop, the live-feed fan-out and the webhook worker; the service runs ``run()`` among its tasks.

    ``stopping`` tells the loop the service is shutting down (a cancellation swallowed by
    ``asyncio.wait_for`` on Python 3.11 must not keep it running).
    """

    def __init__(self, settings: Settings, metrics: Metrics, *, stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stopping = stopping
        self.hub = Hub(metrics)
        self.feed_store: FeedStore | None = None
        self.webhook_store: WebhookStore | None = None
        self.worker: WebhookWorker | None = None
        self._wake = asyncio.Event()
        self._store: Store | None = None
        self._link: MqttLink | None = None
        self._http: aiohttp.ClientSession | None = None

    def start(self, store: Store, link: MqttLink, api: ApiService) -> None:
        """``api``: the service as the API sees it, to judge webhook deliveries by their owner's scope."""
        self._store = store
        self._link = link
        self.feed_store = FeedStore(store.pool)
        self.webhook_store = WebhookStore(store.pool)
        self.worker = WebhookWorker(
            self.settings,
            self.metrics,
            self.webhook_store,
            self.feed_store,
            lambda hook: webhook_judge(api, hook),
            stopping=self.stopping,
        )
        if self.settings.webhook_urls:
            self._http = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def wake(self) -> None:
        """New outbox rows were committed: deliver now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """The outbox loop, with the webhook worker beside it: a failing worker never stops announcements."""
        webhooks = asyncio.create_task(self._webhooks(), name="webhooks")
        try:
            await self._outbox_loop()
        finally:
            webhooks.cancel()
            await asyncio.gather(webhooks, return_exceptions=True)

    async def _webhooks(self) -> None:
        assert self.worker is not None
        while not self.stopping():
            try:
                await self.worker.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook worker failed; restarting")
                await asyncio.sleep(1.0)

    async def _outbox_loop(self) -> None:
        while not self.stopping():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.outbox_poll_s)
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox drain failed; retrying")
                await asyncio.sleep(1.0)

    async def drain(self) -> int:
        """Deliver pending outbox rows: a round's MQTT rows written at once, in order, webhooks independently."""
        store, link, feeds = self._store, self._link, self.feed_store
        assert store is not None and link is not None and feeds is not None
        sent = 0
        while True:
            rows = await store.pending_outbox()
            self.metrics.outbox_backlog.set(len(rows))
            if not rows:
                return sent
            # numbered and shown on the live feeds once, in this order, even while the broker is away
            events = await feeds.record([row["id"] for row in rows if row["channel"] == "mqtt"])
            for event in events:
                self.hub.publish_alert(event)
            if events and self.worker is not None:
                self.worker.wake()
            delivered: list[int] = []
            failures: dict[str, list[int]] = {}
            waiting: dict[str, list[int]] = {}  # MQTT rows refused because the broker is away: no back-off
            broker_down = False
            # the round's MQTT rows are written at once, in order, and their PUBACKs awaited together: one at a
            # time, a burst of alerts (a hundred trucks entering at once) waited a round trip each behind the
            # ingest traffic; the broker keeps their order on the one connection
            announced = {
                row["id"]: asyncio.ensure_future(link.publish(row["topic"], _text(row["payload"]).encode(), qos=1))
                for row in rows
                if row["channel"] == "mqtt" and link.connected.is_set()
            }
            for row in rows:
                channel = row["channel"]
                try:
                    if channel == "webhook":
                        if self._http is None:
                            raise WebhookError("webhooks are not configured in this process")
                        text = _text(row["payload"])
                        await deliver(self._http, row["topic"], text.encode(), self.settings.webhook_secret)
                    else:
                        # already written: a row confirmed after an earlier one failed is delivered all the same
                        # (announcing it again would repeat it); the failed ones are retried
                        sending = announced.get(row["id"])
                        if sending is None:
                            raise PublishError("not connected")
                        await sending
                except (PublishError, WebhookError) as exc:
                    self.metrics.publish_failures.labels(channel).inc()
                    if channel == "mqtt":
                        broker_down = True  # the next round waits for the broker
                    away = channel == "mqtt" and not link.connected.is_set()
                    (waiting if away else failures).setdefault(str(exc), []).append(row["id"])
                    continue
                delivered.append(row["id"])
                self.metrics.published.labels(channel).inc()
            await store.mark_delivered(delivered)
            for error, ids in failures.items():
                await store.mark_failed(ids, error)
            for error, ids in waiting.items():
                await store.mark_failed(ids, error, backoff=False)
            sent += len(delivered)
            if failures or waiting:
                if broker_down:
                    await link.wait_connected(self.settings.outbox_poll_s)
                return sent

    def positions(
        self,
        pings: Sequence[tuple[Ping, object]],
        states: Mapping[str, DeviceState],
        devices: Mapping[str, DeviceKind],
        port_of: Callable[[str], str | None],
    ) -> None:
        """A committed batch's fixes for the live map (nothing is built while nobody watches positions).

        ``port_of`` names the port of a fence id: a device's port is that of a fence it is inside.
        """
        if not self.hub.wants_positions:
            return
        items = []
        for ping, _flags in pings:
            state = states.get(ping.device_id)
            port = next((p for p in map(port_of, sorted(state.fences)) if p), None) if state is not None else None
            kind = devices.get(ping.device_id) or (state.kind if state is not None else DeviceKind.TRUCK)
            items.append(
                PositionItem(
                    ping.device_id,
                    kind.value,
                    ping.ts,
                    ping.lon,
                    ping.lat,
                    ping.speed,
                    ping.heading,
                    port,
                )
            )
        self.hub.publish_positions(items)


def _text(payload: object) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload)
