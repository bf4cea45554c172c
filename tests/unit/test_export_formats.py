"""Export writers: every format parses back to the fixes written, whatever the chunking; GPX and KML follow
their schemas' element structure; content negotiation picks what the client asked for."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tracker.adapters.export_formats import (
    GPX_NS,
    GPXTPX_NS,
    GX_NS,
    KML_NS,
    WRITERS,
    ExportMeta,
    negotiate,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def fixes() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for dev, n in (("CNT-A", 7), ("CNT-B<&>", 5)):
        for i in range(n):
            rows.append(
                {
                    "device_id": dev,
                    "ts": T0 + timedelta(seconds=10 * i),
                    "lon": -46.3 + i * 1e-4,
                    "lat": -23.95 - i * 1e-4,
                    "speed": None if i == 2 else 3.5 + i,
                    "heading": None if i == 3 else float(i * 40 % 360),
                    "accuracy": 5.0,
                    "events": ["door_open"] if i == 1 else [],
                    "flags": [],
                    "source": "native",
                }
            )
    return rows


def render(fmt: str, rows: list[dict[str, Any]], chunk: int) -> str:
    writer = WRITERS[fmt](ExportMeta("container MSCU1234565", ["CNT-A", "CNT-B<&>"], T0, T0 + timedelta(days=1)))
    parts = [writer.begin()]
    for i in range(0, len(rows), chunk):
        parts.append(writer.rows(rows[i : i + chunk]))
    parts.append(writer.end())
    assert writer.written == len(rows)
    return "".join(parts)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_chunking_does_not_change_what_is_exported(fmt: str) -> None:
    rows = fixes()
    whole = render(fmt, rows, 1000)
    if fmt in ("geojson", "csv", "gpx"):
        assert render(fmt, rows, 1) == whole == render(fmt, rows, 3)
    else:  # KML: one gx:Track per chunk, the same points
        assert kml_points(render(fmt, rows, 1)) == kml_points(whole) == kml_points(render(fmt, rows, 4))


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_an_empty_export_is_a_valid_document(fmt: str) -> None:
    text = render(fmt, [], 10)
    if fmt == "geojson":
        assert json.loads(text)["features"] == []
    elif fmt == "csv":
        assert list(csv.reader(io.StringIO(text))) == [list(WRITERS["csv"].HEADER)]  # type: ignore[attr-defined]
    else:
        ET.fromstring(text)


def test_geojson_parses_back_to_the_fixes() -> None:
    rows = fixes()
    doc = json.loads(render("geojson", rows, 4))
    assert doc["type"] == "FeatureCollection" and doc["subject"] == "container MSCU1234565"
    assert len(doc["features"]) == len(rows)
    for f, r in zip(doc["features"], rows, strict=True):
        assert f["geometry"] == {"type": "Point", "coordinates": [r["lon"], r["lat"]]}
        p = f["properties"]
        assert (p["device_id"], p["speed"], p["heading"], p["events"]) == (
            r["device_id"],
            r["speed"],
            r["heading"],
            r["events"],
        )
        assert datetime.fromisoformat(p["ts"]) == r["ts"]


def test_csv_parses_back_to_the_fixes() -> None:
    rows = fixes()
    table = list(csv.DictReader(io.StringIO(render("csv", rows, 5))))
    assert len(table) == len(rows)
    for t, r in zip(table, rows, strict=True):
        assert t["device_id"] == r["device_id"]
        assert float(t["lon"]) == r["lon"] and float(t["lat"]) == r["lat"]
        assert t["speed_m_s"] == ("" if r["speed"] is None else str(r["speed"]))
        assert datetime.fromisoformat(t["ts"]) == r["ts"]


# GPX 1.1 (http://www.topografix.com/GPX/1/1/gpx.xsd): the sequences the schema requires, in order
GPX_ORDER = {
    "gpx": ["metadata", "wpt", "rte", "trk", "extensions"],
    "trk": ["name", "cmt", "desc", "src", "link", "number", "type", "extensions", "trkseg"],
    "trkseg": ["trkpt", "extensions"],
    "trkpt": [
        "ele",
        "time",
        "magvar",
        "geoidheight",
        "name",
        "cmt",
        "desc",
        "src",
        "link",
        "sym",
        "type",
        "fix",
        "sat",
        "hdop",
        "vdop",
        "pdop",
        "ageofdgpsdata",
        "dgpsid",
        "extensions",
    ],
    "metadata": ["name", "desc", "author", "copyright", "link", "time", "keywords", "bounds", "extensions"],
}


def check_gpx_shape(el: ET.Element) -> None:
    """Every GPX element's children are schema elements in the schema's order; trkpt lat/lon in range."""
    local = el.tag.removeprefix("{" + GPX_NS + "}")
    assert el.tag.startswith("{" + GPX_NS + "}"), el.tag
    if local == "extensions":
        return  # xsd:any from other namespaces
    allowed = GPX_ORDER.get(local)
    if allowed is None:
        assert len(el) == 0, f"{local} has children"
        return
    positions = []
    for child in el:
        name = child.tag.removeprefix("{" + GPX_NS + "}")
        assert name in allowed, f"{name} not allowed in {local}"
        positions.append(allowed.index(name))
        check_gpx_shape(child)
    assert positions == sorted(positions), f"children of {local} out of schema order"
    if local == "trkpt":
        assert -90 <= float(el.attrib["lat"]) <= 90 and -180 <= float(el.attrib["lon"]) < 180
        t = el.find(f"{{{GPX_NS}}}time")
        assert t is not None and t.text is not None and datetime.fromisoformat(t.text).tzinfo is not None


def test_gpx_follows_the_schema_and_carries_speed_and_course() -> None:
    rows = fixes()
    root = ET.fromstring(render("gpx", rows, 3))
    assert root.tag == f"{{{GPX_NS}}}gpx" and root.attrib["version"] == "1.1" and root.attrib["creator"]
    check_gpx_shape(root)
    tracks = root.findall(f"{{{GPX_NS}}}trk")
    assert [t.findtext(f"{{{GPX_NS}}}name") for t in tracks] == ["CNT-A", "CNT-B<&>"]
    points = root.findall(f".//{{{GPX_NS}}}trkpt")
    assert len(points) == len(rows)
    for p, r in zip(points, rows, strict=True):
        ext = p.find(f"{{{GPX_NS}}}extensions/{{{GPXTPX_NS}}}TrackPointExtension")
        speed = None if ext is None else ext.findtext(f"{{{GPXTPX_NS}}}speed")
        course = None if ext is None else ext.findtext(f"{{{GPXTPX_NS}}}course")
        assert (None if speed is None else float(speed)) == r["speed"]
        assert (None if course is None else float(course)) == r["heading"]
        # TrackPointExtension v2 orders speed before course
        if ext is not None and len(ext) == 2:
            assert [c.tag for c in ext] == [f"{{{GPXTPX_NS}}}speed", f"{{{GPXTPX_NS}}}course"]


def kml_points(text: str) -> list[tuple[str, str, str, str, str]]:
    """(placemark, when, coord, speed, course) per point; checks each gx:Track's own structure."""
    root = ET.fromstring(text)
    assert root.tag == f"{{{KML_NS}}}kml"
    out: list[tuple[str, str, str, str, str]] = []
    for pm in root.iter(f"{{{KML_NS}}}Placemark"):
        name = pm.findtext(f"{{{KML_NS}}}name") or ""
        multi = pm.find(f"{{{GX_NS}}}MultiTrack")
        assert multi is not None
        for track in multi.findall(f"{{{GX_NS}}}Track"):
            kids = [c.tag for c in track]
            whens = [c.text or "" for c in track if c.tag == f"{{{KML_NS}}}when"]
            coords = [c.text or "" for c in track if c.tag == f"{{{GX_NS}}}coord"]
            # the schema's order: every when, then every coord, then ExtendedData
            assert kids == [f"{{{KML_NS}}}when"] * len(whens) + [f"{{{GX_NS}}}coord"] * len(coords) + [
                f"{{{KML_NS}}}ExtendedData"
            ]
            arrays = {a.attrib["name"]: [v.text or "" for v in a] for a in track.iter(f"{{{GX_NS}}}SimpleArrayData")}
            assert len(whens) == len(coords) == len(arrays["speed"]) == len(arrays["course"])
            out.extend(zip([name] * len(whens), whens, coords, arrays["speed"], arrays["course"], strict=True))
    return out


