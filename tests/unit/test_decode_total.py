"""Every decoder is total: whatever bytes, JSON values or parameters arrive, it returns a value.

The named cases are inputs that once raised (offsets past year 9999 or before year 1, integers
over Python's digit limit, deep nesting); the properties feed arbitrary input to every public
decoder. A Rejected's reason and detail and an Ignored's kind must also be storable text
(no NUL, no lone surrogate) and, for kinds, a member of the closed label set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker.adapters import decode
from tracker.adapters.decode import (
    IGNORED_KINDS,
    Limits,
    decode_inspection,
    decode_mqtt,
    decode_native,
    decode_osmand,
    decode_osmand_json,
    decode_owntracks,
    inspection_from_json,
    safe_text,
    text_problem,
)
from tracker.core.model import Ignored, Inspection, Ping, Rejected

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BIG = Limits(max_payload_bytes=10**6)
DIGITS_5000 = "7" * 5000
Result = Ping | Rejected | Ignored | Inspection


def assert_clean(result: Result) -> None:
    """The invariants every decoder result keeps, whatever the input was."""
    assert isinstance(result, Ping | Rejected | Ignored | Inspection), result
    if isinstance(result, Rejected):
        assert result.reason and text_problem(result.reason) is None
        assert text_problem(result.detail) is None, result
        assert result.device_id is None or decode.DEVICE_ID_RE.match(result.device_id)
    elif isinstance(result, Ignored):
        assert result.kind in IGNORED_KINDS
    elif isinstance(result, Ping):
        assert -90 <= result.lat <= 90 and -180 <= result.lon <= 180
        assert math.isfinite(result.lat) and math.isfinite(result.lon)
        assert result.ts.tzinfo is not None
        assert result.ts <= NOW + timedelta(minutes=5)
    else:
        for text in (result.facility, result.seal, result.inspection_id):
            assert text is None or text_problem(text) is None


# ---- the named crashers ---------------------------------------------------------------------------

FAR_FUTURE = "9999-12-31T23:59:59-12:00"  # UTC would be in the year 10000
FAR_PAST = "0001-01-01T00:00:00+01:00"  # UTC would be in the year 0


@pytest.mark.parametrize("ts", [FAR_FUTURE, FAR_PAST])
def test_offset_past_the_calendar_is_bad_ts_for_native(ts: str) -> None:
    payload = json.dumps({"ts": ts, "lat": -24.3, "lon": -46.2}).encode()
    r = decode_mqtt("trackers/X/ping", payload, NOW)
    assert isinstance(r, Rejected)
    assert (r.reason, r.device_id) == ("bad_ts", "X")
    assert "out of range" in r.detail


@pytest.mark.parametrize("ts", [FAR_FUTURE, FAR_PAST])
def test_offset_past_the_calendar_is_bad_ts_for_owntracks(ts: str) -> None:
    payload = json.dumps({"_type": "location", "tst": ts, "lat": -24.3, "lon": -46.2}).encode()
    r = decode_mqtt("owntracks/fleet/t7", payload, NOW)
    assert isinstance(r, Rejected)
    assert (r.reason, r.source) == ("bad_ts", "owntracks")


@pytest.mark.parametrize("ts", [FAR_FUTURE, FAR_PAST])
def test_offset_past_the_calendar_is_bad_ts_for_customs(ts: str) -> None:
    payload = json.dumps({"container_no": "CSQU3054383", "result": "cleared", "ts": ts}).encode()
    r = decode_inspection(payload, NOW)
    assert isinstance(r, Rejected)
    assert (r.reason, r.source) == ("bad_ts", "customs")


@pytest.mark.parametrize("ts", [FAR_FUTURE, FAR_PAST])
def test_offset_past_the_calendar_is_bad_ts_for_osmand(ts: str) -> None:
    r = decode_osmand({"id": "T1", "lat": "-24.3", "lon": "-46.2", "timestamp": ts}, NOW)
    assert isinstance(r, Rejected)
    assert r.reason == "bad_ts"
    body = {"device_id": "T1", "location": {"timestamp": ts, "coords": {"latitude": -24.3, "longitude": -46.2}}}
    r = decode_osmand_json(json.dumps(body).encode(), NOW)
    assert isinstance(r, Rejected)
    assert r.reason == "bad_ts"


def test_integer_over_the_digit_limit_is_bad_json_everywhere() -> None:
    native = f'{{"ts": 1795435200, "lat": {DIGITS_5000}, "lon": 2}}'.encode()
    owntracks = f'{{"_type": "location", "tst": {DIGITS_5000}, "lat": 1, "lon": 2}}'.encode()
    customs = f'{{"container_no": "CSQU3054383", "result": "cleared", "ts": {DIGITS_5000}}}'.encode()
    osmand = f'{{"device_id": "T1", "location": {{"timestamp": {DIGITS_5000}, "coords": {{}}}}}}'.encode()
    results = [
        decode_mqtt("trackers/T1/ping", native, NOW),
        decode_mqtt("owntracks/u/d", owntracks, NOW),
        decode_inspection(customs, NOW),
        decode_osmand_json(osmand, NOW),
    ]
    for r in results:
        assert isinstance(r, Rejected), r
        assert r.reason == "bad_json", r
        assert "4300 digits" in r.detail


def test_integer_too_large_for_a_float_is_out_of_range_not_an_overflow() -> None:
    big = "9" * 4000  # under the digit limit, far over float's range
    r = decode_native("T1", f'{{"ts": 1795435200, "lat": {big}, "lon": 2}}'.encode(), NOW)
    assert isinstance(r, Rejected)
    assert r.reason == "out_of_range"
    r = decode_native("T1", f'{{"ts": {big}, "lat": 1, "lon": 2}}'.encode(), NOW)
    assert isinstance(r, Rejected)
    assert r.reason == "bad_ts"
    r = decode_osmand({"id": "T1", "lat": big, "lon": "2"}, NOW)
    assert isinstance(r, Rejected)  # float("999...") is inf: not finite
    assert r.reason == "not_finite"


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
def test_ten_thousand_levels_of_nesting_are_bad_json(opening: bytes) -> None:
    closing = b"]" if opening == b"[" else b"}"
    payload = opening * 10_000 + b"1" + closing * 10_000
    decoders: list[Callable[[], Result]] = [
        lambda: decode_mqtt("trackers/T1/ping", payload, NOW, BIG),
        lambda: decode_mqtt("owntracks/u/d", payload, NOW, BIG),
        lambda: decode_inspection(payload, NOW, BIG),
        lambda: decode_osmand_json(payload, NOW, BIG),
    ]
    for run in decoders:
        r = run()
        assert isinstance(r, Rejected)
        assert r.reason == "bad_json"
        assert r.detail == "JSON nested too deeply"


def test_a_device_id_that_is_a_deep_structure_is_described_not_printed() -> None:
    nested: Any = "x"
    for _ in range(500):
        nested = [nested]
    body = {"device_id": nested, "location": {"timestamp": 1795435200, "coords": {"latitude": 1, "longitude": 2}}}
    r = decode_osmand_json(json.dumps(body).encode(), NOW, BIG)
    assert isinstance(r, Rejected)
    assert r.reason == "bad_device_id"
    assert "a JSON list" in r.detail


def test_owntracks_type_outside_the_known_set_is_counted_as_other() -> None:
    for kind in ("\ud800", "x" * 32, "lwt\x00", "LOCATION"):
        payload = json.dumps({"_type": kind}).encode()
        r = decode_mqtt("owntracks/fleet/t7", payload, NOW)
        assert isinstance(r, Ignored), kind
        assert r.kind == "owntracks:other"
    r = decode_mqtt("owntracks/fleet/t7", b'{"_type": "transition"}', NOW)
    assert isinstance(r, Ignored)
    assert r.kind == "owntracks:transition"


@pytest.mark.parametrize("field", ["facility", "seal", "inspection_id"])
@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "ok\udfff"])
def test_inspection_text_postgres_cannot_hold_is_rejected(field: str, bad: str) -> None:
    obj = {"container_no": "CSQU3054383", "result": "cleared", "ts": NOW.isoformat(), field: bad}
    r = inspection_from_json(obj, NOW)
    assert isinstance(r, Rejected)
    assert r.reason == "bad_text"
    r = decode_inspection(json.dumps(obj).encode(), NOW)
    assert isinstance(r, Rejected)
    assert r.reason == "bad_text"


def test_inspection_result_must_be_a_string() -> None:
    obj = {"container_no": "CSQU3054383", "result": ["cleared"], "ts": NOW.isoformat()}
    r = inspection_from_json(obj, NOW)
    assert isinstance(r, Rejected)
    assert r.reason == "bad_result"


def test_details_quoting_device_text_are_storable() -> None:
    r = decode_native("T1", json.dumps({"ts": "\x00\ud800", "lat": 1, "lon": 2}).encode(), NOW)
    assert isinstance(r, Rejected)
    assert r.reason == "bad_ts"
    assert text_problem(r.detail) is None
    assert safe_text("a\x00b\ud800") == "a\\x00b\\ud800"


def test_an_unexpected_exception_becomes_a_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last-resort guard: a bug in any helper is a dead letter naming the exception."""

    def broken(*_args: object) -> tuple[float, float]:
        raise ZeroDivisionError("division by zero \x00")

    monkeypatch.setattr(decode, "_position", broken)
    body = json.dumps({"ts": 1795435200, "lat": 1, "lon": 2}).encode()
    for r in (
        decode_mqtt("trackers/T1/ping", body, NOW),
        decode_native("T1", body, NOW),
        decode_owntracks(
            "u", "d", json.dumps({"_type": "location", "tst": 1795435200, "lat": 1, "lon": 2}).encode(), NOW
        ),
        decode_osmand({"id": "T1", "lat": "1", "lon": "2"}, NOW),
    ):
        assert isinstance(r, Rejected)
        assert r.reason == "decode_error"
        assert r.detail.startswith("ZeroDivisionError: division by zero")
        assert text_problem(r.detail) is None

    def broken_time(*_args: object) -> datetime:
        raise MemoryError

    monkeypatch.setattr(decode, "_check_time", broken_time)
    ri = decode_inspection(json.dumps({"container_no": "CSQU3054383", "result": "held", "ts": 1}).encode(), NOW)
    assert isinstance(ri, Rejected)
    assert (ri.reason, ri.detail, ri.source) == ("decode_error", "MemoryError: ", "customs")


