"""The live-feed fan-out and webhook filters, without I/O: who gets what, and when a viewer is too slow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from aiohttp import web

from tracker.adapters.api_webhooks import check_url
from tracker.adapters.store_webhooks import WebhookRow
from tracker.feeds import FeedEvent, Hub, PositionItem, Subscriber
from tracker.metrics import Metrics


def event(seq: int, device: str = "A", severity: str = "high", port: str | None = "santos") -> FeedEvent:
    return FeedEvent(seq, "raised", {"device_id": device, "severity": severity, "port": port, "kind": "geofence_enter"})


def fix(device: str) -> PositionItem:
    return PositionItem(device, "truck", datetime(2026, 1, 1, tzinfo=UTC), -46.3, -23.9, 1.0, 90.0, "santos")


async def test_each_viewer_gets_only_what_its_predicate_admits_and_a_full_queue_marks_it_slow() -> None:
    hub = Hub(Metrics())
    sees_a = Subscriber("ws", 2, 10, sees_alert=lambda e: e.alert["device_id"] == "A")
    everything = Subscriber("sse", 100, 10)
    with hub.subscribe(sees_a), hub.subscribe(everything):
        for seq, dev in ((1, "A"), (2, "B"), (3, "A")):
            hub.publish_alert(event(seq, dev))
        assert [sees_a.queue.get_nowait().seq for _ in range(sees_a.queue.qsize())] == [1, 3]
        assert everything.queue.qsize() == 3 and everything.slow is None
        for seq in (4, 5, 6):
            hub.publish_alert(event(seq, "A"))
        assert sees_a.slow is not None and "alert events waiting" in sees_a.slow
        assert sees_a.turned_slow.is_set()
        hub.publish_alert(event(7, "A"))  # nothing more is queued for a viewer being disconnected
        assert sees_a.queue.qsize() == 2
    assert hub.subscribers == set()
    assert hub.slow_consumers.labels("ws")._value.get() == 1.0  # counted once it is gone


async def test_positions_wait_for_the_next_batch_and_overflow_marks_the_viewer_slow() -> None:
    hub = Hub(Metrics())
    viewer = Subscriber("ws", 10, 3, alerts=False, positions=True, sees_position=lambda p: p.device_id != "X")
    alerts_only = Subscriber("ws", 10, 3)
    with hub.subscribe(viewer), hub.subscribe(alerts_only):
        assert hub.wants_positions
        hub.publish_positions([fix("A"), fix("X"), fix("B")])
        hub.publish_alert(event(1))
        assert [p.device_id for p in viewer.take_positions()] == ["A", "B"]
        assert viewer.queue.empty()  # it did not subscribe to alerts
        assert alerts_only.pending_positions == []
        hub.publish_positions([fix("A"), fix("B"), fix("C"), fix("D")])
        assert viewer.slow is not None and "positions waiting" in viewer.slow


def hook(**filters: tuple[str, ...]) -> WebhookRow:
    return WebhookRow(
        id=uuid.uuid4(),
        org="o",
        role="operator",
        devices=None,
        created_by="t",
        url="https://example.org/h",
        ports=filters.get("ports", ()),
        severities=filters.get("severities", ()),
        kinds=filters.get("kinds", ()),
        events=filters.get("events", ("raised", "updated")),
        from_seq=10,
        created_at=datetime.now(UTC),
    )


def test_webhook_filters_select_port_severity_kind_event_and_only_later_events() -> None:
    assert hook().matches(event(11))
    assert not hook().matches(event(10))  # recorded before the webhook existed
    assert hook(ports=("santos",)).matches(event(11)) and not hook(ports=("rotterdam",)).matches(event(11))
    assert not hook(ports=("santos",)).matches(event(11, port=None))
    assert hook(severities=("high",)).matches(event(11)) and not hook(severities=("low",)).matches(event(11))
    assert not hook(kinds=("dark",)).matches(event(11))
    updated = FeedEvent(12, "updated", event(12).alert, {"closes": True})
    assert not hook(events=("raised",)).matches(updated) and hook(events=("updated",)).matches(updated)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5432/",
        "http://10.1.2.3/hook",
        "https://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "ftp://8.8.8.8/x",
        "http://8.8.8.8/hook",
        "https://user:pw@8.8.8.8/x",
        "https://8.8.8.8:99999/x",
        "https://8.8.8.8/a b",
        "not a url",
    ],
)
async def test_a_webhook_may_not_point_inside_the_network(url: str) -> None:
    with pytest.raises(web.HTTPException) as refused:
        await check_url(url, allow_private=False)
    assert refused.value.status == 422


async def test_a_public_address_is_accepted_and_private_ones_when_allowed() -> None:
    assert await check_url("https://8.8.8.8/hook", allow_private=False) == "https://8.8.8.8/hook"
    assert await check_url("http://127.0.0.1:8080/hook", allow_private=True) == "http://127.0.0.1:8080/hook"
