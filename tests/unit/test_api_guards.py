"""Pure parts of the API's hardening: closed metric labels, the auth-failure limiter, the token
cache bound, the ops/API route split and its settings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tracker.adapters.api import AuthLimiter, Principal, TokenCache, build_app, build_ops_app
from tracker.adapters.openapi import OPS_PATHS, document_for
from tracker.config import Settings
from tracker.metrics import Metrics
from tracker.service import Service


class FakeClock:
    """A settable monotonic clock so the token bucket's refill is exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wire_text_never_becomes_a_metric_label_and_metrics_still_render() -> None:
    m = Metrics()
    m.ignored.labels("owntracks:\ud800").inc()
    m.ignored.labels("owntracks:lwt").inc()
    m.received.labels("\ud800weird").inc()
    m.received.labels("trackers").inc()
    m.rejected.labels("bad json\x00").inc()
    m.rejected.labels("bad_json").inc()
    text = m.render().decode()
    assert 'tracker_messages_ignored_total{kind="other"} 1.0' in text
    assert 'tracker_messages_ignored_total{kind="owntracks:lwt"} 1.0' in text
    assert 'tracker_messages_received_total{source="other"} 1.0' in text
    assert 'tracker_messages_received_total{source="trackers"} 1.0' in text
    assert 'tracker_pings_rejected_total{reason="other"} 1.0' in text
    assert 'tracker_pings_rejected_total{reason="bad_json"} 1.0' in text


def test_reason_labels_are_capped() -> None:
    m = Metrics()
    for i in range(500):
        m.rejected.labels(f"reason_{i}").inc()
    values = {s.labels["reason"] for metric in m.rejected.counter.collect() for s in metric.samples}
    assert len(values) == m.rejected.max_values + 1
    assert "other" in values


def test_limiter_allows_a_burst_then_429_until_a_token_comes_back() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(burst=3, rate=0.5, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 2  # one token back at 0.5/s
    assert limiter.retry_after("10.0.0.2") is None  # per address
    clock.now += 1.0
    assert limiter.retry_after("10.0.0.1") == 1
    clock.now += 1.0
    assert limiter.retry_after("10.0.0.1") is None
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 2


def test_limiter_table_is_bounded_and_forgets_full_buckets() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(burst=5, rate=1.0, max_entries=100, clock=clock)
    for i in range(5000):
        limiter.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        assert len(limiter.table) <= 100
    clock.now += 60.0  # every bucket has refilled: entries expire
    limiter.failed("192.0.2.1")
    assert len(limiter.table) == 1


@pytest.mark.parametrize("rate", [1.0, 0.0])
def test_limiter_off_with_zero_burst(rate: float) -> None:
    limiter = AuthLimiter(burst=0, rate=rate)
    for _ in range(100):
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") is None


def test_token_cache_is_bounded() -> None:
    cache = TokenCache(ttl=30, max_size=50)
    for i in range(1000):
        cache.entries[f"{i:064x}"] = None if i % 2 else Principal(f"p{i}", "operator")
    assert len(cache.entries) == 50


def _paths(app: Any) -> set[str]:
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        out.add(str(info.get("path") or info.get("formatter")))
    return out


def test_ops_routes_leave_the_api_when_they_have_their_own_listener() -> None:
    async def build() -> tuple[set[str], set[str], set[str]]:
        svc = Service(Settings())
        return _paths(build_app(svc)), _paths(build_app(svc, ops_routes=False)), _paths(build_ops_app(svc))

    together, api_only, ops = asyncio.run(build())
    assert set(OPS_PATHS) <= together
    assert not set(OPS_PATHS) & api_only
    assert set(OPS_PATHS) <= ops
    assert not any(p.startswith("/v1/") for p in ops)
    assert not set(OPS_PATHS) & set(document_for(ops_routes=False)["paths"])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRACKER_HTTP_TLS_CERT": "/x.pem"}, "go together"),
        ({"TRACKER_OPS_PORT": "8080"}, "must differ"),
        ({"TRACKER_API_AUTH_FAIL_PER_S": "0"}, "must be > 0"),
        ({"TRACKER_API_TOKEN_CACHE_SIZE": "0"}, "must be positive"),
    ],
)
def test_settings_refuse_inconsistent_listener_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)
