"""Fence model and the loader that turns a GeoJSON fence set into validated, immutable fences.

Fence files come from GIS teams and port authorities, so the loader is strict: a fence that silently
lands in the wrong place (swapped coordinates, a projected CRS read as degrees, a bow-tie polygon whose
"inside" is not what the drawing suggests) would produce false security alerts or, worse, none. Every
rejection names the feature so the person who drew it can find it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import shapely
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from geofences.circle import Circle, CircleError
from geofences.geo import buffer_m

__all__ = [
    "DEFAULT_CORRIDOR_WIDTH_M",
    "WGS84_CRS_NAMES",
    "Fence",
    "FenceError",
    "FenceKind",
    "FenceSet",
    "TimeWindow",
    "available_ports",
    "load_fence_set",
    "load_port",
]

DEFAULT_CORRIDOR_WIDTH_M = 30.0
"""A two-lane port road with its shoulders; wide enough that GPS noise on the road stays inside."""

WGS84_CRS_NAMES = frozenset(
    {
        "urn:ogc:def:crs:OGC:1.3:CRS84",
        "urn:ogc:def:crs:OGC::CRS84",
        "OGC:CRS84",
        "CRS84",
        "EPSG:4326",
        "urn:ogc:def:crs:EPSG::4326",
        "urn:ogc:def:crs:EPSG:4326",
        "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
        "http://www.opengis.net/def/crs/EPSG/0/4326",
    }
)
"""CRS names taken to mean lon/lat on WGS84. EPSG:4326 is formally lat/lon, but GeoJSON writers that
name it still emit lon/lat, and swapped files are caught by the range check anyway."""

_POLYGONAL = frozenset({"Polygon", "MultiPolygon"})
_LINEAR = frozenset({"LineString", "MultiLineString"})
_RESERVED_PROPS = frozenset({"id", "name", "kind", "width_m", "severity", "windows", "circle"})
SEVERITIES = ("info", "low", "medium", "high", "critical")
"""What a fence's ``severity`` may say (the core's alert severities): anything else would only fail later,
on the first fix inside the fence."""
_PORTS_PACKAGE = "geofences"
_PORTS_DIR = "ports"


class FenceKind(enum.StrEnum):
    TERMINAL = "terminal"
    GATE = "gate"
    INSPECTION_AREA = "inspection_area"
    CUSTOMS_YARD = "customs_yard"
    AUTHORIZED_PARKING = "authorized_parking"
    QUAY = "quay"
    RESTRICTED = "restricted"
    CORRIDOR = "corridor"
    PORT_BOUNDARY = "port_boundary"


class FenceError(ValueError):
    """A fence set that must not be used; the message names the offending feature and the problem."""


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A daily period during which a fence is enforced (e.g. a gate open 06:00–22:00 on weekdays).

    Times are wall-clock times at the port: the caller passes ``at`` already converted to the port's
    local time, because which local time applies is a property of the port, not of the fence.
    ``days`` uses ``datetime.weekday()`` numbering (0 = Monday). ``start == end`` means all day.
    A window that crosses midnight belongs to the day it starts on, so 22:00–06:00 on Friday covers
    Saturday 03:00 but not Friday 03:00.
    """

    start: time
    end: time
    days: frozenset[int] = frozenset(range(7))

    def __post_init__(self) -> None:
        bad = [d for d in self.days if not 0 <= d <= 6]
        if bad:
            raise ValueError(f"weekday numbers must be 0..6 (0 = Monday), got {sorted(bad)}")

    def active(self, at: datetime) -> bool:
        t = at.timetz().replace(tzinfo=None)
        day = at.weekday()
        if self.start == self.end:
            return day in self.days
        if self.start < self.end:
            return day in self.days and self.start <= t < self.end
        if t >= self.start:
            return day in self.days
        if t < self.end:
            return (day - 1) % 7 in self.days
        return False

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.strftime("%H:%M"),
            "end": self.end.strftime("%H:%M"),
            "days": sorted(self.days),
        }


