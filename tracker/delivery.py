"""Delivery: stored alerts announced to the broker, to webhooks and to the live feeds.

The store writes an outbox row in the same transaction as the alert it announces, so nothing is
announced before it is saved; this module drains those rows. MQTT rows go out in order and the
first failure stops the MQTT part of a round (the rest waits for the broker); webhook rows are
delivered independently, each retried with back-off by the store. A row delivered to the broker is
then handed to every open live feed (SSE/WebSocket viewers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator

import aiohttp

from tracker.adapters.mqtt import MqttLink, PublishError
from tracker.adapters.store import Store
from tracker.adapters.webhooks import WebhookError, deliver
from tracker.config import Settings
from tracker.metrics import Metrics

log = logging.getLogger(__name__)

LiveAlerts = asyncio.Queue[dict[str, object]]


class Delivery:
    """The outbox loop and the live-feed fan-out; the service runs ``run()`` among its tasks.

    ``stopping`` tells the loop the service is shutting down (a cancellation swallowed by
    ``asyncio.wait_for`` on Python 3.11 must not keep it running).
    """

    def __init__(self, settings: Settings, metrics: Metrics, *, stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stopping = stopping
        self.listeners: set[LiveAlerts] = set()
        self._wake = asyncio.Event()
        self._store: Store | None = None
        self._link: MqttLink | None = None
        self._http: aiohttp.ClientSession | None = None

    def start(self, store: Store, link: MqttLink) -> None:
        self._store = store
        self._link = link
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
        """Deliver pending outbox rows: MQTT in order (stop at the first failure), webhooks independently."""
        store, link = self._store, self._link
        assert store is not None and link is not None
        sent = 0
        while True:
            rows = await store.pending_outbox()
            self.metrics.outbox_backlog.set(len(rows))
            if not rows:
                return sent
            delivered: list[int] = []
            failures: dict[str, list[int]] = {}
            broker_down = False
            for row in rows:
                payload = row["payload"]
                text = payload if isinstance(payload, str) else json.dumps(payload)
                channel = row["channel"]
                try:
                    if channel == "webhook":
                        if self._http is None:
                            raise WebhookError("webhooks are not configured in this process")
                        await deliver(self._http, row["topic"], text.encode(), self.settings.webhook_secret)
                    else:
                        if broker_down:
                            continue
                        await link.publish(row["topic"], text.encode(), qos=1)
                        self.fan_out(json.loads(text))
                except (PublishError, WebhookError) as exc:
                    failures.setdefault(str(exc), []).append(row["id"])
                    self.metrics.publish_failures.labels(channel).inc()
                    if channel == "mqtt":
                        broker_down = True  # keep MQTT order: the rest waits for the broker
                    continue
                delivered.append(row["id"])
                self.metrics.published.labels(channel).inc()
            await store.mark_delivered(delivered)
            for error, ids in failures.items():
                await store.mark_failed(ids, error)
            sent += len(delivered)
            if failures:
                if broker_down:
                    await link.wait_connected(self.settings.outbox_poll_s)
                return sent

    def fan_out(self, alert: dict[str, object]) -> None:
        """Live feeds (SSE/WebSocket) get alerts once they are stored and announced."""
        for queue in list(self.listeners):
            if queue.full():
                continue  # a slow viewer misses live items; the API lists every stored alert
            queue.put_nowait(alert)

    @contextlib.contextmanager
    def live_alerts(self, maxsize: int = 1000) -> Iterator[LiveAlerts]:
        """A live-feed viewer's queue, fed with every alert announced while it is open."""
        queue: LiveAlerts = asyncio.Queue(maxsize=maxsize)
        self.listeners.add(queue)
        try:
            yield queue
        finally:
            self.listeners.discard(queue)
