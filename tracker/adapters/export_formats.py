"""Export formats written incrementally: a head, then any number of row chunks, then a tail.

Each writer keeps only what it needs across chunks (the device whose track is open), so an export of
any length is written in the memory of one chunk. Rows come by device then time (``stream_pings``);
GPX and KML start a new track when the device changes.

* GeoJSON (RFC 7946): a FeatureCollection of Point features, one per fix, with the export's range
  as foreign members.
* GPX 1.1: one ``trk`` per device; speed (m/s) and course (degrees) in Garmin's TrackPointExtension v2,
  which GPX 1.1 tools read (GPX 1.1 itself dropped GPX 1.0's ``speed``/``course`` elements).
* KML 2.2: one Placemark per device holding a ``gx:MultiTrack`` of ``gx:Track`` elements (one per chunk:
  a Track needs its ``when`` elements before its coordinates), speed and course as ``gx:SimpleArrayData``.
* CSV: one row per fix.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from xml.sax.saxutils import escape as xml_escape

Row = Mapping[str, Any]

GPX_NS = "http://www.topografix.com/GPX/1/1"
GPXTPX_NS = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"
KML_NS = "http://www.opengis.net/kml/2.2"
GX_NS = "http://www.google.com/kml/ext/2.2"


def _ts(value: datetime) -> str:
    return value.isoformat() if value.tzinfo is UTC else value.astimezone(UTC).isoformat()


def _num(value: float | None) -> str:
    """JSON number or null; a non-finite value (never stored, but cheap to guard) is null too."""
    if value is None or value != value or value in (math.inf, -math.inf):
        return "null"
    return repr(float(value))


@dataclass
class ExportMeta:
    """What the export covers: printed in its head."""

    subject: str  # "device TRK-1" or "container MSCU1234565"
    device_ids: Sequence[str]
    start: datetime
    end: datetime


@dataclass
class Writer:
    """Base of the four formats; ``rows`` is called with each chunk in order."""

    meta: ExportMeta
    written: int = 0
    media_type: ClassVar[str] = "application/octet-stream"
    extension: ClassVar[str] = "bin"

    def begin(self) -> str:
        return ""

    def rows(self, rows: Sequence[Row]) -> str:
        raise NotImplementedError

    def end(self) -> str:
        return ""


@dataclass
class GeoJsonWriter(Writer):
    media_type: ClassVar[str] = "application/geo+json"
    extension: ClassVar[str] = "geojson"
    _strings: dict[str, str] = field(default_factory=dict, init=False)  # device ids and sources, JSON-quoted

    def begin(self) -> str:
        head = {
            "type": "FeatureCollection",
            "subject": self.meta.subject,
            "device_ids": list(self.meta.device_ids),
            "from": _ts(self.meta.start),
            "to": _ts(self.meta.end),
        }
        return json.dumps(head)[:-1] + ',"features":['

    def rows(self, rows: Sequence[Row]) -> str:
        parts = []
        strings = self._strings
        for r in rows:
            device, source = r["device_id"], r["source"]
            dev = strings.get(device) or strings.setdefault(device, json.dumps(device))
            src = strings.get(source) or strings.setdefault(source, json.dumps(source))
            events, flags = r["events"], r["flags"]
            parts.append(
                f'{{"type":"Feature","geometry":{{"type":"Point","coordinates":[{r["lon"]!r},{r["lat"]!r}]}},'
                f'"properties":{{"device_id":{dev},"ts":"{_ts(r["ts"])}","speed":{_num(r["speed"])},'
                f'"heading":{_num(r["heading"])},"accuracy":{_num(r["accuracy"])},'
                f'"events":{json.dumps(list(events)) if events else "[]"},'
                f'"flags":{json.dumps(list(flags)) if flags else "[]"},"source":{src}}}}}'
            )
        text = ",".join(parts)
        if self.written and parts:
            text = "," + text
        self.written += len(parts)
        return text

    def end(self) -> str:
        return "]}\n"


@dataclass
class CsvWriter(Writer):
    media_type: ClassVar[str] = "text/csv"
    extension: ClassVar[str] = "csv"
    HEADER: ClassVar[tuple[str, ...]] = (
        "device_id",
        "ts",
        "lon",
        "lat",
        "speed_m_s",
        "course_deg",
        "accuracy_m",
        "events",
        "flags",
        "source",
    )

    def begin(self) -> str:
        return ",".join(self.HEADER) + "\r\n"

    def rows(self, rows: Sequence[Row]) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        for r in rows:
            writer.writerow(
                [
                    r["device_id"],
                    _ts(r["ts"]),
                    repr(r["lon"]),
                    repr(r["lat"]),
                    "" if r["speed"] is None else r["speed"],
                    "" if r["heading"] is None else r["heading"],
                    "" if r["accuracy"] is None else r["accuracy"],
                    ";".join(r["events"]),
                    ";".join(r["flags"]),
                    r["source"],
                ]
            )
        self.written += len(rows)
        return out.getvalue()


@dataclass
class GpxWriter(Writer):
    media_type: ClassVar[str] = "application/gpx+xml"
    extension: ClassVar[str] = "gpx"
    _open: str | None = field(default=None, init=False)

    def begin(self) -> str:
        desc = xml_escape(f"{self.meta.subject} from {_ts(self.meta.start)} to {_ts(self.meta.end)}")
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<gpx version="1.1" creator="port-tracker" xmlns="{GPX_NS}" xmlns:gpxtpx="{GPXTPX_NS}">'
            f"<metadata><desc>{desc}</desc></metadata>"
        )

    def rows(self, rows: Sequence[Row]) -> str:
        parts: list[str] = []
        for r in rows:
            device = r["device_id"]
            if device != self._open:
                if self._open is not None:
                    parts.append("</trkseg></trk>")
                parts.append(f"<trk><name>{xml_escape(device)}</name><trkseg>")
                self._open = device
            ext = ""
            speed, course = r["speed"], r["heading"]
            inner = ""
            if speed is not None and math.isfinite(speed) and speed >= 0:
                inner += f"<gpxtpx:speed>{float(speed)!r}</gpxtpx:speed>"
            if course is not None and math.isfinite(course) and 0 <= course < 360:
                inner += f"<gpxtpx:course>{float(course)!r}</gpxtpx:course>"
            if inner:
                ext = f"<extensions><gpxtpx:TrackPointExtension>{inner}</gpxtpx:TrackPointExtension></extensions>"
            parts.append(f'<trkpt lat="{r["lat"]:.7f}" lon="{r["lon"]:.7f}"><time>{_ts(r["ts"])}</time>{ext}</trkpt>')
        self.written += len(rows)
        return "".join(parts)

    def end(self) -> str:
        return ("</trkseg></trk>" if self._open is not None else "") + "</gpx>\n"


@dataclass
class KmlWriter(Writer):
    media_type: ClassVar[str] = "application/vnd.google-earth.kml+xml"
    extension: ClassVar[str] = "kml"
    _open: str | None = field(default=None, init=False)

    def begin(self) -> str:
        name = xml_escape(f"{self.meta.subject} {_ts(self.meta.start)} - {_ts(self.meta.end)}")
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<kml xmlns="{KML_NS}" xmlns:gx="{GX_NS}"><Document><name>{name}</name>'
            '<Schema id="fix" name="fix">'
            '<gx:SimpleArrayField name="speed" type="float"><displayName>speed (m/s)</displayName>'
            "</gx:SimpleArrayField>"
            '<gx:SimpleArrayField name="course" type="float"><displayName>course (deg)</displayName>'
            "</gx:SimpleArrayField>"
            "</Schema>"
        )

    def _track(self, run: Sequence[Row]) -> str:
        whens = "".join(f"<when>{_ts(r['ts'])}</when>" for r in run)
        coords = "".join(f"<gx:coord>{r['lon']!r} {r['lat']!r} 0</gx:coord>" for r in run)

        def value(v: float | None) -> str:
            return "" if v is None or not math.isfinite(v) else repr(float(v))

        def values(key: str) -> str:
            return "".join(f"<gx:value>{value(r[key])}</gx:value>" for r in run)

        data = (
            '<ExtendedData><SchemaData schemaUrl="#fix">'
            f'<gx:SimpleArrayData name="speed">{values("speed")}</gx:SimpleArrayData>'
            f'<gx:SimpleArrayData name="course">{values("heading")}</gx:SimpleArrayData>'
            "</SchemaData></ExtendedData>"
        )
        return f"<gx:Track>{whens}{coords}{data}</gx:Track>"

    def rows(self, rows: Sequence[Row]) -> str:
        parts: list[str] = []
        run: list[Row] = []
        for r in rows:
            device = r["device_id"]
            if device != self._open:
                if run:
                    parts.append(self._track(run))
                    run = []
                if self._open is not None:
                    parts.append("</gx:MultiTrack></Placemark>")
                parts.append(
                    f"<Placemark><name>{xml_escape(device)}</name><gx:MultiTrack>"
                    "<altitudeMode>clampToGround</altitudeMode><gx:interpolate>1</gx:interpolate>"
                )
                self._open = device
            run.append(r)
        if run:
            parts.append(self._track(run))
        self.written += len(rows)
        return "".join(parts)

    def end(self) -> str:
        return ("</gx:MultiTrack></Placemark>" if self._open is not None else "") + "</Document></kml>\n"


WRITERS: Mapping[str, type[Writer]] = {
    "geojson": GeoJsonWriter,
    "gpx": GpxWriter,
    "kml": KmlWriter,
    "csv": CsvWriter,
}
MEDIA_TYPES: Mapping[str, str] = {
    "application/geo+json": "geojson",
    "application/json": "geojson",
    "application/gpx+xml": "gpx",
    "application/vnd.google-earth.kml+xml": "kml",
    "text/csv": "csv",
}


def negotiate(query_format: str | None, accept: str | None) -> str | None:
    """``?format=`` wins; else the first acceptable media type by quality; None: nothing we can write.

    No Accept header (or ``*/*``) means GeoJSON.
    """
    if query_format is not None:
        return query_format if query_format in WRITERS else None
    if not accept or not accept.strip():
        return "geojson"
    offers: list[tuple[float, int, str]] = []
    for i, item in enumerate(accept.split(",")):
        media, _, params = item.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        media = media.strip().lower()
        if q <= 0 or not math.isfinite(q):
            continue
        if media in ("*/*", "application/*"):
            offers.append((q, i, "geojson"))
        elif media == "text/*":
            offers.append((q, i, "csv"))
        elif media in MEDIA_TYPES:
            offers.append((q, i, MEDIA_TYPES[media]))
    if not offers:
        return None
    offers.sort(key=lambda o: (-o[0], o[1]))
    return offers[0][2]
