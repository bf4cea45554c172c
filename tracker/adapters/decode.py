"""Bytes from the wire to a ``Ping``, a ``Rejected`` or an ``Ignored`` — never an exception.

Three formats are understood: the native ``trackers/{id}/ping`` JSON, OwnTracks
``_type: location`` messages and OsmAnd / Traccar Client requests (query string or
JSON body). Each check names its reason code so dead letters can be counted by cause.
The current time is passed in: decoding is pure and deterministic.

Every public decoder is total: the named checks cover the failures we know of, and a
last-resort guard turns anything else into ``Rejected("decode_error", ...)`` so that a
payload can never stop ingest, whatever bug a future change brings in. Strings that end
up in a dead letter or a metric label are made safe first (PostgreSQL text holds no NUL,
UTF-8 holds no lone surrogate, and a label set must stay closed).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from tracker.core import iso6346
from tracker.core.model import SENSOR_EVENTS, Ignored, Inspection, InspectionResult, Ping, Rejected

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}\Z")
KNOTS_TO_MS = 0.514444
KMH_TO_MS = 1 / 3.6
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)

Decoded = Ping | Rejected | Ignored

OWNTRACKS_TYPES = frozenset(
    {
        "beacon",
        "card",
        "cmd",
        "configuration",
        "dump",
        "encrypted",
        "location",
        "lwt",
        "request",
        "status",
        "steps",
        "transition",
        "waypoint",
        "waypoints",
    }
)
"""Message types of the OwnTracks JSON format (booklet, "JSON" chapter); others are counted as ``other``."""

IGNORED_KINDS = frozenset({f"owntracks:{t}" for t in OWNTRACKS_TYPES - {"location"}} | {"owntracks:other"})
"""Every ``Ignored.kind`` a decoder can produce: a closed set, so it can label a metric."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Limits:
    """What the decoder accepts; from settings so production can be stricter than tests."""

    max_payload_bytes: int = 65536
    max_future_s: float = 300.0
    max_age_s: float = 400 * 86400.0  # older than the retention period: it would be dropped on arrival


