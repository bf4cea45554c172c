"""Custody reports: one shipment's evidence, signed so that a claim adjuster can prove it was not edited.

A report is a JSON document ``{"report": {...}, "signature": {...}}``. ``report`` holds the container's
evidence over a time range (trips, stops, alerts with their resolution and their signed links, customs
clearance and loading times, the fences involved, a summary of the track) and the alert-log checkpoint
that covers its alerts. ``signature`` is the service's Ed25519 signature over the canonical JSON of
``report`` (tracker/audit.py's ``canonical``), with the same key that signs the alert chain; the key
never lives in the database.

``verify`` checks a report with the public key alone, without the database:

* the report's signature (any edit of its content, one byte included, breaks it);
* the embedded checkpoint's own signature;
* for every alert, each of its links: the hash recomputes from the link's position, predecessor and
  document, the link's signature is good, its position is covered by the checkpoint (``seq <= count``),
  and the fold of the links gives the alert as the report prints it (status, acknowledgement,
  resolution, updates), the same fold ``tracker alerts verify`` applies to the database.

What it cannot show offline: that the chain between two of the report's links is intact (the links of
other alerts are not in the report); ``tracker audit verify`` on a full bundle checks that. The HTML and
PDF forms are renderings of the signed JSON, which each embeds (HTML: a ``<script type=
"application/json">`` element; PDF: an attached file): verification reads the embedded JSON, and the
printed pages should be compared with it, not trusted on their own.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from geofences import Fence
from tracker import audit
from tracker.adapters.store_exports import Track

REPORT_TYPE = "port-tracker/custody-report"
REPORT_VERSION = 1
SIGNATURE_PREFIX = b"port-tracker custody report v1\n"
ATTACHMENT_NAME = "custody-report.json"
HTML_SCRIPT_ID = "custody-report"
STOP_KINDS = frozenset({"unexpected_stop"})
"""Alert kinds that are stops; their evidence carries where and when the stop started."""


class CustodyError(ValueError):
    """A file that holds no readable custody report."""


def _json(value: object) -> Any:
    """The value as JSON would give it back: what is signed is exactly what a verifier parses."""
    return json.loads(audit.canonical(value))


def signed_message(report: Mapping[str, Any]) -> bytes:
    return SIGNATURE_PREFIX + audit.canonical(report).encode()


def sign(report: Mapping[str, Any], signer: audit.Signer) -> dict[str, Any]:
    content = _json(report)
    return {
        "report": content,
        "signature": {"alg": "Ed25519", "key_id": signer.key_id, "value": signer.sign(signed_message(content))},
    }


# ---------------------------------------------------------------------------- content

TRACK_POINTS = 1500
"""At most this many points of the track go into the report (simplified, for the map): the full track is
an export away; the report gives its count, span and distance."""


def track_summary(tracks: Mapping[str, Track], max_points: int = TRACK_POINTS) -> dict[str, Any]:
    """Fix count, first/last time, distance per tracker and a simplified polyline of all of them."""
    import numpy as np
    import shapely

    fixes = sum(len(t) for t in tracks.values())
    firsts = [int(t.ts_us[0]) for t in tracks.values() if len(t)]
    lasts = [int(t.ts_us[-1]) for t in tracks.values() if len(t)]
    distance = 0.0
    points: list[list[float]] = []
    share = max(2, max_points // max(1, len(tracks)))
    for t in tracks.values():
        if len(t) == 0:
            continue
        lon, lat = np.radians(t.lon), np.radians(t.lat)
        if len(t) > 1:
            a = np.sin(np.diff(lat) / 2) ** 2 + np.cos(lat[:-1]) * np.cos(lat[1:]) * np.sin(np.diff(lon) / 2) ** 2
            distance += float(np.sum(2 * 6_371_008.8 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))))
        coords = np.column_stack([t.lon, t.lat])
        if len(coords) > share:
            line = shapely.LineString(coords)
            tolerance = 1e-6
            while len(coords) > share and tolerance < 1.0:
                coords = np.asarray(shapely.simplify(line, tolerance).coords)
                tolerance *= 2
        points += [[round(float(x), 7), round(float(y), 7)] for x, y in coords]
    return {
        "fixes": fixes,
        "first": None if not firsts else _us_iso(min(firsts)),
        "last": None if not lasts else _us_iso(max(lasts)),
        "distance_m": round(distance, 1),
        "points": points,
        "simplified_to": len(points),
    }


def _us_iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


def stops_from_alerts(
    alerts: Sequence[Mapping[str, Any]], updates: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """Stops as the stop detector recorded them: where, from when, until when (its closing update)."""
    out = []
    for a in alerts:
        if a["kind"] not in STOP_KINDS:
            continue
        ev = a.get("evidence") or {}
        centre = ev.get("centre") or {}
        end, duration = a.get("ended_at"), ev.get("duration_s")
        for u in updates.get(a["id"], ()):
            fields = u.get("fields") or {}
            if u.get("closes"):
                end = fields.get("ended_at", end)
                duration = fields.get("duration_s", duration)
        out.append(
            {
                "alert_id": a["id"],
                "device_id": a["device_id"],
                "start": ev.get("started_at"),
                "end": end,
                "duration_s": duration,
                "fence_id": a.get("fence_id"),
                "lon": centre.get("lon"),
                "lat": centre.get("lat"),
            }
        )
    return out


def clearance_times(inspections: Sequence[Mapping[str, Any]]) -> dict[str, str | None]:
    """The first time of each customs decision kind (clearance, selection, hold, loading) in the range."""
    out: dict[str, str | None] = {"cleared_at": None, "selected_at": None, "held_at": None, "loaded_at": None}
    for i in inspections:
        key = {"cleared": "cleared_at", "selected": "selected_at", "held": "held_at", "loaded": "loaded_at"}.get(
            str(i.get("result"))
        )
        if key and out[key] is None:
            out[key] = i.get("ts")
    return out


def fences_involved(
    fences: Iterable[Fence], tracks: Mapping[str, Track], named: Iterable[str | None]
) -> list[dict[str, Any]]:
    """Fences the track passed through (any fix inside) or an alert names, with their geometry."""
    import shapely

    wanted = {n for n in named if n}
    out = []
    for f in fences:
        hit = f.id in wanted
        if not hit:
            for t in tracks.values():
                if len(t) and bool(shapely.contains_xy(f.geometry, t.lon, t.lat).any()):
                    hit = True
                    break
        if hit:
            out.append(
                {
                    "id": f.id,
                    "name": f.name,
                    "kind": str(f.kind),
                    "port": f.port,
                    "geometry": shapely.geometry.mapping(f.geometry),
                }
            )
    return out


# ---------------------------------------------------------------------------- verification


@dataclass
class Verdict:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)


def verify(document: object, public_keys: Sequence[Ed25519PublicKey]) -> Verdict:
    """Check a signed report offline (see the module docstring for what that proves)."""
    v = Verdict()
    if not isinstance(document, dict) or not isinstance(document.get("report"), dict):
        v.fail("not a signed custody report: no 'report' object")
        return v
    report = document["report"]
    sig = document.get("signature")
    if report.get("type") != REPORT_TYPE or report.get("v") != REPORT_VERSION:
        v.fail(f"not a version {REPORT_VERSION} {REPORT_TYPE}")
        return v
    if not isinstance(sig, dict) or sig.get("alg") != "Ed25519" or not isinstance(sig.get("value"), str):
        v.fail("no Ed25519 signature")
        return v
    if not audit.signature_ok(public_keys, signed_message(report), sig["value"]):
        v.fail(
            "the report's signature does not verify with the given key: its content was changed"
            " or another key signed it"
        )
    else:
        v.checked.append(f"report signature (key {sig.get('key_id')})")
    try:
        cp = audit.Checkpoint.from_json(report.get("checkpoint"))
    except audit.AuditError as exc:
        alerts = report.get("alerts") or []
        if alerts:
            v.fail(f"no readable alert-log checkpoint for its {len(alerts)} alerts: {exc}")
        return v
    if not audit.signature_ok(public_keys, cp.signed_message(), cp.signature):
        v.fail("the embedded checkpoint's signature does not verify")
    else:
        v.checked.append(cp.describe())
    alerts = report.get("alerts")
    if not isinstance(alerts, list):
        v.fail("'alerts' is not a list")
        return v
    for item in alerts:
        _verify_alert(v, item, public_keys, cp)
    if alerts and v.ok:
        v.checked.append(f"{len(alerts)} alerts: every link recomputes, is signed and covered by the checkpoint")
    return v


def _verify_alert(v: Verdict, item: object, keys: Sequence[Ed25519PublicKey], cp: audit.Checkpoint) -> None:
    if not isinstance(item, dict):
        v.fail("an alert entry is not an object")
        return
    try:
        row = audit.AlertRecord.from_json(item.get("alert"))
        links = [audit.Link.from_json(x) for x in item.get("links") or []]
        updates = [audit._update_key(u) for u in item.get("updates") or [] if isinstance(u, dict)]
    except audit.AuditError as exc:
        v.fail(f"alert entry unreadable: {exc}")
        return
    name = f"alert {row.id} ({row.kind})"
    if not links:
        v.fail(f"{name}: no links")
        return
    states: dict[str, audit._State] = {}
    for link in links:
        if audit.link_hash(link.seq, link.prev, link.doc) != link.hash:
            v.fail(f"{name}: link #{link.seq} does not hash to its stated hash")
            return
        if not audit.signature_ok(keys, link.signed_message(), link.sig):
            v.fail(f"{name}: link #{link.seq} is not signed by the given key")
            return
        if link.seq > cp.count:
            v.fail(f"{name}: link #{link.seq} is not covered by the checkpoint ({cp.count} links)")
            return
        try:
            fact = link.fact()
        except audit.AuditError as exc:
            v.fail(f"{name}: link #{link.seq}: {exc}")
            return
        if fact.alert_id != row.id:
            v.fail(f"{name}: link #{link.seq} is about another alert")
            return
        problem = audit._apply(states, link.seq, fact)
        if problem is not None:
            v.fail(f"{name}: link #{link.seq}: {problem}")
            return
    state = states.get(row.id)
    if state is None:
        v.fail(f"{name}: its links never raise it")
        return
    problem = audit._compare(state, row, updates)
    if problem is not None:
        v.fail(f"{name}: {problem}")


# ---------------------------------------------------------------------------- reading files

_SCRIPT_RE = re.compile(
    rb'<script type="application/json" id="' + HTML_SCRIPT_ID.encode() + rb'">(.*?)</script>', re.DOTALL
)


def read_document(data: bytes) -> object:
    """The signed JSON of a report file: the JSON form, or the one a PDF attaches or an HTML page embeds."""
    head = data.lstrip()[:16]
    if data.startswith(b"%PDF-"):
        return _from_pdf(data)
    if head.startswith(b"{"):
        try:
            return json.loads(data)
        except ValueError as exc:
            raise CustodyError(f"not JSON: {exc}") from None
    match = _SCRIPT_RE.search(data)
    if match is None:
        raise CustodyError("neither a JSON report, nor a PDF or HTML page embedding one")
    try:
        return json.loads(match.group(1))
    except ValueError as exc:
        raise CustodyError(f"the embedded report is not JSON: {exc}") from None


def _from_pdf(data: bytes) -> object:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        attachments = PdfReader(io.BytesIO(data)).attachments
    except (PdfReadError, ValueError, KeyError) as exc:
        raise CustodyError(f"unreadable PDF: {exc}") from None
    found = attachments.get(ATTACHMENT_NAME)
    if not found:
        raise CustodyError(f"the PDF has no attached {ATTACHMENT_NAME}")
    try:
        return json.loads(found[0])
    except ValueError as exc:
        raise CustodyError(f"the attached report is not JSON: {exc}") from None


def read_file(path: str | Path) -> object:
    try:
        return read_document(Path(path).read_bytes())
    except OSError as exc:
        raise CustodyError(f"{path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------- rendering

KIND_COLOURS = {
    "terminal": "#9ecae1",
    "gate": "#fdd0a2",
    "inspection_area": "#fdae6b",
    "customs_yard": "#c7e9c0",
    "authorized_parking": "#d9d9d9",
    "quay": "#bcbddc",
    "restricted": "#fc9272",
    "corridor": "#ffffb2",
    "port_boundary": "#f7f7f7",
}


def _rings(geometry: Mapping[str, Any]) -> Iterable[list[list[float]]]:
    """Exterior rings of a GeoJSON Polygon or MultiPolygon (holes are not drawn)."""
    kind, coords = geometry.get("type"), geometry.get("coordinates") or []
    if kind == "Polygon" and coords:
        yield coords[0]
    elif kind == "MultiPolygon":
        for poly in coords:
            if poly:
                yield poly[0]


def map_drawing(report: Mapping[str, Any], width: float = 500, height: float = 340) -> Any:
    """The fences, the track, stops and alerts drawn from the report's own data (no map tiles)."""
    from reportlab.graphics.shapes import Circle, Drawing, Line, Polygon, PolyLine, Rect, String
    from reportlab.lib import colors

    d = Drawing(width, height)
    d.add(Rect(0, 0, width, height, fillColor=colors.white, strokeColor=colors.grey))
    track = report.get("track", {}).get("points") or []
    fences = report.get("fences") or []
    xs = [p[0] for p in track]
    ys = [p[1] for p in track]
    for f in fences:
        for ring in _rings(f.get("geometry") or {}):
            xs += [c[0] for c in ring]
            ys += [c[1] for c in ring]
    if not xs:
        d.add(String(width / 2, height / 2, "no fixes and no fences in this range", textAnchor="middle"))
        return d
    lat0 = (min(ys) + max(ys)) / 2
    kx = math.cos(math.radians(lat0))
    span_x = max((max(xs) - min(xs)) * kx, 1e-6)
    span_y = max(max(ys) - min(ys), 1e-6)
    margin = 20.0
    scale = min((width - 2 * margin) / span_x, (height - 2 * margin - 14) / span_y)
    x0, y0 = min(xs), min(ys)

    def xy(lon: float, lat: float) -> tuple[float, float]:
        return margin + (lon - x0) * kx * scale, margin + (lat - y0) * scale

    for f in sorted(fences, key=lambda f: f.get("kind") != "port_boundary"):
        colour = colors.HexColor(KIND_COLOURS.get(str(f.get("kind")), "#eeeeee"))
        for ring in _rings(f.get("geometry") or {}):
            points = [v for c in ring for v in xy(c[0], c[1])]
            d.add(Polygon(points, fillColor=colour, strokeColor=colors.grey, strokeWidth=0.5, fillOpacity=0.6))
    if len(track) >= 2:
        d.add(PolyLine([v for p in track for v in xy(p[0], p[1])], strokeColor=colors.blue, strokeWidth=1.2))
    if track:
        for (lon, lat), colour in ((track[0][:2], colors.green), (track[-1][:2], colors.black)):
            cx, cy = xy(lon, lat)
            d.add(Circle(cx, cy, 3.5, fillColor=colour, strokeColor=colors.white))
    for s in report.get("stops") or []:
        if s.get("lon") is not None and s.get("lat") is not None:
            cx, cy = xy(s["lon"], s["lat"])
            d.add(Circle(cx, cy, 4, fillColor=colors.orange, strokeColor=colors.black, strokeWidth=0.5))
    for a in report.get("alerts") or []:
        fix = (a.get("alert", {}).get("evidence") or {}).get("fix") if isinstance(a, dict) else None
        if (
            isinstance(fix, dict)
            and isinstance(fix.get("lon"), int | float)
            and isinstance(fix.get("lat"), int | float)
        ):
            cx, cy = xy(float(fix["lon"]), float(fix["lat"]))
            d.add(Line(cx - 4, cy - 4, cx + 4, cy + 4, strokeColor=colors.red, strokeWidth=1.5))
            d.add(Line(cx - 4, cy + 4, cx + 4, cy - 4, strokeColor=colors.red, strokeWidth=1.5))
    # scale bar: a round number of metres near a fifth of the width
    metres_per_pt = 111_320.0 / scale
    target = metres_per_pt * width / 5
    bar_m = 10 ** math.floor(math.log10(target)) if target > 0 else 1.0
    for step in (5, 2):
        if bar_m * step <= target:
            bar_m *= step
            break
    bar_pt = bar_m / metres_per_pt
    d.add(Line(margin, 8, margin + bar_pt, 8, strokeColor=colors.black, strokeWidth=2))
    label = f"{bar_m / 1000:g} km" if bar_m >= 1000 else f"{bar_m:g} m"
    d.add(String(margin + bar_pt + 4, 5, label, fontSize=7))
    d.add(String(width - 12, height - 14, "N", fontSize=9, textAnchor="middle"))
    d.add(
        String(
            width / 2,
            height - 12,
            "track (blue), start (green), end (black), stops (orange), alerts (red x)",
            fontSize=7,
            textAnchor="middle",
        )
    )
    return d