@dataclass(frozen=True, slots=True)
class Fence:
    """One named area of a port, in WGS84 lon/lat.

    For a corridor drawn as a centre line, ``geometry`` is already the buffered band so that every
    consumer can treat all fences as areas; the line is kept in ``centerline`` so the set can be written
    back the way it was drawn. ``properties`` holds the feature's other attributes (operator, contract,
    how a derived fence was made) for display; it plays no part in equality.
    """

    id: str
    name: str
    kind: FenceKind
    port: str
    geometry: BaseGeometry
    severity: str | None = None
    windows: tuple[TimeWindow, ...] = ()
    properties: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    centerline: BaseGeometry | None = field(default=None, compare=False)
    width_m: float | None = None
    circle: Circle | None = None
    """For a circle fence, the centre and radius it was defined by (``geometry`` is its polygon)."""

    def active(self, at: datetime) -> bool:
        """A fence without windows is enforced around the clock."""
        return not self.windows or any(w.active(at) for w in self.windows)

    def to_feature(self) -> dict[str, Any]:
        props: dict[str, Any] = dict(self.properties)
        props.update({"id": self.id, "name": self.name, "kind": str(self.kind)})
        if self.severity is not None:
            props["severity"] = self.severity
        if self.windows:
            props["windows"] = [w.to_json() for w in self.windows]
        geom = self.geometry
        if self.centerline is not None:
            geom = self.centerline
            props["width_m"] = self.width_m
        if self.circle is not None:
            # the polygon stays the geometry, so any GIS tool shows the area; the properties say how to rebuild it
            props["circle"] = self.circle.to_json()
        return {"type": "Feature", "id": self.id, "properties": props, "geometry": _to_json_geometry(geom)}


@dataclass(frozen=True, slots=True)
class FenceSet:
    """All fences of one port plus where they came from, because shipped fence data must carry its source
    and licence."""

    port: str
    name: str
    source: str
    licence: str
    fences: tuple[Fence, ...]

    def by_id(self, fence_id: str) -> Fence:
        for f in self.fences:
            if f.id == fence_id:
                return f
        raise KeyError(fence_id)

    def kinds(self) -> frozenset[FenceKind]:
        return frozenset(f.kind for f in self.fences)

    def __len__(self) -> int:
        return len(self.fences)

    def __iter__(self) -> Iterator[Fence]:
        return iter(self.fences)

    def to_geojson(self) -> dict[str, Any]:
        return {
            "type": "FeatureCollection",
            "port": self.port,
            "name": self.name,
            "source": self.source,
            "licence": self.licence,
            "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
            "features": [f.to_feature() for f in self.fences],
        }


def _to_json_geometry(geom: BaseGeometry) -> dict[str, Any]:
    # mapping() yields nested tuples; a JSON round trip gives plain lists so the dict compares equal to
    # what a file read back would give.
    result: dict[str, Any] = json.loads(json.dumps(mapping(geom)))
    return result


def _label(index: int, feature: Any) -> str:
    props = feature.get("properties") if isinstance(feature, Mapping) else None
    props = props if isinstance(props, Mapping) else {}
    fid = props.get("id", feature.get("id") if isinstance(feature, Mapping) else None)
    name = props.get("name")
    parts = [f"feature #{index}"]
    if fid is not None:
        parts.append(f"id={fid!r}")
    if name is not None:
        parts.append(f"name={name!r}")
    return " ".join(parts)


def _check_crs(doc: Mapping[str, Any], where: str) -> None:
    crs = doc.get("crs")
    if crs is None:
        return
    name = None
    if isinstance(crs, Mapping):
        props = crs.get("properties")
        if isinstance(props, Mapping):
            name = props.get("name")
    elif isinstance(crs, str):
        name = crs
    if not isinstance(name, str) or name not in WGS84_CRS_NAMES:
        raise FenceError(
            f"{where}: crs {name if name is not None else crs!r} is not WGS84 lon/lat; "
            "reproject the file (e.g. with tracker.gis_import) before loading"
        )