class _BadError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def safe_text(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` and made storable: NUL and lone surrogates become visible escapes."""
    cut = text[:limit]
    return cut.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as PostgreSQL text, or None when it can."""
    if "\x00" in value:
        return "contains NUL"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate"
    return None


def _describe(value: Any) -> str:
    """A short, safe picture of a value that failed a check (never ``str()`` of a deep structure)."""
    if isinstance(value, str):
        return repr(value[:70])
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        return "an integer" if abs(value) > 10**30 else repr(value)
    return f"a JSON {type(value).__name__}"


def _total(source: str) -> Callable[[Callable[_P, _T]], Callable[_P, _T | Rejected]]:
    """Last resort: a decoder bug becomes a dead letter naming the exception, never an exception."""

    def wrap(decoder: Callable[_P, _T]) -> Callable[_P, _T | Rejected]:
        @functools.wraps(decoder)
        def total(*args: _P.args, **kwargs: _P.kwargs) -> _T | Rejected:
            try:
                return decoder(*args, **kwargs)
            except Exception as exc:
                try:
                    detail = f"{type(exc).__name__}: {exc}"
                except Exception:
                    detail = type(exc).__name__
                return Rejected("decode_error", safe_text(detail, 300), None, source)

        return total

    return wrap


def parse_ts(value: Any, field: str = "ts") -> datetime:
    """ISO-8601 (``Z`` or offset; naive means UTC), epoch seconds or epoch milliseconds.

    Epoch values above 1e11 are taken as milliseconds: 1e11 s is the year 5138, so
    the two ranges cannot be confused for any real fix.
    """
    if isinstance(value, bool):
        raise _BadError("bad_ts", f"{field} must be a time, got a boolean")
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return parse_ts(float(text), field)
        try:
            ts = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise _BadError("bad_ts", f"{field} {text[:40]!r} is not ISO-8601 or epoch") from None
        try:
            return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        except (OverflowError, ValueError):
            # e.g. 9999-12-31T23:59:59-12:00: the offset carries it past the year 9999
            raise _BadError("bad_ts", f"{field} {text[:40]!r} is out of range in UTC") from None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise _BadError("bad_ts", f"{field} is out of range") from None
        if not math.isfinite(number):
            raise _BadError("not_finite", f"{field} is not a finite number")
        if abs(number) > 1e11:
            number /= 1000.0
        try:
            return datetime.fromtimestamp(number, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise _BadError("bad_ts", f"{field} {value!r} is out of range") from None
    raise _BadError("bad_ts" if value is not None else "missing_field", f"{field} is missing or not a time")


def _number(obj: Mapping[str, Any], key: str, *, required: bool = False) -> float | None:
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise _BadError("missing_field", f"{key} is required")
        return None
    if isinstance(value, bool):
        raise _BadError("bad_type", f"{key} must be a number")
    if isinstance(value, str):
        text = value
        try:
            value = float(text)
        except ValueError:
            raise _BadError("bad_type", f"{key} must be a number, got {text[:20]!r}") from None
    if not isinstance(value, int | float):
        raise _BadError("bad_type", f"{key} must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise _BadError("out_of_range", f"{key} is too large for a number") from None
    if not math.isfinite(number):
        raise _BadError("not_finite", f"{key} is not finite")
    return number


def _position(lat: float | None, lon: float | None) -> tuple[float, float]:
    if lat is None or lon is None:
        raise _BadError("missing_field", "lat and lon are required")
    if not -90.0 <= lat <= 90.0:
        raise _BadError("lat_out_of_range", f"lat {lat} outside [-90, 90]")
    if not -180.0 <= lon <= 180.0:
        raise _BadError("lon_out_of_range", f"lon {lon} outside [-180, 180]")
    if lat == 0.0 and lon == 0.0:
        # receivers without a fix report 0,0; a real port is never there
        raise _BadError("null_island", "0,0 is a receiver without a fix")
    return lat, lon


def _check_time(ts: datetime, now: datetime, limits: Limits) -> datetime:
    if ts > now + timedelta(seconds=limits.max_future_s):
        raise _BadError("future_ts", f"ts {ts.isoformat()} is more than {limits.max_future_s:.0f} s ahead")
    if ts < EARLIEST:
        raise _BadError("bad_ts", f"ts {ts.isoformat()} is before 2000")
    if ts < now - timedelta(seconds=limits.max_age_s):
        raise _BadError("too_old", f"ts {ts.isoformat()} is older than {limits.max_age_s / 86400:.0f} days")
    return ts


def _device_id(value: Any) -> str:
    if not isinstance(value, str) or not DEVICE_ID_RE.match(value):
        raise _BadError("bad_device_id", f"device id {_describe(value)} is not [A-Za-z0-9_.:-]{{1,64}}")
    return value


def _events(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _BadError("bad_type", "events must be a list of strings")
    unknown = [v for v in value if v not in SENSOR_EVENTS]
    if unknown:
        raise _BadError("bad_event", f"unknown events {unknown[:5]}; known: {sorted(SENSOR_EVENTS)}")
    return tuple(dict.fromkeys(value))


def _optional_range(value: float | None, low: float, high: float, name: str) -> float | None:
    if value is None:
        return None
    if not low <= value <= high:
        raise _BadError("out_of_range", f"{name} {value} outside [{low}, {high}]")
    return value


def _json_object(payload: bytes, limits: Limits) -> dict[str, Any]:
    if len(payload) > limits.max_payload_bytes:
        raise _BadError("too_large", f"{len(payload)} bytes > {limits.max_payload_bytes}")
    try:
        obj = json.loads(payload)
    except RecursionError:
        raise _BadError("bad_json", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer over Python's digit limit
        raise _BadError("bad_json", safe_text(str(exc), 200)) from None
    if not isinstance(obj, dict):
        raise _BadError("not_object", f"payload is a JSON {type(obj).__name__}, not an object")
    return obj


@_total("native")
def decode_native(device_id: str, payload: bytes, now: datetime, limits: Limits = Limits()) -> Decoded:
    """``trackers/{id}/ping``: the device id comes from the topic, which the broker ACL ties to the login."""
    try:
        dev = _device_id(device_id)
        obj = _json_object(payload, limits)
        lat, lon = _position(_number(obj, "lat", required=True), _number(obj, "lon", required=True))
        ts = _check_time(parse_ts(obj.get("ts")), now, limits)
        return Ping(
            device_id=dev,
            ts=ts,
            lon=lon,
            lat=lat,
            speed=_optional_range(_number(obj, "speed"), 0.0, 150.0, "speed"),
            heading=_optional_range(_number(obj, "heading"), 0.0, 360.0, "heading"),
            accuracy=_optional_range(_number(obj, "accuracy"), 0.0, 100_000.0, "accuracy"),
            events=_events(obj.get("events")),
            source="native",
            received=now,
        )
    except _BadError as bad:
        return Rejected(bad.reason, bad.detail, device_id if DEVICE_ID_RE.match(device_id) else None, "native")


@_total("owntracks")
def decode_owntracks(user: str, device: str, payload: bytes, now: datetime, limits: Limits = Limits()) -> Decoded:
    """OwnTracks JSON (``owntracks/{user}/{device}``); only ``_type: location`` carries a fix.

    The device id is ``{user}.{device}`` so two users' phones called "phone" stay apart.
    """
    dev_text = f"{user}.{device}"
    try:
        dev = _device_id(dev_text)
        obj = _json_object(payload, limits)
        kind = obj.get("_type")
        if kind != "location":
            if isinstance(kind, str) and kind:
                # the type is the device's text: only a known one may become a metric label
                return Ignored(kind=f"owntracks:{kind if kind in OWNTRACKS_TYPES else 'other'}", device_id=dev)
            raise _BadError("missing_field", "_type is required")
        lat, lon = _position(_number(obj, "lat", required=True), _number(obj, "lon", required=True))
        ts = _check_time(parse_ts(obj.get("tst"), "tst"), now, limits)
        vel = _number(obj, "vel")  # km/h
        cog = _number(obj, "cog")
        acc = _number(obj, "acc")
        return Ping(
            device_id=dev,
            ts=ts,
            lon=lon,
            lat=lat,
            speed=None if vel is None or vel < 0 else vel * KMH_TO_MS,
            heading=None if cog is None or cog < 0 else _optional_range(cog, 0.0, 360.0, "cog"),
            accuracy=None if acc is None or acc < 0 else acc,
            source="owntracks",
            received=now,
        )
    except _BadError as bad:
        return Rejected(bad.reason, bad.detail, dev_text if DEVICE_ID_RE.match(dev_text) else None, "owntracks")


@_total("osmand")
def decode_osmand(params: Mapping[str, str], now: datetime, limits: Limits = Limits()) -> Decoded:
    """OsmAnd / Traccar Client query parameters (speed in knots, as Traccar defines the protocol)."""
    device = params.get("id") or params.get("deviceid")
    try:
        dev = _device_id(device)
        lat = _number(params, "lat")
        lon = _number(params, "lon")
        if (lat is None or lon is None) and params.get("location"):
            parts = params["location"].split(",")
            if len(parts) != 2:
                raise _BadError("bad_type", "location must be 'lat,lon'")
            lat = _number({"lat": parts[0]}, "lat")
            lon = _number({"lon": parts[1]}, "lon")
        lat, lon = _position(lat, lon)
        raw_ts = params.get("timestamp")
        # the protocol lets a client omit the time; the receive time is then the best fix time there is
        ts = now if not raw_ts else parse_ts(raw_ts.replace(" ", "T") if "-" in raw_ts else raw_ts, "timestamp")
        ts = _check_time(ts, now, limits)
        speed = _number(params, "speed")
        heading = _number(params, "bearing")
        if heading is None:
            heading = _number(params, "heading")
        accuracy = _number(params, "accuracy")
        if accuracy is None:
            accuracy = _number(params, "hacc")
        events: list[str] = []
        ignition = params.get("ignition")
        if ignition in ("true", "false"):
            events.append("ignition_on" if ignition == "true" else "ignition_off")
        return Ping(
            device_id=dev,
            ts=ts,
            lon=lon,
            lat=lat,
            speed=None if speed is None or speed < 0 else speed * KNOTS_TO_MS,
            heading=None if heading is None or heading < 0 else _optional_range(heading, 0.0, 360.0, "bearing"),
            accuracy=None if accuracy is None or accuracy < 0 else accuracy,
            events=tuple(events),
            source="osmand",
            received=now,
        )
    except _BadError as bad:
        ok = isinstance(device, str) and DEVICE_ID_RE.match(device)
        return Rejected(bad.reason, bad.detail, device if ok else None, "osmand")


@_total("osmand")
def decode_osmand_json(body: bytes, now: datetime, limits: Limits = Limits()) -> Decoded:
    """Traccar Client's JSON body (``{"location": {"coords": {...}}, "device_id": ...}``; speed in m/s)."""
    try:
        obj = _json_object(body, limits)
        loc = obj.get("location")
        if not isinstance(loc, dict):
            raise _BadError("missing_field", "location object is required")
        coords = loc.get("coords")
        if not isinstance(coords, dict):
            raise _BadError("missing_field", "location.coords object is required")
        dev = _device_id(obj.get("device_id"))
        lat, lon = _position(_number(coords, "latitude"), _number(coords, "longitude"))
        ts = _check_time(parse_ts(loc.get("timestamp"), "timestamp"), now, limits)
        speed = _number(coords, "speed")
        heading = _number(coords, "heading")
        accuracy = _number(coords, "accuracy")
        return Ping(
            device_id=dev,
            ts=ts,
            lon=lon,
            lat=lat,
            speed=None if speed is None or speed < 0 else speed,
            heading=None if heading is None or heading < 0 else _optional_range(heading, 0.0, 360.0, "heading"),
            accuracy=None if accuracy is None or accuracy < 0 else accuracy,
            source="osmand",
            received=now,
        )
    except _BadError as bad:
        return Rejected(bad.reason, bad.detail, None, "osmand")


@_total("mqtt")
def decode_mqtt(topic: str, payload: bytes, now: datetime, limits: Limits = Limits()) -> Decoded:
    """Route a message by topic shape; an unexpected topic is a dead letter, not a crash."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "trackers" and parts[2] == "ping":
        return decode_native(parts[1], payload, now, limits)
    if len(parts) == 3 and parts[0] == "owntracks":
        return decode_owntracks(parts[1], parts[2], payload, now, limits)
    return Rejected("unknown_topic", f"no decoder for topic {topic[:100]!r}")


def _optional_text(obj: Mapping[str, Any], key: str, limit: int = 64) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise _BadError("bad_type", f"{key} must be a non-empty string of at most {limit} characters")
    problem = text_problem(value)
    if problem is not None:
        raise _BadError("bad_text", f"{key} {problem}")
    return value.strip()


@_total("customs")
def inspection_from_json(obj: Mapping[str, Any], now: datetime, limits: Limits = Limits()) -> Inspection | Rejected:
    """A customs decision; the container number must pass the ISO 6346 check digit (typos route nowhere)."""
    try:
        raw_no = obj.get("container_no")
        if not isinstance(raw_no, str):
            raise _BadError("missing_field", "container_no is required")
        try:
            container_no = iso6346.validate(raw_no)
        except ValueError as exc:
            raise _BadError("bad_container_no", str(exc)) from None
        try:
            raw_result = obj.get("result")
            if not isinstance(raw_result, str):
                raise ValueError(raw_result)
            result = InspectionResult(raw_result)
        except ValueError:
            raise _BadError("bad_result", f"result must be one of {[r.value for r in InspectionResult]}") from None
        ts = _check_time(parse_ts(obj.get("ts")), now, limits)
        return Inspection(
            container_no=container_no,
            result=result,
            ts=ts,
            facility=_optional_text(obj, "facility"),
            seal=_optional_text(obj, "seal"),
            inspection_id=_optional_text(obj, "inspection_id"),
        )
    except _BadError as bad:
        return Rejected(bad.reason, bad.detail, None, "customs")


@_total("customs")
def decode_inspection(payload: bytes, now: datetime, limits: Limits = Limits()) -> Inspection | Rejected:
    try:
        obj = _json_object(payload, limits)
    except _BadError as bad:
        return Rejected(bad.reason, bad.detail, None, "customs")
    return inspection_from_json(obj, now, limits)