def test_kml_parses_back_to_the_fixes() -> None:
    rows = fixes()
    points = kml_points(render("kml", rows, 4))
    assert len(points) == len(rows)
    for (name, when, coord, speed, course), r in zip(points, rows, strict=True):
        assert name == r["device_id"]
        assert datetime.fromisoformat(when) == r["ts"]
        lon, lat, _ = (float(v) for v in coord.split())
        assert (lon, lat) == (r["lon"], r["lat"])
        assert (float(speed) if speed else None) == r["speed"]
        assert (float(course) if course else None) == r["heading"]


@pytest.mark.parametrize(
    ("query", "accept", "expected"),
    [
        (None, None, "geojson"),
        (None, "*/*", "geojson"),
        ("kml", "text/csv", "kml"),
        ("shapefile", None, None),
        (None, "application/gpx+xml", "gpx"),
        (None, "text/csv;q=0.5, application/vnd.google-earth.kml+xml", "kml"),
        (None, "text/csv;q=0.9, application/gpx+xml;q=0.1", "csv"),
        (None, "image/png", None),
        (None, "application/gpx+xml;q=0", None),
        (None, "text/html, application/geo+json;q=0.2", "geojson"),
    ],
)
def test_negotiation(query: str | None, accept: str | None, expected: str | None) -> None:
    assert negotiate(query, accept) == expected