def _t(value: object) -> str:
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def _rows(report: Mapping[str, Any]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The report's tables, as text, in the order both renderings print them."""
    trips = [
        [
            str(t.get("id", "")),
            _t(t.get("start")),
            _t(t.get("end")),
            str(t.get("origin") or ""),
            str(t.get("destination") or ""),
        ]
        for t in report.get("trips") or []
    ]
    stops = [
        [
            str(s.get("device_id", "")),
            _t(s.get("start")),
            _t(s.get("end")),
            f"{(s.get('duration_s') or 0) / 60:.0f} min",
            str(s.get("fence_id") or ""),
        ]
        for s in report.get("stops") or []
    ]
    alerts = []
    for item in report.get("alerts") or []:
        a = item.get("alert", {})
        resolution = a.get("resolution") or ""
        who = a.get("resolved_by") or a.get("acknowledged_by") or ""
        alerts.append(
            [
                _t(a.get("ts")),
                str(a.get("kind")),
                str(a.get("severity")),
                str(a.get("status")),
                f"{who} {resolution}".strip(),
                str(a.get("message", "")),
            ]
        )
    inspections = [
        [_t(i.get("ts")), str(i.get("result")), str(i.get("facility") or ""), str(i.get("seal") or "")]
        for i in report.get("inspections") or []
    ]
    fences = [
        [str(f.get("id")), str(f.get("name")), str(f.get("kind")), str(f.get("port"))]
        for f in report.get("fences") or []
    ]
    trucks = [
        [str(p.get("truck_id")), str(p.get("container_id")), _t(p.get("since")), _t(p.get("until")) or "(still paired)"]
        for p in report.get("trucks") or []
    ]
    return {
        "Trips": (["trip", "start", "end", "from", "to"], trips),
        "Stops": (["device", "start", "end", "duration", "fence"], stops),
        "Alerts": (["time", "kind", "severity", "status", "by / resolution", "message"], alerts),
        "Customs decisions": (["time", "result", "facility", "seal"], inspections),
        "Trucks that hauled it": (["truck", "tracker", "since", "until"], trucks),
        "Fences involved": (["id", "name", "kind", "port"], fences),
    }


def _summary(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    track = report.get("track") or {}
    clearance = report.get("clearance") or {}
    cp = (report.get("checkpoint") or {}).get("body") or {}
    return [
        ("Container", str(report.get("container_no"))),
        ("Period", f"{_t(report.get('from'))} to {_t(report.get('to'))}"),
        ("Trackers", ", ".join(report.get("devices") or [])),
        ("Fixes", f"{track.get('fixes', 0):,} ({_t(track.get('first'))} to {_t(track.get('last'))})"),
        ("Distance", f"{(track.get('distance_m') or 0) / 1000:.2f} km"),
        ("Cleared by customs", _t(clearance.get("cleared_at")) or "-"),
        ("Loaded", _t(clearance.get("loaded_at")) or "-"),
        ("Generated", f"{_t(report.get('generated_at'))} for {report.get('generated_for', {}).get('name', '')}"),
        (
            "Alert-log checkpoint",
            f"{cp.get('count', '-')} links, head {str(cp.get('head', ''))[:16]}..., {_t(cp.get('at'))}",
        ),
    ]


def render_html(document: Mapping[str, Any]) -> str:
    """A self-contained page: the map as inline SVG, the tables, and the signed JSON it was made from."""
    from reportlab.graphics import renderSVG

    report = document["report"]
    svg = renderSVG.drawToString(map_drawing(report))
    svg = svg[svg.find("<svg") :]
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Custody report {e(str(report.get('container_no')))}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "td,th{border:1px solid #bbb;padding:.2em .5em;font-size:.9em;text-align:left}th{background:#eee}</style>",
        "</head><body>",
        f"<h1>Custody report: container {e(str(report.get('container_no')))}</h1><table>",
    ]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _summary(report)]
    parts.append(f"</table><div>{svg}</div>")
    for title, (head, rows) in _rows(report).items():
        parts.append(f"<h2>{e(title)}</h2>")
        if not rows:
            parts.append(f"<p>{e(report.get('trips_note', 'none')) if title == 'Trips' else 'none'}</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    sig = document.get("signature", {})
    parts.append(
        f"<h2>Signature</h2><p>Ed25519, key {e(str(sig.get('key_id')))}. Check this page with "
        "<code>tracker custody verify FILE --public-key KEY</code>: it verifies the JSON embedded below, "
        "which this page renders.</p>"
    )
    embedded = json.dumps(document, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e")
    parts.append(f'<script type="application/json" id="{HTML_SCRIPT_ID}">{embedded}</script></body></html>\n')
    return "".join(parts)


def render_pdf(document: Mapping[str, Any]) -> bytes:
    """A PDF of the same content, the signed JSON attached to it as ``custody-report.json``."""
    from pypdf import PdfReader, PdfWriter
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    report = document["report"]
    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=7, leading=8.5)
    grid = TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
    )

    def cell(text: str) -> Any:
        return Paragraph(html.escape(text), small)

    story: list[Any] = [
        Paragraph(html.escape(f"Custody report: container {report.get('container_no')}"), styles["Title"])
    ]
    summary = Table([[cell(k), cell(v)] for k, v in _summary(report)], colWidths=[40 * mm, 130 * mm])
    summary.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.3, colors.grey)]))
    story += [summary, Spacer(1, 4 * mm), map_drawing(report, 170 * mm, 115 * mm), Spacer(1, 4 * mm)]
    for title, (head, rows) in _rows(report).items():
        story.append(Paragraph(html.escape(title), styles["Heading2"]))
        if not rows:
            note = report.get("trips_note", "none") if title == "Trips" else "none"
            story.append(Paragraph(html.escape(str(note)), small))
            continue
        table = Table([[cell(h) for h in head]] + [[cell(c) for c in r] for r in rows], repeatRows=1)
        table.setStyle(grid)
        story.append(table)
    sig = document.get("signature", {})
    story += [
        Paragraph("Signature", styles["Heading2"]),
        Paragraph(
            html.escape(
                f"Ed25519, key {sig.get('key_id')}. The signed JSON this document renders is attached to it as "
                f"{ATTACHMENT_NAME}; check it with 'tracker custody verify FILE --public-key KEY'."
            ),
            small,
        ),
    ]
    raw = io.BytesIO()
    SimpleDocTemplate(
        raw,
        pagesize=A4,
        title=f"Custody report {report.get('container_no')}",
        author="port-tracker",
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        invariant=1,
    ).build(story)
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(raw.getvalue())))
    writer.add_attachment(ATTACHMENT_NAME, audit.canonical(document).encode())
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def verify_command(path: str, public_key_files: Sequence[str]) -> int:
    """``tracker custody verify``: 0 when the report verifies, 1 when it does not, 2 when it cannot be read."""
    from tracker.adapters.audit_keys import read_public_key

    if not public_key_files:
        print("error: give the service's public key with --public-key (tracker audit pubkey prints it)")
        return 2
    try:
        keys = [read_public_key(k) for k in public_key_files]
        document = read_file(path)
    except (CustodyError, audit.AuditError) as exc:
        print(f"error: {exc}")
        return 2
    verdict = verify(document, keys)
    for line in verdict.checked:
        print(f"ok: {line}")
    for line in verdict.problems:
        print(f"FAILED: {line}")
    report = document.get("report") if isinstance(document, dict) else None
    if verdict.ok and isinstance(report, dict):
        print(
            f"custody report of {report.get('container_no')} from {report.get('from')} to {report.get('to')}"
            f" verifies ({len(report.get('alerts') or [])} alerts)"
        )
    return 0 if verdict.ok else 1
