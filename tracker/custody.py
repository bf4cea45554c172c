"""Custody reports: one shipment's evidence, signed so that a claim adjuster can prove it was not edited.

A report is a JSON document ``{"report": {...}, "signature": {...}}``. ``report`` holds the container's
evidence over a time range (trips, stops, alerts with their resolution and their signed links, customs
clearance and loading times, the fences involved, a summary of the track) and the alert-log checkpoint
that covers its alerts. ``signature`` is the service's Ed25519 signature over the canonical JSON of
``report`` (tracker/audit.py's ``canonical``), with the same key that signs the alert chain; the key
never lives in the database.

Rendering for people (HTML, PDF, the offline map) is in tracker/custody_render.py.

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

import io
import json
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