# ---- properties ------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**4000)
    | st.text(max_size=30)
    | st.sampled_from([FAR_FUTURE, FAR_PAST, "1795435200", "2026-11-23T11:59:00Z", "\x00", "\ud800", ""])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=6,
)
KEYS = [
    "ts",
    "tst",
    "lat",
    "lon",
    "speed",
    "heading",
    "accuracy",
    "events",
    "_type",
    "vel",
    "cog",
    "acc",
    "container_no",
    "result",
    "facility",
    "seal",
    "inspection_id",
    "device_id",
    "location",
]
objects = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8)
topics = st.sampled_from(["trackers/T1/ping", "owntracks/u/d", "customs/inspections", "trackers/x y/ping"]) | st.text(
    max_size=40
)


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def everything(payload: bytes) -> list[Result]:
    return [
        decode_mqtt("trackers/T1/ping", payload, NOW),
        decode_mqtt("owntracks/u/d", payload, NOW),
        decode_native("T1", payload, NOW),
        decode_owntracks("u", "d", payload, NOW),
        decode_osmand_json(payload, NOW),
        decode_inspection(payload, NOW),
    ]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_into_every_decoder(payload: bytes) -> None:
    for r in everything(payload):
        assert_clean(r)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_values_into_every_decoder(value: Any) -> None:
    for r in everything(encode(value)):
        assert_clean(r)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(objects, st.sampled_from(["location", "lwt", "\ud800", None]))