def _parse_windows(raw: Any, label: str) -> tuple[TimeWindow, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise FenceError(f"{label}: 'windows' must be a list of {{start, end, days}} objects")
    out: list[TimeWindow] = []
    for i, w in enumerate(raw):
        try:
            start = time.fromisoformat(w["start"])
            end = time.fromisoformat(w["end"])
            days = frozenset(int(d) for d in w.get("days", range(7)))
            out.append(TimeWindow(start, end, days))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise FenceError(f"{label}: window #{i} {w!r} is not valid: {exc}") from exc
    return tuple(out)


def _check_coordinates(geom: BaseGeometry, label: str, bbox: tuple[float, ...] | None) -> None:
    coords = shapely.get_coordinates(geom)
    if not len(coords):
        raise FenceError(f"{label}: empty geometry")
    lon = coords[:, 0]
    lat = coords[:, 1]
    if not (abs(coords) < float("inf")).all():
        raise FenceError(f"{label}: coordinates contain NaN or infinity")
    if (abs(lat) > 90).any():
        if (abs(lat) <= 180).all() and (abs(lon) <= 90).all():
            raise FenceError(
                f"{label}: latitude outside ±90 while longitude would be a valid latitude; "
                "coordinates look swapped (GeoJSON order is [lon, lat])"
            )
        raise FenceError(
            f"{label}: coordinates out of range (latitude up to {abs(lat).max():.6g}); "
            "is the file in a projected CRS rather than WGS84 degrees?"
        )
    if (abs(lon) > 180).any():
        raise FenceError(
            f"{label}: coordinates out of range (longitude up to {abs(lon).max():.6g}); "
            "is the file in a projected CRS rather than WGS84 degrees?"
        )
    if bbox is not None:
        minx, miny, maxx, maxy = bbox
        box = shapely.box(minx, miny, maxx, maxy)
        if not geom.intersects(box):
            swapped = shapely.transform(geom, lambda c: c[:, ::-1])
            if swapped.intersects(box):
                raise FenceError(
                    f"{label}: lies outside the set's bbox but would lie inside with lon/lat swapped; "
                    "coordinates look swapped (GeoJSON order is [lon, lat])"
                )
            raise FenceError(f"{label}: lies outside the set's declared bbox {list(bbox)}")


def _parse_bbox(doc: Mapping[str, Any], where: str) -> tuple[float, ...] | None:
    raw = doc.get("bbox")
    if raw is None:
        return None
    try:
        vals = tuple(float(v) for v in raw)
    except (TypeError, ValueError, OverflowError) as exc:
        raise FenceError(f"{where}: bbox {raw!r} is not a list of numbers") from exc
    if len(vals) != 4:
        raise FenceError(f"{where}: bbox must be [min_lon, min_lat, max_lon, max_lat], got {raw!r}")
    return vals


def _parse_feature(index: int, feature: Any, port: str, bbox: tuple[float, ...] | None) -> Fence:
    label = _label(index, feature)
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise FenceError(f"{label}: not a GeoJSON Feature")
    props = feature.get("properties") or {}
    if not isinstance(props, Mapping):
        raise FenceError(f"{label}: properties must be an object")
    raw_id = props.get("id", feature.get("id"))
    if raw_id is None or str(raw_id) == "":
        raise FenceError(f"{label}: missing 'id' (in properties or on the feature)")
    fence_id = str(raw_id)
    raw_kind = props.get("kind")
    if raw_kind is None:
        raise FenceError(f"{label}: missing 'kind' (one of {', '.join(k.value for k in FenceKind)})")
    try:
        kind = FenceKind(raw_kind)
    except ValueError:
        raise FenceError(
            f"{label}: unknown kind {raw_kind!r} (expected one of {', '.join(k.value for k in FenceKind)})"
        ) from None

    raw_geom = feature.get("geometry")
    if raw_geom is not None and not isinstance(raw_geom, Mapping):
        raise FenceError(f"{label}: geometry must be a GeoJSON geometry object or null")
    circle = _parse_circle(props, raw_geom, label)
    if circle is not None:
        try:
            geom, centerline, width_m = circle.polygon(), None, None
        except CircleError as exc:
            raise FenceError(f"{label}: {exc}") from None
    else:
        geom, centerline, width_m = _parse_geometry(raw_geom, kind, props, label, bbox)
    if circle is not None and bbox is not None:
        _check_coordinates(geom, label, bbox)

    severity = props.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise FenceError(f"{label}: severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    name = props.get("name")
    point_circle = circle is not None and "circle" not in props
    extras = {k: v for k, v in props.items() if k not in _RESERVED_PROPS and not (point_circle and k == "radius_m")}
    return Fence(
        id=fence_id,
        name=str(name) if name is not None else fence_id,
        kind=kind,
        port=port,
        geometry=geom,
        severity=severity,
        windows=_parse_windows(props.get("windows"), label),
        properties=MappingProxyType(extras),
        centerline=centerline,
        width_m=width_m,
        circle=circle,
    )


def _parse_circle(props: Mapping[str, Any], raw_geom: Mapping[str, Any] | None, label: str) -> Circle | None:
    """A circle is ``properties.circle = {center, radius_m}`` (with its polygon, a Point at its centre or
    no geometry), or a Point geometry with ``properties.radius_m``. Anything else is not a circle."""
    gtype = raw_geom.get("type") if raw_geom is not None else None
    try:
        if "circle" in props:
            circle = Circle.from_json(props["circle"])
        elif gtype == "Point" and "radius_m" in props:
            coords = raw_geom.get("coordinates") if raw_geom is not None else None
            if not isinstance(coords, list) or len(coords) not in (2, 3):
                raise FenceError(f"{label}: a circle's Point needs coordinates [lon, lat]")
            circle = Circle.from_json({"center": coords[:2], "radius_m": props["radius_m"]})
            return circle
        else:
            return None
    except CircleError as exc:
        raise FenceError(f"{label}: {exc}") from None
    if raw_geom is None:
        return circle
    try:
        given = shape(raw_geom)
    except Exception as exc:  # shapely raises several types for malformed coordinate arrays
        raise FenceError(f"{label}: malformed {gtype} coordinates next to 'circle': {exc}") from exc
    if gtype == "Point":
        if not given.is_empty and abs(given.x - circle.lon) < 1e-7 and abs(given.y - circle.lat) < 1e-7:
            return circle
        raise FenceError(f"{label}: the Point geometry is not the circle's center {circle.to_json()['center']}")
    if not circle.matches(given):
        raise FenceError(
            f"{label}: the polygon does not match its 'circle' properties (edited since?); remove 'circle'"
            " to use the drawn polygon, or the geometry to rebuild the circle"
        )
    return circle


def _parse_geometry(
    raw_geom: Mapping[str, Any] | None,
    kind: FenceKind,
    props: Mapping[str, Any],
    label: str,
    bbox: tuple[float, ...] | None,
) -> tuple[BaseGeometry, BaseGeometry | None, float | None]:
    """The fence's area, and for a corridor its centre line and width."""
    if not raw_geom or not raw_geom.get("coordinates"):
        raise FenceError(f"{label}: empty geometry")
    gtype = raw_geom.get("type")
    if gtype in _LINEAR:
        if kind is not FenceKind.CORRIDOR:
            raise FenceError(
                f"{label}: geometry type {gtype} is only allowed for kind 'corridor' (got kind {kind.value!r})"
            )
    elif gtype not in _POLYGONAL:
        raise FenceError(
            f"{label}: geometry type {gtype} cannot be a fence; use Polygon/MultiPolygon"
            " (or LineString/MultiLineString for a corridor, or a Point with properties.radius_m for a circle)"
        )
    try:
        geom = shape(raw_geom)
    except Exception as exc:  # shapely raises several types for malformed coordinate arrays
        raise FenceError(f"{label}: malformed {gtype} coordinates: {exc}") from exc
    if geom.is_empty:
        raise FenceError(f"{label}: empty geometry")
    _check_coordinates(geom, label, bbox)
    if geom.has_z:
        geom = shapely.force_2d(geom)

    centerline: BaseGeometry | None = None
    width_m: float | None = None
    if gtype in _LINEAR:
        try:
            width_m = float(props.get("width_m", DEFAULT_CORRIDOR_WIDTH_M))
        except (TypeError, ValueError) as exc:
            raise FenceError(f"{label}: width_m {props.get('width_m')!r} is not a number") from exc
        if not width_m > 0:
            raise FenceError(f"{label}: width_m must be positive, got {width_m}")
        centerline = geom
        # the width is the full width of the road, so the buffer distance is half of it
        geom = buffer_m(geom, width_m / 2.0)
    elif not shapely.is_valid(geom):
        raise FenceError(f"{label}: invalid polygon: {shapely.is_valid_reason(geom)}")
    if geom.area == 0:
        raise FenceError(f"{label}: polygon has zero area")
    return geom, centerline, width_m


def load_fence_set(source: str | Path | Mapping[str, Any]) -> FenceSet:
    """Load and validate a GeoJSON FeatureCollection of fences.

    A string or path is a file to read; a mapping is an already-parsed document (as produced by
    ``tracker.gis_import``). Nothing is partially accepted: the first problem raises :class:`FenceError`.
    """
    if isinstance(source, Mapping):
        doc: Any = source
        where = "fence set"
    else:
        path = Path(source)
        where = f"fence set {path}"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise FenceError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(doc, Mapping) or doc.get("type") != "FeatureCollection":
        got = doc.get("type") if isinstance(doc, Mapping) else type(doc).__name__
        raise FenceError(f"{where}: not a GeoJSON FeatureCollection (type is {got!r})")
    if doc.get("name"):
        where = f"{where} {doc['name']!r}"
    port = doc.get("port")
    if not isinstance(port, str) or not port:
        raise FenceError(f"{where}: missing top-level 'port'")
    _check_crs(doc, where)
    bbox = _parse_bbox(doc, where)
    features = doc.get("features")
    if not isinstance(features, list):
        raise FenceError(f"{where}: 'features' must be a list")

    fences: list[Fence] = []
    seen: dict[str, int] = {}
    for i, feature in enumerate(features):
        fence = _parse_feature(i, feature, port, bbox)
        if fence.id in seen:
            raise FenceError(
                f"{_label(i, feature)}: duplicate id {fence.id!r} (first used by feature #{seen[fence.id]})"
            )
        seen[fence.id] = i
        fences.append(fence)
    return FenceSet(
        port=port,
        name=str(doc.get("name") or port),
        source=str(doc.get("source") or ""),
        licence=str(doc.get("licence") or ""),
        fences=tuple(fences),
    )


def available_ports() -> list[str]:
    """Names of the fence sets shipped with the package."""
    folder = resources.files(_PORTS_PACKAGE).joinpath(_PORTS_DIR)
    return sorted(p.name.removesuffix(".geojson") for p in folder.iterdir() if p.name.endswith(".geojson"))


def load_port(name: str) -> FenceSet:
    """Load a shipped fence set; only names from :func:`available_ports` are accepted, so a caller-supplied
    name can never reach outside the package."""
    ports = available_ports()
    if name not in ports:
        raise KeyError(f"no fence set for port {name!r}; available: {', '.join(ports)}")
    text = resources.files(_PORTS_PACKAGE).joinpath(_PORTS_DIR, f"{name}.geojson").read_text(encoding="utf-8")
    return load_fence_set(json.loads(text))
