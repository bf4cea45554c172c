"""Custody reports rendered for people: HTML with the map inline as SVG, and PDF with the signed JSON attached.

Both are drawn from the signed document alone (tracker/custody.py), so what they show is what the
signature covers; the map is drawn offline from the report's fences, track, stops and alerts, with no
tiles (reportlab graphics: vector shapes in the PDF, the same drawing as SVG in the HTML).
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from tracker import audit
from tracker.custody import ATTACHMENT_NAME, HTML_SCRIPT_ID

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


def _num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _alert_fix(item: object) -> tuple[float, float] | None:
    """Where an alert was raised, from its evidence's fix, when it names one."""
    alert = item.get("alert") if isinstance(item, dict) else None
    evidence = alert.get("evidence") if isinstance(alert, dict) else None
    fix = evidence.get("fix") if isinstance(evidence, dict) else None
    if isinstance(fix, dict) and _num(fix.get("lon")) and _num(fix.get("lat")):
        return float(fix["lon"]), float(fix["lat"])
    return None


def map_drawing(report: Mapping[str, Any], width: float = 500, height: float = 340) -> Any:
    """The fences, the track, stops and alerts drawn from the report's own data (no map tiles)."""
    import shapely
    import shapely.geometry
    from reportlab.graphics.shapes import Circle, Drawing, Line, Polygon, PolyLine, Rect, String
    from reportlab.lib import colors

    d = Drawing(width, height)
    d.add(Rect(0, 0, width, height, fillColor=colors.white, strokeColor=colors.grey))
    track = report.get("track", {}).get("points") or []
    fences = report.get("fences") or []
    # the frame: the track, stops and alerts with a margin around them (a port boundary tens of km wide must
    # not shrink a quay-side track to a dot); fences are clipped to it. Without fixes: the fences' extent.
    xs = [p[0] for p in track] + [float(s["lon"]) for s in report.get("stops") or [] if _num(s.get("lon"))]
    ys = [p[1] for p in track] + [float(s["lat"]) for s in report.get("stops") or [] if _num(s.get("lat"))]
    for a in report.get("alerts") or []:
        fix = _alert_fix(a)
        if fix is not None:
            xs.append(fix[0])
            ys.append(fix[1])
    shapes = [(f, shapely.geometry.shape(f["geometry"])) for f in fences if f.get("geometry")]
    if not xs:
        for _, geom in shapes:
            minx, miny, maxx, maxy = geom.bounds
            xs += [minx, maxx]
            ys += [miny, maxy]
    if not xs:
        d.add(String(width / 2, height / 2, "no fixes and no fences in this range", textAnchor="middle"))
        return d
    pad_x = max((max(xs) - min(xs)) * 0.15, 0.003)  # at least ~300 m around
    pad_y = max((max(ys) - min(ys)) * 0.15, 0.003)
    box = (min(xs) - pad_x, min(ys) - pad_y, max(xs) + pad_x, max(ys) + pad_y)
    lat0 = (box[1] + box[3]) / 2
    kx = math.cos(math.radians(lat0))
    span_x = (box[2] - box[0]) * kx
    span_y = box[3] - box[1]
    margin = 20.0
    avail_w, avail_h = width - 2 * margin, height - 2 * margin - 14  # room for the legend line on top
    scale = min(avail_w / span_x, avail_h / span_y)
    x0, y0 = box[0], box[1]
    ox = margin + (avail_w - span_x * scale) / 2  # centred in the frame
    oy = margin + (avail_h - span_y * scale) / 2

    def xy(lon: float, lat: float) -> tuple[float, float]:
        return ox + (lon - x0) * kx * scale, oy + (lat - y0) * scale

    for f, geom in sorted(shapes, key=lambda fg: fg[0].get("kind") != "port_boundary"):
        colour = colors.HexColor(KIND_COLOURS.get(str(f.get("kind")), "#eeeeee"))
        clipped = shapely.clip_by_rect(geom, *box)
        for ring in _rings(shapely.geometry.mapping(clipped)):
            points = [v for c in ring for v in xy(c[0], c[1])]
            if len(points) >= 6:
                d.add(Polygon(points, fillColor=colour, strokeColor=colors.grey, strokeWidth=0.5, fillOpacity=0.6))
    placed: list[tuple[float, float]] = []
    for f, geom in shapes:  # names over every fill (not the port boundary: it is the whole frame), none overlapping
        clipped = shapely.clip_by_rect(geom, *box)
        if f.get("kind") == "port_boundary" or clipped.is_empty:
            continue
        at = clipped.representative_point()
        lx, ly = xy(at.x, at.y)
        if all(abs(lx - px) > 60 or abs(ly - py) > 9 for px, py in placed):
            placed.append((lx, ly))
            d.add(String(lx, ly, str(f.get("name") or f.get("id"))[:40], fontSize=6, textAnchor="middle"))
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
        fix = _alert_fix(a)
        if fix is not None:
            cx, cy = xy(*fix)
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