def test_arbitrary_objects_with_the_decoders_keys(obj: dict[str, Any], kind: str | None) -> None:
    if kind is not None:
        obj = {**obj, "_type": kind}
    payload = encode(obj)
    for r in everything(payload):
        assert_clean(r)
    assert_clean(inspection_from_json(obj, NOW))
    osmand = {"device_id": "T1", "location": {"timestamp": obj.get("ts"), "coords": obj}}
    assert_clean(decode_osmand_json(encode(osmand), NOW))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "deviceid",
                "lat",
                "lon",
                "location",
                "timestamp",
                "speed",
                "bearing",
                "heading",
                "accuracy",
                "hacc",
                "ignition",
            ]
        ),
        st.text(max_size=40) | st.sampled_from([FAR_FUTURE, FAR_PAST, DIGITS_5000, "nan", "1e999"]),
        max_size=8,
    )
)
def test_arbitrary_osmand_parameters(params: dict[str, str]) -> None:
    assert_clean(decode_osmand(params, NOW))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(topics, st.binary(max_size=256))
def test_arbitrary_topics(topic: str, payload: bytes) -> None:
    assert_clean(decode_mqtt(topic, payload, NOW))


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=1, max_value=20_000), st.sampled_from([b"[", b'{"k":']))
def test_arbitrary_nesting_depth(depth: int, opening: bytes) -> None:
    closing = b"]" if opening == b"[" else b"}"
    payload = opening * depth + b"0" + closing * depth
    for r in [
        decode_mqtt("trackers/T1/ping", payload, NOW, BIG),
        decode_mqtt("owntracks/u/d", payload, NOW, BIG),
        decode_osmand_json(payload, NOW, BIG),
        decode_inspection(payload, NOW, BIG),
    ]:
        assert_clean(r)
        assert isinstance(r, Rejected)


def test_ids_with_a_trailing_newline_are_refused() -> None:
    """``$`` matches before a final newline: ``A\\n`` would be a second device that prints like ``A``."""
    from tracker.adapters.decode import DEVICE_ID_RE

    assert DEVICE_ID_RE.match("TRUCK-1")
    assert not DEVICE_ID_RE.match("TRUCK-1\n")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    item = decode_mqtt("trackers/TRUCK-1\n/ping", b'{"ts": 1764547200, "lat": -23.9, "lon": -46.3}', now)
    assert isinstance(item, Rejected)
