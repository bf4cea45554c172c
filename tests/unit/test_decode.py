"""Decoding: every bad payload becomes a Rejected with a reason, never an exception."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker.adapters.decode import (
    Limits,
    decode_mqtt,
    decode_native,
    decode_osmand,
    decode_osmand_json,
    decode_owntracks,
    parse_ts,
)
from tracker.core.model import Ignored, Ping, Rejected

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PAYLOADS = Path(__file__).parent.parent / "payloads"


def native(obj: object, device: str = "TRUCK-1") -> Ping | Rejected | Ignored:
    return decode_native(device, json.dumps(obj).encode(), NOW)


def test_native_full_fix() -> None:
    p = native(
        {
            "ts": "2026-11-23T11:59:00Z",
            "lat": -23.95,
            "lon": -46.31,
            "speed": 12.5,
            "heading": 90,
            "accuracy": 8,
            "events": ["door_open"],
        }
    )
    assert isinstance(p, Ping)
    assert p.device_id == "TRUCK-1"
    assert p.ts == datetime(2026, 11, 23, 11, 59, tzinfo=UTC)
    assert (p.lat, p.lon, p.speed, p.heading, p.accuracy) == (-23.95, -46.31, 12.5, 90.0, 8.0)
    assert p.events == ("door_open",)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1795425600, datetime(2026, 11, 23, 9, 20, tzinfo=UTC)),
        (1795425600000, datetime(2026, 11, 23, 9, 20, tzinfo=UTC)),
        ("1795425600", datetime(2026, 11, 23, 9, 20, tzinfo=UTC)),
        ("2026-11-23T09:20:00+00:00", datetime(2026, 11, 23, 9, 20, tzinfo=UTC)),
        ("2026-11-23T06:20:00-03:00", datetime(2026, 11, 23, 9, 20, tzinfo=UTC)),
        ("2026-11-23T09:20:00", datetime(2026, 11, 23, 9, 20, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(ts: object, expected: datetime) -> None:
    assert parse_ts(ts) == expected


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[1, 2]", "not_object"),
        (b'{"lat": 1, "lon": 2}', "missing_field"),
        (b'{"ts": 1795435200, "lon": 2}', "missing_field"),
        (b'{"ts": 1795435200, "lat": 91, "lon": 2}', "lat_out_of_range"),
        (b'{"ts": 1795435200, "lat": 1, "lon": -180.5}', "lon_out_of_range"),
        (b'{"ts": 1795435200, "lat": NaN, "lon": 2}', "not_finite"),
        (b'{"ts": 1795435200, "lat": 1, "lon": Infinity}', "not_finite"),
        (b'{"ts": 1795435200, "lat": 0, "lon": 0}', "null_island"),
        (b'{"ts": 1795435200, "lat": "x", "lon": 2}', "bad_type"),
        (b'{"ts": 1795435200, "lat": true, "lon": 2}', "bad_type"),
        (b'{"ts": "yesterday", "lat": 1, "lon": 2}', "bad_ts"),
        (b'{"ts": 1795435200, "lat": 1, "lon": 2, "events": ["boom"]}', "bad_event"),
        (b'{"ts": 1795435200, "lat": 1, "lon": 2, "events": "door_open"}', "bad_type"),
        (b'{"ts": 1795435200, "lat": 1, "lon": 2, "speed": -3}', "out_of_range"),
        (b'{"ts": 1795435200, "lat": 1, "lon": 2, "heading": 400}', "out_of_range"),
        (b'{"ts": 1, "lat": 1, "lon": 2}', "bad_ts"),
    ],
)
def test_native_rejections(payload: bytes, reason: str) -> None:
    r = decode_native("TRUCK-1", payload, NOW)
    assert isinstance(r, Rejected), r
    assert r.reason == reason, r
    assert r.device_id == "TRUCK-1"


def test_future_timestamp_is_rejected_but_small_clock_skew_is_not() -> None:
    ahead = (NOW + timedelta(minutes=6)).isoformat()
    skewed = (NOW + timedelta(minutes=4)).isoformat()
    r = native({"ts": ahead, "lat": 1, "lon": 2})
    assert isinstance(r, Rejected)
    assert r.reason == "future_ts"
    assert isinstance(native({"ts": skewed, "lat": 1, "lon": 2}), Ping)


def test_fix_older_than_retention_is_rejected() -> None:
    r = native({"ts": (NOW - timedelta(days=401)).isoformat(), "lat": 1, "lon": 2})
    assert isinstance(r, Rejected)
    assert r.reason == "too_old"
    assert isinstance(native({"ts": (NOW - timedelta(days=30)).isoformat(), "lat": 1, "lon": 2}), Ping)


def test_oversize_payload() -> None:
    big = json.dumps({"ts": 1795435200, "lat": 1, "lon": 2, "pad": "x" * 70000}).encode()
    r = decode_native("T1", big, NOW, Limits(max_payload_bytes=65536))
    assert isinstance(r, Rejected)
    assert r.reason == "too_large"


def test_bad_device_id_from_topic() -> None:
    r = decode_mqtt("trackers/bad id!/ping", b'{"ts": 1795435200, "lat": 1, "lon": 2}', NOW)
    assert isinstance(r, Rejected)
    assert r.reason == "bad_device_id"
    assert r.device_id is None


def test_unknown_topic() -> None:
    r = decode_mqtt("trackers/x/other", b"{}", NOW)
    assert isinstance(r, Rejected)
    assert r.reason == "unknown_topic"


def test_deeply_nested_json_does_not_crash() -> None:
    r = decode_native("T1", b"[" * 100000 + b"]" * 100000, NOW, Limits(max_payload_bytes=10**6))
    assert isinstance(r, Rejected)


# OwnTracks: https://owntracks.org/booklet/tech/json/ (_type location; tst epoch s; vel km/h; acc m)
def test_owntracks_location() -> None:
    body = {
        "_type": "location",
        "lat": -12.05,
        "lon": -77.14,
        "tst": 1795435200,
        "acc": 12,
        "vel": 36,
        "cog": 270,
        "tid": "t1",
        "batt": 80,
    }
    p = decode_owntracks("fleet", "truck7", json.dumps(body).encode(), NOW)
    assert isinstance(p, Ping)
    assert p.device_id == "fleet.truck7"
    assert p.speed is not None
    assert math.isclose(p.speed, 10.0)
    assert p.heading == 270
    assert p.accuracy == 12
    assert p.source == "owntracks"


def test_owntracks_non_location_is_ignored_not_dead_lettered() -> None:
    r = decode_mqtt("owntracks/fleet/truck7", b'{"_type": "lwt", "tst": 1795435200}', NOW)
    assert isinstance(r, Ignored)
    assert r.kind == "owntracks:lwt"


def test_owntracks_missing_tst() -> None:
    r = decode_mqtt("owntracks/fleet/truck7", b'{"_type": "location", "lat": 1, "lon": 2}', NOW)
    assert isinstance(r, Rejected)
    assert r.reason == "missing_field"


def _osmand_samples() -> list[dict[str, object]]:
    return [json.loads(line) for line in (PAYLOADS / "osmand_samples.jsonl").read_text().splitlines() if line]


def test_osmand_real_samples_decode_or_reject_cleanly() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    archive = Limits(max_age_s=20 * 365 * 86400.0)  # the samples date from 2013-2025
    results = []
    for sample in _osmand_samples():
        if sample["method"] == "GET":
            query = dict(parse_qsl(urlsplit(str(sample["uri"])).query))
            results.append(decode_osmand(query, now, archive))
        else:
            results.append(decode_osmand_json(json.dumps(sample["body"]).encode(), now, archive))
    pings = [r for r in results if isinstance(r, Ping)]
    rejected = [r for r in results if isinstance(r, Rejected)]
    assert len(pings) + len(rejected) == 15
    # cell/wifi-only request and the one without an id are the only ones without a usable fix
    assert sorted(r.reason for r in rejected) == ["bad_device_id", "missing_field"]
    knots = next(p for p in pings if p.device_id == "123456789012345")
    assert knots.speed is not None
    assert math.isclose(knots.speed, 40 * 0.514444)
    assert knots.events == ("ignition_on",)
    located = [p for p in pings if p.device_id == "123456" and p.lat == 60.0]
    assert located


def test_osmand_without_timestamp_uses_receive_time() -> None:
    p = decode_osmand({"id": "T9", "lat": "-23.9", "lon": "-46.3"}, NOW)
    assert isinstance(p, Ping)
    assert p.ts == NOW


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    for topic in ("trackers/T1/ping", "owntracks/u/d", "junk"):
        assert isinstance(decode_mqtt(topic, payload, NOW), Ping | Rejected | Ignored)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=4,
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "ts": json_values,
            "lat": json_values,
            "lon": json_values,
            "speed": json_values,
            "events": json_values,
            "heading": json_values,
            "accuracy": json_values,
        },
    )
)
def test_arbitrary_json_objects_never_raise(obj: dict[str, object]) -> None:
    result = decode_native("T1", json.dumps(obj).encode(), NOW)
    if isinstance(result, Ping):
        assert -90 <= result.lat <= 90
        assert -180 <= result.lon <= 180
        assert math.isfinite(result.lat)
        assert math.isfinite(result.lon)
        assert result.ts <= NOW + timedelta(minutes=5)
